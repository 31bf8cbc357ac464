#!/usr/bin/env bash
# Peak resident memory of a video run on a 4K input against the bound the byte budgets promise
# (issue 11, "Memory"; the formula is in docs/ARCHITECTURE.md, "Video frames").
#
# Makes a 20 s 3840x2160 H.264 file with the ffmpeg CLI (GOP 120, B-frames) and a 64x36 copy
# of the same clip, then trains pipelines/video.toml's crops with a tiny model for a few steps
# under /usr/bin/time on each setting below. The baseline B0 is the same run on the 64x36 copy:
# the binary, libtorch, the model, its optimizer and activations, the crops; everything a 4K
# frame adds is counted by the budgets:
#
#   random:     B0 + d (18 + T) P + (S + U) f + W U f + min(C f, channel_bytes) + (A + d) f
#   sequential: B0 +   (18 + T) P + min(S f, shuffle_bytes + f) + min(C f, channel_bytes) + (A + 1) f
#
#   P  a decoded picture (3840 x 2160 x 1.5 bytes, YUV 4:2:0); 18 = H.264's largest DPB (16)
#      + the picture being decoded + the one being converted; T = source.threads
#   f  a frame at the working size (longer side source.max_side, RGB: w x h x 3 bytes)
#   d  source.decoders, W = 2 d + 2 units in flight, U = frames drawn per unit (GOP / stride)
#   S  source.shuffle_buffer (random: capped by the epoch's frames), C decode.channel_capacity,
#   A  augment workers (each holds one frame; each decoder, or the source thread, one more)
#
#   scripts/video-memory-check.sh [WORK_DIR] [STEPS]    (defaults: /tmp/video-memory-check, 6)
#
# Needs the ffmpeg CLI and /usr/bin/time; DINO_STREAM names the binary
# (default target/release/dino-stream).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/video-memory-check}
steps=${2:-6}
bin=${DINO_STREAM:-$root/target/release/dino-stream}
[[ -x $bin ]] || { echo "no dino-stream binary at $bin (cargo build --release, or set DINO_STREAM)" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
mkdir -p "$work"
W4=3840 H4=2160 gop=120 frames=600
for spec in "4k ${W4}x${H4}" "tiny 64x36"; do
    set -- $spec
    [[ -s $work/$1.mp4 ]] || ffmpeg -v error -y -f lavfi -i "testsrc2=size=$2:rate=30:duration=20" \
        -c:v libx264 -preset veryfast -refs 4 -bf 3 -g $gop -pix_fmt yuv420p "$work/$1.mp4"
done

cores=$(nproc)
common=(--max-steps "$steps" --no-eval --no-progress --set metrics.port=0 --set train.steps_per_epoch=20
        --set "source.index_cache=$work/index" --set source.stride=1 --set source.limit=1000000
        --set model.arch=vit --set model.embed_dim=64 --set model.depth=2 --set model.heads=4
        --set model.out_dim=1024 --set model.head_hidden=256 --set model.head_bottleneck=64)

peak_kib() { # peak_kib NAME FILE ARGS... -> the run's maximum resident set size in KiB
    local name=$1 file=$2
    shift 2
    rm -rf "$work/runs/$name"
    /usr/bin/time -f '%M' -o "$work/$name.rss" "$bin" run "$root/pipelines/video.toml" \
        --set "source.path=$work/$file" --set "checkpoint.dir=$work/runs/$name" "${common[@]}" "$@" \
        >"$work/$name.log" 2>&1 || { echo "$name failed, see $work/$name.log" >&2; tail -n 20 "$work/$name.log" >&2; exit 1; }
    tail -n 1 "$work/$name.rss"
}

b0=$(peak_kib baseline tiny.mp4 --set source.max_side=512)
mib() { echo $(( ($1 + (1 << 19)) >> 20 )); }
echo "baseline B0 (64x36 copy): $(mib $((b0 * 1024))) MiB"
echo
echo "| sampling | max_side | shuffle_buffer | channel_bytes | buffer_bytes | peak RSS MiB | bound MiB | frames in the bound |"
echo "|---|---|---|---|---|---|---|---|"
# name sampling max_side shuffle_buffer channel_bytes_MiB buffer_bytes_MiB
while read -r name sampling side S cb_mib bb_mib; do
    if (( side == 0 || side >= W4 )); then w=$W4 h=$H4; else w=$side h=$(( (H4 * side + W4 / 2) / W4 )); fi
    f=$((w * h * 3)) P=$((W4 * H4 * 3 / 2)) T=1 C=256 A=$cores d=$cores
    cb=$((cb_mib << 20)) bb=$((bb_mib << 20))
    chan=$(( C * f < cb ? C * f : cb ))
    if [[ $sampling == random ]]; then
        U=$gop W=$((2 * d + 2)) Se=$(( S < frames ? S : frames ))
        held=$(( Se + U + W * U + A + d ))
        video=$(( d * (18 + T) * P + (Se + U + W * U + A + d) * f + chan ))
    else
        sb=$((256 << 20))
        shuf=$(( S * f < sb + f ? S * f : sb + f ))
        held=$(( shuf / f + A + 1 ))
        video=$(( (18 + T) * P + shuf + (A + 1) * f + chan ))
    fi
    peak=$(peak_kib "$name" 4k.mp4 --set "source.sampling=$sampling" --set "source.max_side=$side" \
        --set "source.shuffle_buffer=$S" --set "decode.channel_bytes=$cb" --set "batcher.buffer_bytes=$bb")
    [[ $sampling == random ]] && decoders=$d || decoders=1
    echo "| $sampling | $side | $S | $cb_mib MiB | $bb_mib MiB | $(mib $((peak * 1024))) | $(mib $((b0 * 1024 + video))) | $held x ${w}x$h, $decoders decoders |"
done <<'EOF'
r512 random 512 512 512 2048
r512s64 random 512 64 512 2048
r16 random 16 64 512 2048
r1024 random 1024 64 64 256
s512 sequential 512 512 512 2048
s1024 sequential 1024 512 64 256
s512b1 sequential 512 1 512 2048
EOF
echo
echo "4K H.264 ${W4}x$H4, $frames frames, GOP $gop; $steps steps of batch 32; $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $cores cores"
