#!/usr/bin/env bash
# The prepared device run for issue #13's generation gate: a wider dynamics model (width 256, depth 8,
# 8.95 M parameters: 2.3x the shipped one's; its bundle is 40 MB, under the 50 MB limit) trained for 7
# minutes on a lent GPU from the token pack (experiments/train_on_tokens.py), batch 64 (the CPU runs:
# 7,500 steps of batch 8). Needs torch, numpy, safetensors, pyyaml and einops only, which that machine
# has. Checked here end to end on the CPU (`--device cpu --steps 2`): 3 parts of the split checkpoint,
# hashes, unpack, export.
#
# Here, once (10 min on one core; the pack is 3.1 MB, well inside the 64 MiB a call carries with the tree):
#     python -m experiments.train_on_tokens pack --model default --store ~/genie-runs/sim600.zarr \
#         --store ~/genie-runs/sim1400.zarr --out outputs/tokens/sim2000.npz
# Then one call of the device tool:
#     run(command="bash experiments/gpu_dynamics.sh", carry=["outputs/tokens"], timeout_s=600)
# And back here, with FILES_AT the reply's files_at:
#     (cd FILES_AT && sha256sum -c SHA256SUMS) && mkdir -p ~/genie-runs/gpu_dyn/checkpoints &&
#         cat FILES_AT/ckpt.tar.part-* | tar x -C ~/genie-runs/gpu_dyn/checkpoints
#     genie-robot export --dynamics ~/genie-runs/gpu_dyn --out ~/genie-runs/bundle_gpu --no-onnx --guidance 2
#     genie-robot eval --model ~/genie-runs/bundle_gpu --store ~/genie-runs/sim600.zarr --episodes 32 --out ~/genie-runs/eval_gpu
# WIDTH, DEPTH, BATCH, MINUTES override the sizes; extra arguments go to `train_on_tokens train`.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_dynamics}
mkdir -p "$OUT"
RUN=$(mktemp -d)
{ nvidia-smi --query-gpu=name,memory.total --format=csv; python3 -c "import torch; print('torch', torch.__version__)"; } \
    > "$OUT/train.log" 2>&1
PYTHONUNBUFFERED=1 timeout 540 python3 -m experiments.train_on_tokens train --tokens outputs/tokens/sim2000.npz \
    --model default --out "$RUN" --device cuda --minutes "${MINUTES:-7}" --width "${WIDTH:-256}" \
    --depth "${DEPTH:-8}" --batch "${BATCH:-64}" "$@" 2>&1 | tee -a "$OUT/train.log"
# the result comes back in files of at most 16 MB: the checkpoint as a split tar, with its hashes
(cd "$RUN/checkpoints" && tar cf - step_*) | split -b 15m -d - "$OUT/ckpt.tar.part-"
(cd "$OUT" && sha256sum ckpt.tar.part-* > SHA256SUMS && cat SHA256SUMS)
