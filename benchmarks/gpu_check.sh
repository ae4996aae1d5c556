#!/usr/bin/env bash
# The CUDA check, for a machine with a GPU (at most a few minutes): the CUDA-marked tests
# (tests/test_cuda.py: rankings on the device, distillers with every buffer on the device, a short
# distillation on the GPU), their JUnit XML and the device description written under ${OUT:-gpu-check}/.
# The speed benchmarks in this folder time CPU runs only; no CUDA speed numbers exist yet.
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/device.csv" 2>&1 || true
python -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())" > "$out/torch.txt"
timeout 540 python -m pytest -q -m cuda tests/test_cuda.py --junitxml="$out/cuda-tests.xml" 2>&1 | tee "$out/cuda-tests.txt"
