#!/usr/bin/env bash
# Every GPU figure of issue 14 in one run, ours beside our reference mode in the same process or run:
#   inference  UniTalker-B and -L, batch 1 and 16, 10 s clips: reference mode vs fast mode (+ the fast mode's
#              CNN choice, CUDA graph, relative error against the reference)       -> infer_b.json, infer_l.json
#   compile    `unitalker bench --compile` on UniTalker-B at batch 1: completes or not, and its time -> compile.json
#   training   UniTalker-B and -L on clips with the full-size stand-ins' lengths: reference setting (batch 1,
#              fp32, eager) vs ours (batch 16, bf16, feature cache, static shapes; 0 and 4 loader workers), step
#              anatomy (GPU busy fraction, kernels, syncs, data wait), 100-epoch projections -> train_b.json, train_l.json
#   summary.md the issue's table filled in (benchmarks/gpu_summary.py); log.txt everything printed
#
# Run from the repository root on a machine with one CUDA GPU (H100/H200: ~6-8 minutes; stages are capped so
# the whole stays under BUDGET seconds, default 560). Results go to $OUT (default ./gpu_out).
# Through the device tool (docs/benchmarks.md, "GPU"): here, once, `bash benchmarks/gpu_wheels.sh` (pydantic,
# soxr, soundfile for Python 3.12, ~5 MB, into .whl/); then
#   run(command="bash benchmarks/gpu_all.sh", carry=[".whl"], timeout_s=600)
set -u
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
: >"$LOG"
T0=$(date +%s)
BUDGET=${BUDGET:-560}
export PYTHONUNBUFFERED=1 A2FBENCH_PROGRESS=0 PYTHONWARNINGS=ignore
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/a2f-gpu}
# a dry run of the plumbing without a GPU: DEVICE=cpu CFG_B=tiny CFG_L=tiny QUICK=1 bash benchmarks/gpu_all.sh
DEVICE=${DEVICE:-cuda}; CFG_B=${CFG_B:-unitalker-b}; CFG_L=${CFG_L:-unitalker-l}
if [ "${QUICK:-0}" = 1 ]; then SIZES_B="--clips 32 --ref-clips 6 --epochs 2"; SIZES_L="--clips 32 --ref-clips 4 --epochs 2"
else SIZES_B="--clips 192 --ref-clips 48 --epochs 3"; SIZES_L="--clips 128 --ref-clips 24 --epochs 3"; fi

stage() { echo "=== $(date +%T) +$(( $(date +%s) - T0 )) s: $*" | tee -a "$LOG"; }
left() { echo $(( T0 + BUDGET - $(date +%s) )); }
# run a stage with at most $1 seconds (less if the budget is nearly spent); its output goes to the log
capped() {
  local want=$1; shift
  local t; t=$(left)
  [ "$t" -lt "$want" ] && want=$t
  if [ "$want" -lt 20 ]; then stage "skipped (budget spent): $*"; return 1; fi
  timeout --signal=INT --kill-after=10 "$want" "$@" >>"$LOG" 2>&1
  local rc=$?
  [ $rc -ne 0 ] && stage "exit $rc (limit ${want} s): $*"
  return $rc
}

stage "environment"
if ! $PY -c "import pydantic, soxr, soundfile" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >>"$LOG" 2>&1
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
  fi
  $PY -c "import pydantic, soxr, soundfile" >>"$LOG" 2>&1 || { stage "missing pydantic/soxr/soundfile: run benchmarks/gpu_wheels.sh here and carry .whl"; exit 1; }
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv; nproc; uptime
  $PY -c "import torch, transformers, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, torch.cuda.get_device_name(0))"
  git log --oneline -1 2>/dev/null; } >>"$LOG" 2>&1

# the small stand-ins, prepared on the CPU while the GPU runs inference
stage "stand-ins (background)"
rm -rf "$WORK"; mkdir -p "$WORK"
( $PY -m a2fbench.cli synth D0..D7 --out "$WORK/raw" --size small && \
  $PY -m a2fbench.cli prepare D0..D7 --raw "$WORK/raw" --out "$WORK/data" && \
  $PY -m a2fbench.cli pca D0..D2 --data "$WORK/data" --components 16 && touch "$WORK/ready" ) >"$WORK/prep.log" 2>&1 &

stage "inference UniTalker-B (reference vs fast, batch 1 and 16)"
capped 150 $PY benchmarks/bench_unitalker_infer.py --configs $CFG_B --device $DEVICE --batch 16 --json "$OUT/infer_b.json"
stage "inference UniTalker-L"
capped 150 $PY benchmarks/bench_unitalker_infer.py --configs $CFG_L --device $DEVICE --batch 16 --json "$OUT/infer_l.json"

stage "waiting for the stand-ins"
wait
cat "$WORK/prep.log" | tail -3 >>"$LOG"
if [ -f "$WORK/ready" ]; then
  stage "training UniTalker-B (reference vs ours)"
  capped 170 $PY benchmarks/bench_unitalker_train.py --data "$WORK/data" --configs $CFG_B --device $DEVICE \
    --workers 0,4 $SIZES_B --json "$OUT/train_b.json"
else
  stage "stand-ins failed: $(tail -1 "$WORK/prep.log")"
fi

stage "bench --compile (UniTalker-B, batch 1)"
t=$(date +%s)
capped 150 $PY -m unitalker.cli bench --config $CFG_B --device $DEVICE --batch 1 --compile --json "$OUT/compile.json"
echo "compile stage: exit $? after $(( $(date +%s) - t )) s" | tee -a "$LOG"

if [ -f "$WORK/ready" ]; then
  stage "training UniTalker-L"
  capped 150 $PY benchmarks/bench_unitalker_train.py --data "$WORK/data" --configs $CFG_L --device $DEVICE \
    --workers 4 $SIZES_L --json "$OUT/train_l.json"
fi

stage "summary"
$PY benchmarks/gpu_summary.py "$OUT" | tee "$OUT/summary.md"
stage "done"
