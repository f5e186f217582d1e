#!/usr/bin/env bash
# GPU validation runner for the offline H100 visit (see README, section gpu-validation).
#
# Precondition (done by the lead, /work/shared/gpu/README.md): vLLM 0.26.0 wheels installed to
# /tmp/site, then   export PYTHONPATH=/tmp/site:$REPO PATH=/tmp/site/bin:$PATH   and OUT set.
#
# Stages (each timed, logged to $OUT/<stage>.log, recorded in $OUT/stages.tsv; a failing stage
# does not stop the others; the whole run stays inside BUDGET_S so one device call is enough):
#   env     GPU, driver, torch / vLLM / transformers versions, disk and memory
#   synth   bench/synth_checkpoint.py writes the full-size NVFP4 checkpoint to $CKPT (timed)
#   verify  every shard header against the index; a few NVFP4 tensors dequantized on the GPU
#   serve   plain `vllm serve $CKPT` (no spark-tui involved): health, one completion, 8 parallel
#           requests, /metrics, the backend / KV-cache lines of the log; then the server is stopped
# spark-tui's own stages (probe, plan, launch, bench vs vLLM defaults, MTP on/off, KV-cache checks) are run
# by bench/gpu_visit.sh, which calls this script for `synth verify`; see bench/GPU_VISIT.md.
# Choose stages with STAGES="env synth verify serve" (default: all, in that order). A second call
# on the same (still warm) machine skips synth when $CKPT is complete ($CKPT.done exists).
set -u -o pipefail

: "${OUT:?set OUT to the folder that comes back from the device machine}"
REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
PY=${PY:-python3}
CKPT=${CKPT:-/tmp/ckpt}
FORMAT=${FORMAT:-nvfp4}              # nvfp4 | bf16 (bf16 needs LAYERS: 72 GB at full depth)
SCALE=${SCALE:-full}                 # full | tiny (tiny: to try this script without a GPU)
LAYERS=${LAYERS:-}                   # empty: all 40 decoder layers
BUDGET_S=${BUDGET_S:-470}            # whole run, seconds (a device call allows 600)
STAGES=${STAGES:-"env synth verify serve"}
PORT=${PORT:-8011}
MAX_LEN=${MAX_LEN:-8192}
SERVE_WAIT_S=${SERVE_WAIT_S:-330}
SERVE_ARGS=${SERVE_ARGS:-"--language-model-only --max-model-len $MAX_LEN --gpu-memory-utilization 0.85 --speculative-config {\"method\":\"mtp\",\"num_speculative_tokens\":1,\"moe_backend\":\"triton\"}"}
if [ -z "${VLLM_CMD:-}" ]; then
  if command -v vllm >/dev/null; then VLLM_CMD=vllm; else VLLM_CMD="$PY -m vllm.entrypoints.cli.main"; fi
fi

mkdir -p "$OUT"
export VLLM_CMD OUT REPO PY CKPT FORMAT SCALE LAYERS PORT MAX_LEN SERVE_WAIT_S SERVE_ARGS
export VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
T0=$(date +%s)
printf 'stage\trc\tseconds\tstarted\n' > "$OUT/stages.tsv"

left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }

# stage NAME LIMIT_S COMMAND: run COMMAND (bash -c) under min(LIMIT_S, what the budget has left)
stage() {
  local name=$1 limit=$2 cmd=$3 rem start rc secs
  rem=$(left)
  if (( rem < 15 )); then
    printf '%s\tskipped\t0\t-\n' "$name" >> "$OUT/stages.tsv"; echo "== $name: skipped (budget spent)"; return 0
  fi
  (( limit > rem - 5 )) && limit=$(( rem - 5 ))
  start=$(date +%s); echo "== $name (limit ${limit}s) $(date -u +%T)"
  timeout -k 10 "$limit" bash -c "$cmd" > "$OUT/$name.log" 2>&1; rc=$?
  secs=$(( $(date +%s) - start ))
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$secs" "$(date -u -d @"$start" +%T)" >> "$OUT/stages.tsv"
  echo "   rc=$rc ${secs}s"; tail -n 5 "$OUT/$name.log" | sed 's/^/   | /'
}

stage_env='
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv
nproc; free -g; df -h /tmp
$PY - <<"EOF"
import importlib, sys
print("python", sys.version.split()[0])
for m in ("torch", "vllm", "transformers", "safetensors", "numpy"):
    try:
        print(m, importlib.import_module(m).__version__)
    except Exception as e:
        print(m, "MISSING", type(e).__name__, e)
import torch
print("cuda", torch.version.cuda, "capability", torch.cuda.get_device_capability(0), torch.cuda.get_device_name(0))
EOF'

stage_synth='
if [ -e "$CKPT.done" ]; then echo "complete checkpoint already at $CKPT"; cat "$OUT/synth.json" 2>/dev/null; exit 0; fi
rm -rf "$CKPT"
$PY "$REPO/bench/synth_checkpoint.py" --format "$FORMAT" --scale "$SCALE" ${LAYERS:+--layers $LAYERS} --out "$CKPT" --json | tee "$OUT/synth.json"
rc=${PIPESTATUS[0]}
[ "$rc" = 0 ] && touch "$CKPT.done" && du -sb "$CKPT"
exit "$rc"'

stage_verify='
$PY - <<"EOF"
import json, os, struct, sys, time
sys.path.insert(0, os.path.join(os.environ["REPO"], "bench"))
import numpy as np, torch
import synth_checkpoint as sc
ck = os.environ["CKPT"]
t0 = time.time()
idx = json.load(open(f"{ck}/model.safetensors.index.json"))
seen, total = {}, 0
for f in sorted(set(idx["weight_map"].values())):
    with open(f"{ck}/{f}", "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        hdr = json.loads(fh.read(n)); hdr.pop("__metadata__", None)
        size = os.path.getsize(f"{ck}/{f}")
    for k, v in hdr.items():
        seen[k] = f; total += v["data_offsets"][1] - v["data_offsets"][0]
    assert size == 8 + n + max(v["data_offsets"][1] for v in hdr.values()), f
assert seen == idx["weight_map"], "index and shard headers disagree"
assert total == idx["metadata"]["total_size"]
print(f"{len(seen)} tensors, {total} bytes, headers ok in {time.time()-t0:.1f}s")
from safetensors import safe_open
names = [k for k in seen if k.endswith(".weight_scale")][:3]
dev = "cuda" if torch.cuda.is_available() else "cpu"
for m in names:
    with safe_open(f"{ck}/{seen[m]}", "pt", device=dev) as fh:
        w, s = fh.get_tensor(m[:-6]), fh.get_tensor(m)
        s2 = fh.get_tensor(m + "_2")
    deq = sc.dequantize_nvfp4(w.cpu().numpy(), s.view(torch.uint8).cpu().numpy(), float(s2))
    print(m[:-13], tuple(w.shape), w.dtype, s.dtype, "dequant std %.4f finite %s" % (deq.std(), np.isfinite(deq).all()))
EOF'

stage_serve='
LOG="$OUT/serve_vllm.log"
set -x
setsid $VLLM_CMD serve "$CKPT" --host 127.0.0.1 --port "$PORT" $SERVE_ARGS > "$LOG" 2>&1 &
PID=$!
set +x
echo "$PID" > "$OUT/serve.pid"
trap "kill -TERM -- -$PID 2>/dev/null; sleep 5; kill -KILL -- -$PID 2>/dev/null" EXIT
up=0
for i in $(seq 1 "$SERVE_WAIT_S"); do
  if curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; then up=1; echo "healthy after ${i}s"; break; fi
  kill -0 $PID 2>/dev/null || { echo "vllm serve exited"; break; }
  sleep 1
done
grep -E "Resolved architecture|NvFp4 MoE backend|MoE backend|NVFP4 GEMM|attention backend|Loading weights took|Model loading took|Available KV cache memory|KV cache size|Graph capturing finished|init engine|Error|error:" "$LOG" | cut -c1-400 > "$OUT/serve_summary.txt"
cat "$OUT/serve_summary.txt"
[ "$up" = 1 ] || exit 1
$PY - <<"EOF"
import json, os, time, threading, urllib.request
url = "http://127.0.0.1:%s" % os.environ["PORT"]
def post(body):
    req = urllib.request.Request(url + "/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=120))
model = json.load(urllib.request.urlopen(url + "/v1/models"))["data"][0]["id"]
t = time.time(); r = post({"model": model, "prompt": "def main(argv):\n    parser =", "max_tokens": 128, "temperature": 0, "ignore_eos": True})
dt = time.time() - t
print("single: %d tokens in %.2fs = %.1f tok/s" % (r["usage"]["completion_tokens"], dt, r["usage"]["completion_tokens"] / dt))
res = []
def one(i):
    res.append(post({"model": model, "prompt": "request %d: the quick brown fox" % i, "max_tokens": 256, "temperature": 0, "ignore_eos": True}))
th = [threading.Thread(target=one, args=(i,)) for i in range(8)]
t = time.time(); [x.start() for x in th]; [x.join() for x in th]; dt = time.time() - t
n = sum(x["usage"]["completion_tokens"] for x in res)
print("8 parallel: %d tokens in %.2fs = %.1f tok/s" % (n, dt, n / dt))
json.dump({"model": model}, open(os.environ["OUT"] + "/serve_result.json", "w"))
EOF
curl -s "http://127.0.0.1:$PORT/metrics" > "$OUT/serve_metrics.txt"
grep -E "^vllm:(generation_tokens_total|spec_decode_num_(draft|accepted)_tokens_total|kv_cache_usage_perc)" "$OUT/serve_metrics.txt"'

for s in $STAGES; do
  case $s in
    env) stage env 60 "$stage_env" ;;
    synth) stage synth 300 "$stage_synth" ;;
    verify) stage verify 90 "$stage_verify" ;;
    serve) stage serve $(( SERVE_WAIT_S + 120 )) "$stage_serve" ;;
    *) echo "unknown stage $s"; printf '%s\tunknown\t0\t-\n' "$s" >> "$OUT/stages.tsv" ;;
  esac
done
# the serve stage stops its server itself; if a timeout cut it short, stop the group here
if [ -s "$OUT/serve.pid" ] && kill -0 "$(cat "$OUT/serve.pid")" 2>/dev/null; then
  kill -TERM -- "-$(cat "$OUT/serve.pid")" 2>/dev/null; sleep 5; kill -KILL -- "-$(cat "$OUT/serve.pid")" 2>/dev/null
fi
echo "== done in $(( $(date +%s) - T0 ))s"; cat "$OUT/stages.tsv"
