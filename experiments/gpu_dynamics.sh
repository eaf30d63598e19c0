#!/usr/bin/env bash
# The prepared device run for issue #13's generation gate: two dynamics models trained at once on one
# lent GPU from the token pack (experiments/train_on_tokens.py), for MINUTES (default 7) each:
#   wide: a wider model (width 256, depth 8, 8.95 M parameters: 2.3x the shipped one's; bundle 42 MB,
#         under the 50 MB limit) from scratch, lr 6e-4;
#   warm: the shipped model's own dynamics fine-tuned (--warm-start), lr 2e-4.
# Both at batch BATCH (default 128; the CPU runs: batch 8). Side by side because models this small are
# expected to leave an H200 waiting on Python most of the time (not yet measured: each run's log gives its
# ms a step). MINUTES, STEPS (a fixed count instead), BATCH and DEVICE override. Needs torch, numpy,
# safetensors, pyyaml and einops only, which that machine has. Checked here end to end on the CPU
# (`DEVICE=cpu STEPS=2 bash experiments/gpu_dynamics.sh`): both checkpoints, split, hashes, unpack, export.
#
# Here, once (10 min on one core; the pack is ~3 MB, well inside the 64 MiB a call carries with the tree):
#     python -m experiments.train_on_tokens pack --model default --store ~/genie-runs/sim600.zarr \
#         --store ~/genie-runs/sim1400.zarr --out outputs/tokens/sim2000.npz
# Then one call of the device tool:
#     run(command="bash experiments/gpu_dynamics.sh", carry=["outputs/tokens"], timeout_s=600)
# And back here, with FILES_AT the reply's files_at:
#     (cd FILES_AT && sha256sum -c SHA256SUMS) && mkdir -p ~/genie-runs/gpu &&
#         cat FILES_AT/ckpt.tar.part-* | tar x -C ~/genie-runs/gpu
#     genie-robot export --dynamics ~/genie-runs/gpu/wide --out ~/genie-runs/bundles/gpu_wide --no-onnx --guidance 2
#     genie-robot eval --model ~/genie-runs/bundles/gpu_wide --store ~/genie-runs/sim600.zarr --episodes 32 --out ~/genie-runs/eval_gpu_wide
# (and the same for warm).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_dynamics}
mkdir -p "$OUT"
RUN=$(mktemp -d)
BUDGET=(--minutes "${MINUTES:-7}")
[ -n "${STEPS:-}" ] && BUDGET=(--steps "$STEPS")
{ nvidia-smi --query-gpu=name,memory.total --format=csv; python3 -c "import torch; print('torch', torch.__version__)"; } \
    > "$OUT/env.log" 2>&1
variant() {  # variant NAME ARGS...: one training run, its log in $OUT/NAME.log
    local name=$1; shift
    PYTHONUNBUFFERED=1 timeout 560 python3 -m experiments.train_on_tokens train --tokens outputs/tokens/sim2000.npz \
        --model default --out "$RUN/$name" --device "${DEVICE:-cuda}" --batch "${BATCH:-128}" "${BUDGET[@]}" "$@" \
        > "$OUT/$name.log" 2>&1
    echo "$name: exit $?" >> "$OUT/env.log"
}
variant wide --width 256 --depth 8 --lr 6e-4 &
variant warm --warm-start --lr 2e-4 --warmup 100 &
wait
tail -n 3 "$OUT"/wide.log "$OUT"/warm.log
# the results come back in files of at most 16 MB: both runs' checkpoints as one split tar, with its hashes
(cd "$RUN" && tar cf - */checkpoints) | split -b 15m -d - "$OUT/ckpt.tar.part-"
(cd "$OUT" && sha256sum ckpt.tar.part-* > SHA256SUMS && cat SHA256SUMS && cat env.log)
