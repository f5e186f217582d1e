#!/usr/bin/env bash
# One scripted H100 visit for the GPU parts of the open issues (self-test reports, GPU validation, bench).
# Runbook: bench/GPU_VISIT.md (the device-tool call sequence that brings the vLLM 0.26.0 wheels over).
#
#   bash bench/gpu_visit.sh start     # after the wheels are in /tmp/w: installs vLLM to /tmp/site, then runs
#                                     # every step below DETACHED (setsid), so it outlives the device call
#   bash bench/gpu_visit.sh poll      # copies what is finished to $OUT (call repeatedly, back to back)
#   bash bench/gpu_visit.sh steps     # list the steps
#
# Every step is timed and bounded, logs to $WORK/<step>.log, and a failing step does not stop the next.
# Results (JSON, logs, a summary TSV) are gathered under $WORK/keep/, copied to $OUT by `poll` (the device
# tool returns at most 8 files: poll packs keep/ into one tar.gz per call, plus summary.tsv).
set -u -o pipefail
REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
WORK=${WORK:-/tmp/gv}
KEEP=$WORK/keep
PY=${PY:-python3}
CKPT=${CKPT:-/tmp/ckpt}
PORT=${PORT:-8011}
CTX1=${CTX1:-32768}
CTX2=${CTX2:-131072}
VV=0.26.0
export PYTHONPATH=/tmp/site:$REPO PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
export VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 SPARK_TUI_HOME=$WORK/home
SPARK="$PY -m spark_tui"
STEPS="install env selftest_torch selftest_vllm probe synth plan_default plan_check plan_ctx2 plan_mtp0 launch_plan bench_plan \
launch_mtp0 bench_mtp0 serve_defaults bench_defaults launch_ctx2 summary"  # by priority: a cut-short visit keeps the first

step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local t0 rc
  t0=$(date +%s)
  echo "== $name (limit ${limit}s) $(date -u +%T)" | tee -a "$WORK/progress.log"
  timeout -k 15 "$limit" bash -c "$*" > "$KEEP/$name.log" 2>&1; rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$KEEP/steps.tsv"
  echo "   rc=$rc $(( $(date +%s) - t0 ))s" | tee -a "$WORK/progress.log"
}

plan_args() {  # the probe taken on this machine + the synthetic checkpoint in NVIDIA's ModelOpt layout
  echo "--probe-file $KEEP/probe.json --checkpoint nvidia-nvfp4 --model-path $CKPT --vllm-version $VV --port $PORT $*"
}

launch() {  # launch NAME PLAN-ARGS: detached server from spark-tui's plan; wait ready; keep its log + KV check
  local name=$1; shift
  echo "$SPARK launch $(plan_args "$@") --detach --startup-timeout 480 > $KEEP/$name.out 2>&1; \
    rc=\$?; cp \"\$(ls -t $WORK/home/state/logs/vllm-*.log | head -1)\" $KEEP/$name.vllm.log; \
    nvidia-smi --query-gpu=memory.used,memory.total --format=csv > $KEEP/$name.gpumem.csv; \
    $SPARK diagnose $KEEP/$name.vllm.log --json > $KEEP/$name.diagnose.json; exit \$rc"
}

bench() {  # bench NAME: concurrency 1 and 16 against the running server, then stop it
  local name=$1
  echo "$SPARK bench --url http://127.0.0.1:$PORT --concurrency 1,16 --requests 32 --prompt-tokens 512 \
    --output-tokens 256 --json --no-save > $KEEP/$name.json; rc=\$?; \
    curl -s http://127.0.0.1:$PORT/metrics > $KEEP/$name.metrics.txt; $SPARK stop --all; exit \$rc"
}

run_all() {
  mkdir -p "$KEEP" "$WORK/home"
  step install 300 "mkdir -p /tmp/w/deps && cd /tmp/w && cat vllm.part.0 vllm.part.1 vllm.part.2 vllm.part.3 vllm.part.4 \
    > deps/vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl && python3 -m pip install -q --no-index --no-deps \
    --no-compile --target /tmp/site deps/*.whl && $PY -c 'import vllm; print(vllm.__version__)'"
  step env 60 "nvidia-smi; nproc; free -g; df -h /tmp; $PY -c 'import torch, vllm, transformers; \
    print(torch.__version__, torch.version.cuda, vllm.__version__, transformers.__version__)'"
  step selftest_torch 300 "PYTHONPATH=$REPO $PY -m kernels_check --json --out $KEEP/h100-torch.json; \
    PYTHONPATH=$REPO $PY -m kernels_check --from $KEEP/h100-torch.json --markdown --out $KEEP/h100-torch.md"
  step selftest_vllm 300 "$PY -m kernels_check --json --out $KEEP/h100-vllm-$VV.json; \
    $PY -m kernels_check --from $KEEP/h100-vllm-$VV.json --markdown --out $KEEP/h100-vllm-$VV.md"
  step probe 60 "$SPARK probe --json > $KEEP/probe.json; $PY $REPO/tests/support/capture_nvml.py --id h100-visit \
    --out $KEEP/probes"
  step synth 600 "STAGES='synth verify' OUT=$KEEP/validate CKPT=$CKPT BUDGET_S=590 bash $REPO/bench/gpu_validate.sh"
  step plan_default 60 "$SPARK plan $(plan_args --context "$CTX1") --json > $KEEP/plan_default.json"
  step plan_check 120 "$SPARK plan $(plan_args --context "$CTX1") --check > $KEEP/plan_check.txt 2>&1; \
    cat $KEEP/plan_check.txt"
  step plan_ctx2 60 "$SPARK plan $(plan_args --context "$CTX2" --goal context) --json > $KEEP/plan_ctx2.json"
  step plan_mtp0 60 "$SPARK plan $(plan_args --context "$CTX1" --mtp 0) --json > $KEEP/plan_mtp0.json"
  step launch_plan 600 "$(launch launch_plan --context "$CTX1")"
  step bench_plan 400 "$(bench bench_plan)"
  step launch_mtp0 600 "$(launch launch_mtp0 --context "$CTX1" --mtp 0)"
  step bench_mtp0 400 "$(bench bench_mtp0)"
  # vLLM's own defaults on the same checkpoint (only what serving needs: text only, the same context)
  step serve_defaults 600 "setsid vllm serve $CKPT --host 127.0.0.1 --port $PORT --language-model-only \
    --max-model-len $CTX1 > $KEEP/serve_defaults.vllm.log 2>&1 & \
    for i in \$(seq 480); do curl -sf http://127.0.0.1:$PORT/health >/dev/null && exit 0; sleep 1; done; exit 1"
  step bench_defaults 400 "$SPARK bench --url http://127.0.0.1:$PORT --concurrency 1,16 --requests 32 \
    --prompt-tokens 512 --output-tokens 256 --json --no-save > $KEEP/bench_defaults.json; rc=\$?; \
    pkill -TERM -f 'vllm serve $CKPT'; sleep 10; pkill -KILL -f 'vllm serve $CKPT'; exit \$rc"
  step launch_ctx2 600 "$(launch launch_ctx2 --context "$CTX2" --goal context); $SPARK stop --all"
  step summary 60 "$PY $REPO/bench/gpu_visit_summary.py $KEEP > $KEEP/summary.md"
  echo "done" > "$WORK/DONE"
}

case "${1:-}" in
  start)
    mkdir -p "$WORK"
    [ -e "$WORK/started" ] && { echo "already started"; exit 0; }
    touch "$WORK/started"
    # run from a private copy: the device tool may re-send the working tree while this keeps running
    rm -rf "$WORK/repo" && cp -r "$REPO" "$WORK/repo" && rm -rf "$WORK/repo/.gpu"
    REPO=$WORK/repo setsid bash "$WORK/repo/bench/gpu_visit.sh" _run > "$WORK/run.log" 2>&1 < /dev/null &
    echo "started: tail $WORK/progress.log" ;;
  _run) run_all ;;
  poll)
    : "${OUT:?OUT must be set}"
    tail -30 "$WORK/progress.log" 2>/dev/null
    [ -d "$KEEP" ] && tar -C "$WORK" -czf "$OUT/keep.tar.gz" keep && cp "$KEEP/steps.tsv" "$OUT/" 2>/dev/null
    [ -e "$WORK/DONE" ] && echo "ALL DONE" || echo "still running" ;;
  steps) echo "$STEPS" ;;
  *) echo "usage: $0 start|poll|steps" >&2; exit 2 ;;
esac
