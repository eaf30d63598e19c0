#!/usr/bin/env bash
# The prepared run for a lent GPU machine (the `device` tool; see bench/bench_cuda.py): one command,
# ~3-5 minutes on an H200, results under $OUT for bench/RESULTS.md. That machine's python3 has a CUDA
# torch, einops and pyyaml, and nothing can be installed there, so this uses torch and the repo only:
#     run(command="bash bench/gpu_run.sh", timeout_s=540)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/nvidia_smi.csv" 2>&1
PYTHONUNBUFFERED=1 timeout 480 python3 bench/bench_cuda.py --device cuda --out "$OUT" 2>&1 | tee "$OUT/bench_cuda.log"
