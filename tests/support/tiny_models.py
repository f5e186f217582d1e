"""Tiny, deterministic models for the real CPU vLLM, generated once and cached.

The generator (gen_tiny_models.py) runs with the vLLM venv's python (torch/transformers/tokenizers live
there, not in the project's test env). The cache key is a hash of the generator script, so editing it
regenerates; an unchanged script makes this instant. Override the cache root with SPARK_TUI_TINY_MODELS.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.support.vllm_env import vllm_python

GENERATOR = Path(__file__).with_name("gen_tiny_models.py")
NAMES = ("qwen3-moe", "qwen35-mtp", "qwen35-mtp-accept")
DONE = ".complete"


def cache_root() -> Path:
    override = os.environ.get("SPARK_TUI_TINY_MODELS")
    return Path(override).expanduser() if override else Path.home() / ".cache" / "spark-tui" / "tiny-models"


def generator_hash() -> str:
    return hashlib.sha256(GENERATOR.read_bytes()).hexdigest()[:16]


def ensure_tiny_models() -> Path:
    """Directory holding one sub-directory per model in NAMES (generated on first use)."""
    root = cache_root()
    out = root / generator_hash()
    if (out / DONE).exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (out / DONE).exists():
                return out
            tmp = root / f"{out.name}.tmp{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"[tiny-models] generating into {out}", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            subprocess.run([str(vllm_python()), str(GENERATOR), str(tmp)], check=True, timeout=900,
                           stdout=sys.stderr, stderr=sys.stderr, env={**os.environ, "PYTHONHASHSEED": "0"})
            (tmp / DONE).write_text(generator_hash() + "\n")
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
            print(f"[tiny-models] done in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
            return out
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def tiny_model(name: str) -> Path:
    if name not in NAMES:
        raise ValueError(f"unknown tiny model {name!r}; one of {NAMES}")
    return ensure_tiny_models() / name


if __name__ == "__main__":
    print(ensure_tiny_models())
