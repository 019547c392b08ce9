#!/usr/bin/env bash
# Every measurement that needs a GPU, in one run of at most 8 minutes on one H100/H200, summed up
# in one markdown table (OUT/gpu_suite.md):
#   - LookWhere vs the full-resolution ViT at 224², 518², 994² (bf16; batch 1 and a throughput batch)
#   - ViViT-B with vs without TokenLearner: training clips/s (and inference)
#   - the Kinetics loader (decord; torchcodec where it runs) with N workers vs plain decord, next to ViViT-B's training rate
#   - pytest -m gpu
#   - python -m benchmarks.precision (fp32 vs bf16 vs fp16 losses)
# The timings come from `python -m benchmarks bench=gpu`, one suite per
# call so that a suite cut short by its time limit loses only itself.
#
#   bash benchmarks/gpu_suite.sh [--out DIR]      # on the GPU machine, from the repo root
#   bash benchmarks/gpu_suite.sh --dry-run        # CPU, tiny sizes, same code paths (CI runs this)
#
# Exit status: 0 when every step finished; 1 when one failed or ran out of its time.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="runs/gpu_suite/$(date -u +%Y%m%d-%H%M%S)"
DRY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --out) OUT="$2"; shift ;;
        --out=*) OUT="${1#--out=}" ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "gpu_suite.sh: unknown argument '$1' (expected --out DIR or --dry-run)" >&2; exit 2 ;;
    esac
    shift
done
PY="${PYTHON:-python}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
mkdir -p "$OUT"
: > "$OUT/steps.tsv"

GPU=(bench=gpu)
# the loader with torchcodec too, where it can decode here (it needs the system's FFmpeg libraries)
READERS=plain,decord
"$PY" -c "from lw_lightning.data.video_io import torchcodec_problem as p; raise SystemExit(p() is not None)" 2>/dev/null \
    && READERS=plain,decord,torchcodec
if [ "$DRY" = 1 ]; then
    # the same config and suites, shrunk to seconds on a CPU
    COMMON=("${GPU[@]}" bench.device=cpu bench.precision=fp32 bench.threads=1 bench.warmup=0 bench.repeats=1)
    IMAGES=("bench.images.preset=tiny" "bench.images.groups=[{size: 112, ks: [0.25], batch_sizes: [1, 2], train_batch: 1}]")
    VIDEO=(bench.video.presets=[tiny] bench.video.num_frames=4 bench.video.num_tokens=4 bench.video.batch_sizes=[1]
           bench.video.train_batch=1 bench.video.train_presets=null bench.video.memory=false)
    DATA=(bench.data.videos=1 bench.data.seconds=1 bench.data.width=96 bench.data.height=64 bench.data.gop=10 bench.data.img_size=32
          "bench.data.clips=[[4, 2]]" bench.data.workers=[1] bench.data.readers=[$READERS] bench.data.batch_size=2
          bench.data.clips_per_run=2 bench.data.rounds=1 bench.data.model_preset=tiny bench.data.model_repeats=1)
    PYTEST=(tests/test_gpu.py)        # collects only the GPU tests' module (they skip without CUDA)
    AMP=(--device cpu --tasks classification video)   # benchmarks.precision's own CPU size (112)
    LIMITS=(600 600 600 600 600)   # a guard only: seconds each on an idle CPU
else
    COMMON=("${GPU[@]}" bench.repeats=4)   # gpu.yaml's 6 repeats: the 8-minute budget holds all steps
    IMAGES=()
    VIDEO=(bench.video.presets=[base] bench.video.train_presets=[base])   # ViViT-L: minutes of its own
    DATA=(bench.data.videos=8 bench.data.readers=[$READERS] bench.data.workers=[1,4,16] bench.data.rounds=2
          "bench.data.video_dir=$OUT/videos")
    PYTEST=()
    AMP=(--device cuda --size 112)
    # seconds per step: images, video, data, pytest, amp_check (470 s in all: under 8 minutes). Estimates:
    # no GPU was at hand when they were set; a step that needs more is cut and named in the table.
    LIMITS=(180 70 110 80 30)
fi

step() {  # step NAME LIMIT_S CMD...: run with a time limit, log to OUT/NAME.log, record rc and seconds
    local name="$1" limit="$2"; shift 2
    local start rc
    start=$(date +%s)
    echo "== $name (limit ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" "$limit" >> "$OUT/steps.tsv"
    tail -n 3 "$OUT/$name.log"
}

step images "${LIMITS[0]}" "$PY" -m benchmarks "${COMMON[@]}" bench.suites=[images] "${IMAGES[@]}" "output_dir=$OUT/images"
step video "${LIMITS[1]}" "$PY" -m benchmarks "${COMMON[@]}" bench.suites=[video] "${VIDEO[@]}" "output_dir=$OUT/video"
step data "${LIMITS[2]}" "$PY" -m benchmarks "${COMMON[@]}" bench.suites=[data] "${DATA[@]}" "output_dir=$OUT/data"
step pytest_gpu "${LIMITS[3]}" "$PY" -m pytest -q -m gpu -p no:cacheprovider -o addopts= "${PYTEST[@]}"
step amp_check "${LIMITS[4]}" "$PY" -m benchmarks.precision "${AMP[@]}"

REPORT_ARGS=("$OUT")
[ "$DRY" = 1 ] && REPORT_ARGS+=(--dry-run)
"$PY" benchmarks/gpu_suite_report.py "${REPORT_ARGS[@]}" || exit 1
echo "table: $OUT/gpu_suite.md"
# any step failed or timed out -> 1 (pytest's 5, "no test collected", counts as a failure too)
awk -F'\t' '$2 != 0 { bad = 1 } END { exit bad }' "$OUT/steps.tsv"
