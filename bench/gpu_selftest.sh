#!/usr/bin/env bash
# The self-test on a GPU machine, twice: torch only, then with vLLM on PYTHONPATH. Run from the repo root:
#   OUT=/some/dir bash bench/gpu_selftest.sh            (device tool: $OUT is set; reports land there)
# Env: PYTHON (default python3), VLLM_SITE (default /tmp/site: a vLLM 0.26.0 install), LABEL (default h100),
#      VLLM_VERSION (default 0.26.0, used in the file name only).
# Writes $OUT/$LABEL-torch.{json,md,txt} and $OUT/$LABEL-vllm-$VLLM_VERSION.{json,md,txt}, plus nvidia-smi.txt.
# Commit the two .json files as tests/data/kernels_check/<same name> (the format test picks them up).
# Each run is bounded by `timeout 300`; expected well under 2 minutes each on an H100.
set -u
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/selftest-out}
SITE=${VLLM_SITE:-/tmp/site}
LABEL=${LABEL:-h100}
VV=${VLLM_VERSION:-0.26.0}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

run() {  # name, extra PYTHONPATH
  local name=$1 pp=$2
  echo "== $name (PYTHONPATH=$pp)"
  PYTHONPATH="$pp" timeout 300 "$PY" -m kernels_check --json --progress --out "$OUT/$name.json" > /dev/null
  echo "exit code $?"
  PYTHONPATH="$PWD" "$PY" -m kernels_check --from "$OUT/$name.json" --markdown --out "$OUT/$name.md" > /dev/null
  PYTHONPATH="$PWD" "$PY" -m kernels_check --from "$OUT/$name.json" | tee "$OUT/$name.txt"
}

run "$LABEL-torch" "$PWD"
if [ -d "$SITE" ]; then
  run "$LABEL-vllm-$VV" "$SITE:$PWD"
else
  echo "no vLLM at $SITE: skipped the vLLM run"
fi
# the same entry through the spark-tui CLI (list only: nothing runs twice)
PYTHONPATH="$PWD" "$PY" -m spark_tui selftest --list || true
