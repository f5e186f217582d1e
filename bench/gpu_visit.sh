#!/usr/bin/env bash
# One scripted H200 visit (nvidia-h200, vLLM 0.26.0 from carried wheels): the measurements of issue #12 and the
# H200 part of issue #11. Runbook: bench/GPU_VISIT.md (the device-tool call sequence that brings the wheels over).
#
#   bash bench/gpu_visit.sh start     # after the wheels are in /tmp/w: installs vLLM to /tmp/site, then runs
#                                     # every step below DETACHED (setsid), so it outlives the device call
#   bash bench/gpu_visit.sh poll      # copies what is finished to $OUT (call repeatedly, back to back)
#   bash bench/gpu_visit.sh steps     # list the steps
#
# The steps, by priority (a visit cut short keeps the first ones):
#   install, env     vLLM 0.26.0 into /tmp/site; versions, GPU, disk
#   moe_check        (MOE_CHECK=1) kernels_check's NVFP4 MoE backend agreement check
#   synth            the full-size synthetic checkpoint in NVIDIA's real layout (ModelOpt MIXED_PRECISION:
#                    W4A16_NVFP4 experts, FP8 attention/DeltaNet, BF16 MTP head) with a zero lm_head
#                    (--always-accept: greedy MTP drafts are always accepted, sampled ones almost never)
#   synth_ct         RedHatAI's compressed-tensors W4A4 layout, full size, for ct_serve (issue #11)
#   ablate           spark-tui ablate of the H200 plan with its unmeasured candidates: vLLM's baseline, the
#                    required deviations, MTP k=1 and 3 (first wave), then MTP k=2, each candidate alone and the
#                    full plan (second wave); 4 servers at a time,
#                    each with the same 6 GiB KV pool and a 131,072-token context, benchmarked one at a time at
#                    concurrency 1 and 16, at temperature 1 (MTP acceptance ~0) and, for the baseline and MTP
#                    variants, 0 (acceptance ~1)
#   fallback         if the NVIDIA layout does not start, the same ablation on the older W4A4 ModelOpt layout
#   ct_serve         RedHatAI's compressed-tensors W4A4 layout served from spark-tui's plan (launch, log checked),
#                    in the GPU slot the ablation's second wave leaves free (same 6 GiB pool), from its own
#                    SPARK_TUI_HOME so its `stop --all` stops only that server
#   kv128k           (KV_UTIL_CHECK=1) the default plan at 131,072 tokens with vLLM's own memory profiling (the
#                    utilisation-based KV prediction), then stopped
# Every step is timed and bounded, logs to $KEEP/<step>.log, and a failing step does not stop the next.
# `poll` packs keep/ into one tar.gz per call (the device tool returns at most 8 files).
set -u -o pipefail
REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
WORK=${WORK:-/tmp/gv}
KEEP=$WORK/keep
PY=${PY:-python3}
CKPT=${CKPT:-/tmp/ckpt}
VV=0.26.0
export PYTHONPATH=/tmp/site:$REPO PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
export VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 SPARK_TUI_HOME=$WORK/home
export VLLM_CACHE_ROOT=$WORK/vllm-cache
SPARK="$PY -m spark_tui"
STEPS="install env [moe_check] synth synth_ct ablate+ct_serve fallback [kv128k]"
# the carried wheels lack the CUTLASS DSL that FlashInfer's GDN prefill kernel needs: every server (the baseline too)
# gets --gdn-prefill-backend triton, as vLLM's own log advises
# (--max-num-seqs 256: a 6 GiB pool holds ~266-297 blocks, and a hybrid model's full decode CUDA graphs need one per
# sequence; vLLM's default 1024 made every server of the first try refuse to start)
HARNESS="--set-all gdn-prefill-backend=triton --set-all kv-cache-memory-bytes=6G --set-all gpu-memory-utilization=0.2 \
  --set-all max-num-seqs=256"
# 131,072 tokens of context: the KV-cache check at 128k comes with every server (short prompts decode the same)
PLAN="--device h200 --checkpoint nvidia-nvfp4 --vllm-version $VV --context 131072"
ABLATE="--include-unmeasured --mtp-values ${MTP_VALUES:-1,3,2} --temperatures 1 --mtp-temperatures 0 --levels 1,16 \
  --requests 16 --prompt-tokens 512 --output-tokens 128 --servers 4 --skip load-format --startup-timeout 900 $HARNESS"

step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local t0 rc
  t0=$(date +%s)
  echo "== $name (limit ${limit}s) $(date -u +%T)" | tee -a "$WORK/progress.log"
  timeout -k 15 "$limit" bash -c "$*" > "$KEEP/$name.log" 2>&1; rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$KEEP/steps.tsv"
  echo "   rc=$rc $(( $(date +%s) - t0 ))s" | tee -a "$WORK/progress.log"
}

keep_logs() {  # the key lines of every vLLM log spark-tui wrote, and the ablation state files (partial results)
  mkdir -p "$KEEP/logs"
  for f in "$WORK"/home/state/logs/vllm-*.log "$WORK"/home-ct/state/logs/vllm-*.log; do
    [ -e "$f" ] || continue
    grep -E 'KV cache size|Maximum concurrency|MoE backend|NvFp4|quantization=|Available KV cache|Model loading took|Graph capturing|init engine|Error|error:|Traceback|version' \
      "$f" | cut -c1-400 > "$KEEP/logs/$(basename "$f" .log).key.txt"
    # the engine's config line is longer than 400 characters: keep the fields the plan predicts
    grep -o -E "quantization=[A-Za-z0-9_-]+|kv_cache_dtype=[A-Za-z0-9_]+|enable_prefix_caching=[A-Za-z]+|speculative_config=[A-Za-z]+" \
      "$f" | sort -u >> "$KEEP/logs/$(basename "$f" .log).key.txt"
  done
  cp "$WORK"/home/data/ablate/*.json "$KEEP/" 2>/dev/null
  true
}

# issue #11: RedHatAI's compressed-tensors W4A4 layout served from spark-tui's own plan (sm_90: Marlin/Humming run it
# weight-only), its logged quantization method and MoE backend against the plan's prediction. It waits for the
# ablation's second wave (3 servers: one GPU slot of the 4 is free) or the ablation's end.
ct_serve_bg() {
  local i
  for i in $(seq 1 400); do
    grep -q -E '^== (mtp-2|--kv-cache-dtype=fp8|plan): starting' "$KEEP/ablate.log" 2>/dev/null && break
    grep -q -E '^ablate	' "$KEEP/steps.tsv" 2>/dev/null && break
    sleep 5
  done
  local CT="--device h200 --checkpoint redhatai-nvfp4 --model-path ${CKPT}-ct --vllm-version $VV --context 32768 \
    --set gdn-prefill-backend=triton --set kv-cache-memory-bytes=6G --set gpu-memory-utilization=0.2 \
    --set max-num-seqs=256"
  step ct_serve 900 "export SPARK_TUI_HOME=$WORK/home-ct; $SPARK plan $CT --json > $KEEP/ct.plan.json; \
    $SPARK launch $CT --port 8018 --detach --startup-timeout 800 > $KEEP/ct.out 2>&1; rc=\$?; \
    $SPARK stop --all; bash $REPO/bench/gpu_visit.sh keeplogs; exit \$rc"
  touch "$WORK/ct.done"
}

run_all() {
  mkdir -p "$KEEP" "$WORK/home"
  step install 300 "mkdir -p /tmp/w/deps && cd /tmp/w && cat vllm.part.0 vllm.part.1 vllm.part.2 vllm.part.3 vllm.part.4 \
    > deps/vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl && python3 -m pip install -q --no-index --no-deps \
    --no-compile --target /tmp/site deps/*.whl && $PY -c 'import vllm; print(vllm.__version__)'"
  step env 60 "nvidia-smi; nproc; free -g; df -h /tmp; $PY -c 'import torch, vllm, transformers; \
    print(torch.__version__, torch.version.cuda, vllm.__version__, transformers.__version__)'; \
    $SPARK probe --json > $KEEP/probe.json"
  if [ "${MOE_CHECK:-0}" = 1 ]; then
    step moe_check 600 "$PY -m kernels_check --json --only moe_nvfp4_agree --progress --out $KEEP/moe_nvfp4_agree.json"
  fi
  step synth 300 "$PY $REPO/bench/synth_checkpoint.py --format nvidia-mixed --scale full --always-accept --out $CKPT \
    > $KEEP/synth.json && $SPARK download --model-path $CKPT --verify-only --json > $KEEP/verify.json"
  if [ "${CT_SERVE:-1}" = 1 ]; then
    step synth_ct 300 "$PY $REPO/bench/synth_checkpoint.py --format ct-nvfp4 --scale full --out ${CKPT}-ct \
      > $KEEP/synth_ct.json; df -h /tmp"
    ct_serve_bg &
  fi
  step ablate 1500 "$SPARK plan $PLAN --json > $KEEP/plan.json; $SPARK plan $PLAN --include-unmeasured --json \
    > $KEEP/plan_unmeasured.json; $SPARK ablate $PLAN --model-path $CKPT $ABLATE --json --out $KEEP/ablate.json \
    > /dev/null; rc=\$?; bash $REPO/bench/gpu_visit.sh keeplogs; exit \$rc"
  # only when the NVIDIA layout did not start at all: the older W4A4 ModelOpt layout, which vLLM 0.26.0 served
  # on this machine on 2026-12-02
  step fallback 1500 "$PY -c \"import json,sys; d=json.load(open('$KEEP/ablate.json')); \
    sys.exit(0 if d['results'].get('baseline', {}).get('ok') is False and d['results']['baseline'].get('startup_s') \
    is None else 1)\" || exit 0; rm -rf $CKPT; $PY $REPO/bench/synth_checkpoint.py --format nvfp4 --scale full \
    --always-accept --out $CKPT > $KEEP/synth_fallback.json && $SPARK ablate $PLAN --model-path $CKPT $ABLATE --restart \
    --json --out $KEEP/ablate_fallback.json > /dev/null; bash $REPO/bench/gpu_visit.sh keeplogs"
  if [ "${KV_UTIL_CHECK:-0}" = 1 ]; then
    step kv128k 900 "$SPARK launch --device h200 --checkpoint nvidia-nvfp4 --model-path $CKPT --vllm-version $VV \
      --context 131072 --set gdn-prefill-backend=triton --port 8017 --detach --startup-timeout 800 --no-mem-guard \
      > $KEEP/kv128k.out 2>&1; rc=\$?; $SPARK plan --device h200 --checkpoint nvidia-nvfp4 --model-path $CKPT \
      --vllm-version $VV --context 131072 --set gdn-prefill-backend=triton --json > $KEEP/kv128k.plan.json; \
      nvidia-smi --query-gpu=memory.used,memory.total --format=csv > $KEEP/kv128k.gpumem.csv; \
      $SPARK stop --all; bash $REPO/bench/gpu_visit.sh keeplogs; exit \$rc"
  fi
  if [ "${CT_SERVE:-1}" = 1 ]; then  # the compressed-tensors serve may still be running
    for _ in $(seq 1 180); do [ -e "$WORK/ct.done" ] && break; sleep 5; done
  fi
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
  keeplogs) keep_logs ;;
  poll)
    : "${OUT:?OUT must be set}"
    keep_logs
    tail -40 "$WORK/progress.log" 2>/dev/null
    tail -12 "$KEEP/ablate.log" 2>/dev/null
    tail -4 "$KEEP/ct.out" 2>/dev/null
    [ -d "$KEEP" ] && tar -C "$WORK" -czf "$OUT/keep.tar.gz" keep && cp "$KEEP/steps.tsv" "$OUT/" 2>/dev/null
    [ -e "$WORK/DONE" ] && echo "ALL DONE" || echo "still running" ;;
  steps) echo "$STEPS" ;;
  *) echo "usage: $0 start|poll|steps" >&2; exit 2 ;;
esac
