"""Choose the calibration set `narformer-tvm calibrate` profiles: spread over op mix and scale.

    python examples/make_calibration_set.py --out narformer_tvm/calibration_set.json

The pool is every zoo variant of the shipped CPU profile's training set and every real-architecture
corpus variant measured (published networks excluded: they are what a calibration is judged on)
between --min-ms and --max-ms on the profile's hardware: the range of the networks people run, whose
latencies a calibration must not extrapolate to. Farthest-point sampling over standardised graph
descriptors (size, intensity, where the FLOPs are, family) orders the models, and the list takes them in
turn from --bins log-spaced latency bins, so that any prefix a time budget reaches is spread over op mix
and evenly over the logarithm of latency (the pool itself has many more small models than large ones).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
POOLS = ("profiles/cpu-onnxruntime/train", "profiles/cpu-onnxruntime/real-architectures")


def pool(min_ms: float, max_ms: float):
    from narformer_tvm.data.store import Store
    from narformer_tvm.graph.tokens import GraphTable
    from narformer_tvm.integrations.ort_config_ratio import graph_descriptors

    out, seen = [], set()
    for ds in POOLS:
        with Store(ROOT / ds, readonly=True) as store:
            q = ("SELECT d.source, d.graph, MIN(m.latency_ms) FROM models d JOIN measurements m ON m.model_id = d.id "
                 "WHERE m.latency_ms IS NOT NULL GROUP BY d.id")
            for source, graph, ms in store.db.execute(q):
                src = json.loads(source or "{}")
                if "family" not in src or src.get("seed", 0) < 0 or not min_ms <= ms <= max_ms or not graph:
                    continue
                t = GraphTable.from_bytes(graph)
                if t.digest() in seen or not len(t.ops):
                    continue
                seen.add(t.digest())
                out.append(({k: src[k] for k in ("family", "seed", "index", "raw")}, graph_descriptors(t)[1:], ms))
    return out


def farthest_first(x: np.ndarray, n: int) -> list[int]:
    z = (x - x.mean(0)) / (x.std(0) + 1e-9)
    order = [int(np.argmin(np.linalg.norm(z - np.median(z, 0), axis=1)))]
    dist = np.linalg.norm(z - z[order[0]], axis=1)
    while len(order) < min(n, len(z)):
        i = int(np.argmax(dist))
        order.append(i)
        dist = np.minimum(dist, np.linalg.norm(z - z[i], axis=1))
    return order


def by_scale(order: list[int], ms: np.ndarray, bins: int) -> list[int]:
    """``order`` re-taken round-robin from ``bins`` log-spaced latency bins, each bin in ``order``'s order."""
    edges = np.geomspace(ms.min(), ms.max() * (1 + 1e-9), bins + 1)
    queues = [[i for i in order if edges[b] <= ms[i] < edges[b + 1]] for b in range(bins)]
    out = []
    while any(queues):
        out += [q.pop(0) for q in queues if q]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "narformer_tvm" / "calibration_set.json")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--min-ms", type=float, default=1.0, help="fastest model on the profile's hardware")
    ap.add_argument("--max-ms", type=float, default=160.0, help="slowest model on the profile's hardware")
    ap.add_argument("--bins", type=int, default=6, help="log-spaced latency bins the list takes turns from")
    args = ap.parse_args()
    items = pool(args.min_ms, args.max_ms)
    families = sorted({v["family"] for v, _, _ in items})
    onehot = np.array([[float(v["family"] == f) for f in families] for v, _, _ in items])
    x = np.hstack([np.stack([d for _, d, _ in items]), 0.5 * onehot])
    order = by_scale(farthest_first(x, len(items)), np.array([ms for _, _, ms in items]), args.bins)[:args.count]
    chosen = [{**items[i][0], "profile_ms": round(items[i][2], 3)} for i in order]
    args.out.write_text("[\n" + ",\n".join(json.dumps(c, sort_keys=True) for c in chosen) + "\n]\n")
    print(f"{len(chosen)} of {len(items)} variants, {len({c['family'] for c in chosen})} families, "
          f"{sum(c['profile_ms'] for c in chosen) / 1000:.1f} s of latency in all; written {args.out}")


if __name__ == "__main__":
    main()
