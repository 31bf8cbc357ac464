#!/usr/bin/env bash
# The video learning check (issue 11): does the way frames are drawn from a video matter?
#
# Makes a video of the 60000 Fashion-MNIST training images (scripts/make-fmnist-video.py: each
# image 4 frames with a small pan/zoom, 240000 frames, H.264), then trains the quickstart
# model and recipe (pipelines/quickstart.toml) for the same steps with the same seed from
#   images      the IDX images themselves (the quickstart source)
#   random      the video, source.sampling = "random"
#   sequential  the video, sampling = "sequential" with its default shuffle buffer
#   stream      the video, sequential with shuffle_buffer = 1 (pure stream order)
# and prints the weighted k-NN accuracy (k = 20, T = 0.07, `dino-stream eval knn`) of each
# teacher on the Fashion-MNIST test set, bank = the training images, beside the untrained
# network's, as a Markdown table.
#
#   scripts/video-learning-check.sh [WORK_DIR] [STEPS] [SEED]   (defaults: /tmp/video-learning-check, 600, 0)
#
# SEED is train.seed for every arm (crops, initialisation, sampling order; the video is the same).
# Environment: FRAMES_PER_IMAGE (default 4) and IMAGES (the first N training images; default all)
# shape the video; ARMS picks arms (default "images random sequential stream"; also "random_s"
# = random with stride = FRAMES_PER_IMAGE, one frame of each image per epoch).
# STEPS is split into the recipe's 3 epochs (train.steps_per_epoch = STEPS / 3), so warm-up and
# cosine schedules have the same shape in every arm. Needs the venv's python (torch) and the
# ffmpeg CLI; DINO_STREAM names the binary (default target/release/dino-stream).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/video-learning-check}
steps=${2:-600}
seed=${3:-0}
bin=${DINO_STREAM:-$root/target/release/dino-stream}
python=${DINO_STREAM_PYTHON:-$root/.venv/bin/python}
pipeline=$root/pipelines/quickstart.toml
if (( steps < 3 || steps % 3 != 0 )); then
    echo "STEPS must be a positive multiple of 3 (the recipe's 3 epochs), got $steps" >&2
    exit 2
fi
[[ -x $bin ]] || { echo "no dino-stream binary at $bin (cargo build --release, or set DINO_STREAM)" >&2; exit 2; }
mkdir -p "$work"
fpi=${FRAMES_PER_IMAGE:-4}
images=${IMAGES:-0}
arms=${ARMS:-images random sequential stream}
tag=
if (( fpi != 4 || images != 0 )); then tag=-$images-x$fpi; fi
video=$work/fmnist-train$tag.mp4

if [[ ! -s $video ]]; then
    "$python" "$root/scripts/make-fmnist-video.py" --out "$video" --frames-per-image "$fpi" --images "$images"
fi

# The quickstart pipeline with its [source] table replaced by the video.
video_pipeline=${video%.mp4}.toml
awk -v video="$video" -v cache="$work/index" '
    /^\[source\]/ { print "[source]\ntype = \"video\"\npath = \"" video "\"\nindex_cache = \"" cache "\"\n"; skip = 1; next }
    /^\[/ { skip = 0 }
    !skip { print }
' "$pipeline" >"$video_pipeline"

common=(--set "train.steps_per_epoch=$((steps / 3))" --set train.epochs=3 --set "train.seed=$seed"
        --set metrics.port=0 --set eval.knn.every_steps=0)
declare -A acc secs
knn() { # knn NAME PIPELINE ARGS... -> the accuracy, from `eval knn`'s last line
    "$bin" eval knn "$2" "${@:3}" --set metrics.port=0 2>&1 | tee "$work/$1.eval.log" |
        sed -n 's/^k-NN accuracy .*: \([0-9.]*%\)$/\1/p' | tail -n 1
}

acc[untrained]=$(knn "untrained-$seed" "$pipeline" --untrained --set "train.seed=$seed")
secs[untrained]=-
for arm in $arms; do
    case $arm in
        images) p=$pipeline; extra=() ;;
        random) p=$video_pipeline; extra=(--set source.sampling=random) ;;
        sequential) p=$video_pipeline; extra=(--set source.sampling=sequential) ;;
        stream) p=$video_pipeline; extra=(--set source.sampling=sequential --set source.shuffle_buffer=1) ;;
        random_s) p=$video_pipeline; extra=(--set source.sampling=random --set "source.stride=$fpi") ;;
        *) echo "unknown arm $arm" >&2; exit 2 ;;
    esac
    rm -rf "$work/runs/$arm$tag-$seed"
    start=$SECONDS
    "$bin" run "$p" --no-eval --no-progress "${common[@]}" "${extra[@]}" \
        --set "checkpoint.dir=$work/runs/$arm$tag-$seed" >"$work/$arm$tag-$seed.train.log" 2>&1 ||
        { echo "$arm: training failed, see $work/$arm$tag-$seed.train.log" >&2; tail -n 20 "$work/$arm$tag-$seed.train.log" >&2; exit 1; }
    secs[$arm]=$((SECONDS - start))
    acc[$arm]=$(knn "$arm$tag-$seed" "$p" --checkpoint "$work/runs/$arm$tag-$seed")
    echo "$arm: ${acc[$arm]} (${secs[$arm]} s)" >&2
done

echo
echo "| source | sampling | k-NN top-1 (test) | training s |"
echo "|---|---|---|---|"
echo "| untrained network | - | ${acc[untrained]} | - |"
declare -A what=([images]="IDX images | a seeded permutation per epoch"
    [random]="video | \`random\`" [random_s]="video | \`random\`, \`stride = $fpi\`"
    [sequential]="video | \`sequential\`, default shuffle buffer"
    [stream]="video | \`sequential\`, \`shuffle_buffer = 1\`")
for arm in $arms; do echo "| ${what[$arm]} | ${acc[$arm]} | ${secs[$arm]} |"; done
echo
echo "video: $(basename "$video"), $fpi frames per image; $steps steps x batch 128, seed $seed, on $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) cores"
