#!/usr/bin/env bash
# The prepared device check of issue 27: run it once whenever a GPU is lent (<= 8 minutes on one recent
# datacenter GPU), then commit the records it writes (benchmarks/results/device_check/*.json).
#
#   bash benchmarks/device_check.sh                 # the four stages on --device auto (CUDA when torch sees one)
#   bash benchmarks/device_check.sh --smoke         # tiny sizes on any machine (seconds; part of the test suite)
#   bash benchmarks/device_check.sh --smoke --results-dir /tmp/dc     # any benchmarks/device_check.py option
#
# Each stage (senet, ensc, ncsc, energy: see benchmarks/device_check.py for the papers' settings and what is cut)
# runs in its own process under its own wall-time limit, so one slow or failing stage leaves the others' records;
# a stage that hits its limit leaves its record with "status": "running" and the parts it finished.
# Limits (s): senet 180 + ensc 110 + ncsc 90 + energy 90 = 470 s, plus start-up: under 8 minutes. The stage sizes
# (SENet's training budget, the epochs) are first guesses for one H100/H200-class GPU: a stage that hits its limit
# says so here and in its record; shrink it with the options of device_check.py (--senet-budget, --ncsc-epochs...).
# Python: $PYTHON, else .venv/bin/python, else python3 (it needs a CUDA build of torch for the GPU; README "GPU").
# SELFEXPRESS_TF32=0 keeps full float32 matmuls on the GPU; --autocast bf16 (or SELFEXPRESS_AUTOCAST=bf16) runs the
# NCSC and energy networks under bf16 autocast (records tagged bf16_*).
# DEVICE_CHECK_STAGES="senet ncsc" runs only those stages.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
SMOKE=0
for arg in "$@"; do [ "$arg" = "--smoke" ] && SMOKE=1; done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "$SMOKE" = 1 ]; then
  # smoke records go where --results-dir says and measure nothing: uncommitted code may run them
  export SELFEXPRESS_BENCH_ALLOW_DIRTY=1
fi
"$PY" - <<'PYEOF' || exit 2
import torch
print(f"[device_check.sh] torch {torch.__version__}, CUDA build {torch.version.cuda}, "
      f"cuda available {torch.cuda.is_available()}"
      + (f", {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""),
      flush=True)
PYEOF
rc=0
t_start=$(date +%s)
for stage in ${DEVICE_CHECK_STAGES:-senet ensc ncsc energy}; do
  case "$stage" in senet) limit=180 ;; ensc) limit=110 ;; *) limit=90 ;; esac
  [ "$SMOKE" = 1 ] && limit=120
  timeout --signal=TERM --kill-after=10 "$limit" "$PY" benchmarks/device_check.py --stage "$stage" "$@"
  status=$?
  if [ "$status" -ne 0 ]; then
    [ "$status" -eq 124 ] && echo "[device_check.sh] $stage stopped at its ${limit} s limit" >&2
    echo "[device_check.sh] $stage: exit status $status" >&2
    rc=1
  fi
done
echo "[device_check.sh] all stages in $(( $(date +%s) - t_start )) s (exit $rc)"
exit $rc
