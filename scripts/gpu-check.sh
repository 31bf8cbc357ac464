#!/usr/bin/env bash
# One-shot CUDA check for a session that is lent a GPU (the `device` tool's H200 machine), sized
# to fit one call of well under 10 minutes. It checks what the CPU suite cannot: the engine on
# CUDA in fp32, bf16 autocast and fp16 autocast with loss scaling; throughput of the paper's
# ViT-S/16 step in each; a short real run (pipeline → trainer) in bf16 with a checkpoint and a
# resume; that the first losses of fp32, bf16 and fp16 agree on the same data and weights; and a
# world-size-1 torchrun launch through the c10d shim with ProcessGroupNCCL (bf16), whose losses
# must match the plain bf16 run's (one rank's all-reduce is the identity).
# The binary must have been built with NCCL: `make gpu-bin` on a machine whose venv has the
# nvidia-cuda-crt/-cccl header wheels (requirements.txt); build.rs warns when it builds without.
#
# Here (the build machine):   make gpu-bin        # .gpu/dino-stream: no FFmpeg, stripped
# There (carry [".gpu"]):     bash scripts/gpu-check.sh
#
# The GPU machine has no Debian FFmpeg 5.1 libraries, hence the `--no-default-features` binary;
# libtorch is taken from that machine's own torch 2.11 (same version as the venv here). The log is
# written to $OUT/gpu-check.log when OUT is set. Exits non-zero on the first failed check.
# A dry run of the script's plumbing on the CPU here (tiny model; the CPU always trains in fp32):
#   BIN=target/release/dino-stream PYTHON=.venv/bin/python DEVICE=cpu \
#   EXTRA="model.arch=vit model.embed_dim=32 model.depth=1 model.heads=2 model.out_dim=256 \
#          train.batch_size=8 augment.global_size=32 augment.local_size=16" bash scripts/gpu-check.sh
set -euo pipefail
BIN=${BIN:-.gpu/dino-stream}
DEVICE=${DEVICE:-cuda}
SETS=(--set "train.device=$DEVICE")
for kv in ${EXTRA:-}; do SETS+=(--set "$kv"); done
PY=${PYTHON:-python3}
TORCH_LIB=$($PY -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
# libtorch from that machine's torch; libjpeg-turbo carried beside the binary (make gpu-bin).
export LD_LIBRARY_PATH=$TORCH_LIB:$(dirname "$BIN")/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
WORK=$(mktemp -d)
exec > >(tee "${OUT:-$WORK}/gpu-check.log") 2>&1

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
"$BIN" --version

echo "== 1. train-step throughput, ViT-S/16, batch 64, 2x224 + 8x96, K=65536 (pipelines/imagenet.toml)"
for p in fp32 bf16 fp16; do
    "$BIN" bench train pipelines/imagenet.toml --steps 20 --warmup 5 \
        "${SETS[@]}" --set train.precision=$p
done

echo "== 2. a short real run: synthetic images through decode/augment into the CUDA trainer"
cat > "$WORK/smoke.toml" <<EOF
[source]
type = "synthetic"
count = 6400
width = 256
height = 256

[augment]
global_size = 224
local_crops = 8
local_size = 96

[model]
arch = "vit_small"
patch_size = 16
out_dim = 65536

[train]
batch_size = 64
epochs = 1
warmup_epochs = 0.2
log_every = 10
monitor_every = 10

[checkpoint]
dir = "$WORK/bf16"
every_steps = 40

[metrics]
port = 0
EOF
run() { "$BIN" run "$WORK/smoke.toml" --no-progress "${SETS[@]}" "$@"; }
run --set train.precision=bf16 --max-steps 60
run --set train.precision=bf16 --resume
run --set train.precision=fp32 --set "checkpoint.dir=\"$WORK/fp32\"" --max-steps 20
run --set train.precision=fp16 --set "checkpoint.dir=\"$WORK/fp16\"" --max-steps 20

echo "== 2b. world size 1 through torchrun: c10d's TCPStore + ProcessGroupNCCL, bf16"
$PY -m torch.distributed.run --nproc_per_node=1 --master_addr=127.0.0.1 --master_port=29517 \
    --no-python "$BIN" run "$WORK/smoke.toml" --no-progress "${SETS[@]}" \
    --set train.precision=bf16 --set "checkpoint.dir=\"$WORK/nccl\"" --max-steps 20 \
    2>&1 | tee "$WORK/nccl.log"
grep -q "joined the process group" "$WORK/nccl.log"

echo "== 3. losses: finite, resumed at the checkpoint, and fp32/bf16/fp16 agree on the first steps"
$PY - "$WORK" <<'EOF'
import json, math, sys
root = sys.argv[1]
def losses(name):
    rows = [json.loads(l) for l in open(f"{root}/{name}/train_log.jsonl")]
    return {r["step"]: r["loss"] for r in rows}
runs = {p: losses(p) for p in ("fp32", "bf16", "fp16", "nccl")}
bad = [(p, s) for p, ls in runs.items() for s, v in ls.items() if not math.isfinite(v)]
assert not bad, f"non-finite losses: {bad}"
b = runs["bf16"]
end = max(b)
assert sorted(b) == list(range(1, end + 1)) and end > 60, f"bf16 run (60 steps, then resumed to the end): steps {sorted(b)[:3]}..{end}"
print(f"bf16 loss at steps 1, 50, {end}:", b[1], b[50], b[end])
for s in (1, 2, 5, 10, 20):
    f32, bf, f16 = runs["fp32"][s], b[s], runs["fp16"][s]
    print(f"step {s:3}: fp32 {f32:.5f}  bf16 {bf:.5f} ({(bf - f32) / f32:+.2%})  fp16 {f16:.5f} ({(f16 - f32) / f32:+.2%})")
f32, bf, f16 = runs["fp32"][1], b[1], runs["fp16"][1]
# Same weights and batch at step 1: reduced precision moves the loss by rounding only.
assert abs(bf - f32) / f32 < 0.01 and abs(f16 - f32) / f32 < 0.01, "step-1 losses disagree by over 1%"
n = runs["nccl"]
assert sorted(n) == list(range(1, 21)), f"NCCL run steps: {sorted(n)}"
worst = max(abs(n[s] - b[s]) / abs(b[s]) for s in n)
print(f"world size 1 over NCCL vs plain bf16, 20 steps: largest relative loss difference {worst:.2e}")
# Same weights, data and precision; the one-rank all-reduce is the identity: only cuDNN/cuBLAS
# nondeterminism separates them.
assert worst < 1e-2, "the NCCL run's losses drift from the plain run's"
print("gpu-check: all checks passed")
EOF
