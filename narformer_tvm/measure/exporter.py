"""Zoo models are exported by torch in a process of their own, never in the one that measures: ONNX
Runtime in a process that has run torch exports runs slower, the more so the more exports it ran
(docs/profiling.md), and a user's model runs in a process that never ran one."""
from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

from narformer_tvm.measure.backends import Measurement
from narformer_tvm.measure.worker import Worker


def _exporter_main(conn) -> None:
    import os
    import signal
    import warnings

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the sweep stops its helpers itself
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle torch threads sleep while the worker measures
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # config notes of random-weight models would cut into the progress lines
    from narformer_tvm.measure.zoo import Variant

    conn.send("ready")
    while True:
        task = conn.recv()
        if task is None:
            return
        try:
            conn.send({"path": str(Variant(**task["variant"]).export(Path(task["path"])))})
        except Exception as e:  # an export failure is data, as a measurement error
            error = f"export failed: {type(e).__name__}: {str(e)[:500]}"
            conn.send({"measurement": asdict(Measurement(error=error))})


class Exporter:
    """Exports zoo variants to ONNX files in a helper process (started on first use); keeps only the
    last model's file, which a model measured under several configurations in a row reuses."""

    def __init__(self):
        self.worker: Worker | None = None
        self.folder = tempfile.TemporaryDirectory(prefix="narformer-export-")
        self.last: tuple[str, str] | None = None  # (variant, path)
        self.count = 0

    def export(self, variant: dict, timeout: float, keep: bool = False) -> tuple[str | None, dict | None]:
        """(path of the exported file, None), or (None, the failure as a worker result). ``keep``: the
        file stays for the whole sweep (the regime gate's probe)."""
        ident = json.dumps(variant, sort_keys=True)
        if self.last and self.last[0] == ident:
            return self.last[1], None
        if self.last and not keep:
            Path(self.last[1]).unlink(missing_ok=True)
            self.last = None
        if self.worker is None:
            self.worker = Worker(_exporter_main, "exporting process")
        self.count += 1
        result = self.worker.call({"variant": variant, "path": f"{self.folder.name}/model{self.count}.onnx"}, timeout)
        if "path" not in result:
            return None, result
        if not keep:
            self.last = (ident, result["path"])
        return result["path"], None

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
        self.folder.cleanup()
