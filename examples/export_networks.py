"""Export published networks (our own torch definitions) to ONNX.

    python examples/export_networks.py resnet50 mobilenet_v2 --out models/
    python examples/export_networks.py --list
"""
import argparse
from pathlib import Path

from narformer_tvm.measure import families


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="networks to export (see --list)")
    ap.add_argument("--out", type=Path, default=Path("."), help="output folder")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--no-weights", action="store_true", help="export without weights (small files)")
    ap.add_argument("--list", action="store_true", help="list the networks")
    args = ap.parse_args()
    if args.list or not args.names:
        print("\n".join(families.STANDARD))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        model, res = families.build_standard(name)
        path = args.out / f"{name}.onnx"
        families.export_onnx(model, path, res, opset=args.opset, export_params=not args.no_weights)
        print(path)


if __name__ == "__main__":
    main()
