#!/usr/bin/env bash
# `--target cuda` end to end on a machine with an NVIDIA GPU: the machine, the GPU tests, a TVM sweep of
# one variant of each zoo family with a repeat pass (a GPU noise floor), the dataset it makes, and
# ONNX Runtime's CUDA provider (or the message saying it is missing).
#
#   bash examples/cuda_check.sh [OUT]      # needs narformer-tvm[tvm] installed and nvcc on the PATH
#
# Writes OUT/cuda-check.log (what it printed) and OUT/cuda-tvm.db (the measurements).
# The profile step stops itself after PROFILE_S seconds (default 240) and keeps every finished row.
set -uo pipefail
out=${1:-cuda-check}
mkdir -p "$out"
step() { printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

{
    step "machine"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    nvcc --version | tail -n 2
    python3 - <<'EOF'
import onnxruntime as ort
import tvm
dev = tvm.cuda(0)
print("python tvm", tvm.__version__, "| cuda device:", dev.exist, dev.device_name if dev.exist else "")
if dev.exist:
    print("target:", tvm.target.Target.from_device(dev))
print("onnxruntime", ort.__version__, ort.get_available_providers())
EOF

    step "tests: the CUDA build and the tests marked gpu"
    python3 -m pytest -q -rs -p no:cacheprovider tests/test_gpu.py

    step "narformer-tvm profile --zoo all --count 1 --target cuda --runtime tvm --repeat-pass 0.5"
    timeout -s INT "${PROFILE_S:-240}" narformer-tvm profile --zoo all --count 1 --target cuda --runtime tvm \
        --db "$out/cuda-tvm.db" --repeat-pass 0.5
    echo "exit status $?"

    step "narformer-tvm dataset info"
    narformer-tvm dataset info "$out/cuda-tvm.db"

    step "narformer-tvm profile --zoo resnet --count 1 --target cuda --runtime onnxruntime"
    narformer-tvm profile --zoo resnet --count 1 --target cuda --runtime onnxruntime --db "$out/cuda-ort.db"
    echo "exit status $?"
    step "done"
} 2>&1 | tee "$out/cuda-check.log"
