"""GPU check of the memory model (for the lead's H100 visit; skipped without CUDA).

On a CUDA machine with vLLM importable (e.g. the H100 with vLLM 0.26.0, /work/shared/gpu/README.md):

    PYTHONPATH=/tmp/site:. python3 -m pytest -p no:cacheprovider tests/e2e/test_plan_check_gpu.py -q -s

It generates the tiny models (tests/support/gen_tiny_models.py, with this python), starts `vllm serve` for
three memory configurations (FP8 and BF16 KV, MTP k=1/3, prefix caching on/off), reads vLLM's own
"KV cache size" / "Maximum concurrency" / "Setting attention block size" lines and compares them with
spark_tui.core.planning.memory's prediction for the GPU block alignment (FLASH_ATTN / FLASHINFER: 16). Each log is
copied to $OUT (or /tmp) so the figures can be kept.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spark_tui.core.planning import memory as mem
from spark_tui.core.catalog import vllm_compat as compat

ROOT = Path(__file__).resolve().parents[2]
KV_LINE = re.compile(r"KV cache size: ([\d,]+) tokens")
CONC_LINE = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")
BLOCK_LINE = re.compile(r"Setting attention block size to (\d+) tokens")
POOL = 64 * 2**20
MAX_LEN = 2048


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


pytestmark = [pytest.mark.vllm, pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU and vLLM")]

CONFIGS = [  # (model, kv dtype, mtp k, prefix caching)
    ("qwen3-moe", "auto", 0, True),
    ("qwen35-mtp", "fp8", 1, True),
    ("qwen35-mtp", "auto", 3, False),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    subprocess.run([sys.executable, str(ROOT / "tests" / "support" / "gen_tiny_models.py"), str(out)], check=True,
                   timeout=900, env={**os.environ, "PYTHONHASHSEED": "0"})
    return out


def _serve_log(model_dir: Path, args: list[str], log: Path, timeout_s: float = 540) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", str(model_dir), "--host", "127.0.0.1",
            "--port", str(port), *args]
    env = {**os.environ, "VLLM_HOST_IP": "127.0.0.1", "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"}
    with open(log, "wb") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if CONC_LINE.search(text) or proc.poll() is not None:
                return text
            time.sleep(1)
        return log.read_text(errors="replace")
    finally:
        try:
            os.killpg(os.getpgid(proc.pid), signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)


@pytest.mark.parametrize("model,kv,k,pc", CONFIGS)
def test_gpu_kv_prediction(models, model, kv, k, pc) -> None:
    model_dir = models / model
    arch = mem.Arch.from_config(json.loads((model_dir / "config.json").read_text()))
    version = compat.installed_vllm_version()
    lay = mem.kv_layout(arch, 1 if kv == "fp8" else arch.model_dtype_bytes, k, pc, 16, 16,
                        compat.gdn_checkpoint_blocks(version))
    blocks, per_req, conc, tokens = mem.capacity(lay, POOL, MAX_LEN, compat.kv_tokens_legacy(version))
    args = ["--max-model-len", str(MAX_LEN), "--enforce-eager", "--kv-cache-memory-bytes", str(POOL),
            "--kv-cache-dtype", kv, "--enable-prefix-caching" if pc else "--no-enable-prefix-caching"]
    if k:
        args += ["--speculative-config", json.dumps({"method": "mtp", "num_speculative_tokens": k})]
    out = Path(os.environ.get("OUT", "/tmp"))
    log = out / f"plan-kv-{model}-{kv}-k{k}-pc{int(pc)}.log"
    text = _serve_log(model_dir, args, log)
    got_kv, got_conc = KV_LINE.search(text), CONC_LINE.search(text)
    assert got_kv and got_conc, f"no KV lines in {log}:\n{text[-3000:]}"
    print(f"\n{model} kv={kv} k={k} pc={pc}: vLLM {version}: {got_kv.group(0)}; {got_conc.group(0)} | predicted "
          f"{tokens:,} tokens, {conc:.2f}x, block {lay.block_size}")
    if (b := BLOCK_LINE.search(text)) is not None:
        assert int(b.group(1)) == lay.block_size
    assert int(got_kv.group(1).replace(",", "")) == tokens
    assert float(got_conc.group(2)) == round(conc, 2)
