"""Start and stop a real CPU `vllm serve` on 127.0.0.1 (used by tests/conftest.py and bench/ scripts).

Flags and environment follow /work/shared/cpu-vllm/README.md: `--max-model-len 512 --enforce-eager
--kv-cache-memory-bytes 16M` (without the last, vLLM reserves 92% of RAM and refuses to start),
VLLM_HOST_IP=127.0.0.1 (else the internal queue binds the external address), MTP needs
`--no-enable-prefix-caching` on CPU. Start to /health = 200 takes ~25-40 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

from tests.support.vllm_env import vllm_bin

START_TIMEOUT_S = 180.0


class ServerHandle(NamedTuple):
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen
    log_path: Path


class ServerStartError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mtp_config(k: int = 1) -> dict:
    return {"method": "mtp", "num_speculative_tokens": k}


def serve_argv(model_dir: Path, port: int, speculative_config: dict | None = None,
               extra_args: tuple[str, ...] = ()) -> list[str]:
    argv = [
        str(vllm_bin()), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", "512", "--enforce-eager", "--kv-cache-memory-bytes", "16M",
    ]
    if speculative_config is not None:
        # MTP on CPU: prefix caching makes the first request fail (Triton-only kernel)
        argv += ["--speculative-config", json.dumps(speculative_config), "--no-enable-prefix-caching"]
    return argv + list(extra_args)


def _log_tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def wait_healthy(url: str, proc: subprocess.Popen, log_path: Path, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rc = proc.poll()
        if rc is not None:
            raise ServerStartError(f"vllm serve exited with {rc} before /health; log {log_path}:\n{_log_tail(log_path)}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    raise ServerStartError(f"vllm serve not healthy after {timeout_s:.0f} s; log {log_path}:\n{_log_tail(log_path)}")


def start_server(model_dir: Path, speculative_config: dict | None = None, extra_args: tuple[str, ...] = (),
                 workdir: Path | None = None, timeout_s: float = START_TIMEOUT_S) -> ServerHandle:
    """Start `vllm serve` in its own process group and wait for /health; stops it again if that fails."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="spark-tui-vllm-"))
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / f"vllm-{Path(model_dir).name}-{port}.log"
    env = {
        **os.environ,
        "VLLM_HOST_IP": "127.0.0.1",
        "VLLM_NO_USAGE_STATS": "1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_CACHE_ROOT": str(workdir / "vllm-cache"),
        "PYTHONUNBUFFERED": "1",
    }
    argv = serve_argv(Path(model_dir), port, speculative_config, extra_args)
    with open(log_path, "wb") as log:
        log.write(("+ " + " ".join(argv) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=workdir, start_new_session=True)
    handle = ServerHandle(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        wait_healthy(handle.url, proc, log_path, timeout_s)
    except BaseException:
        stop_server(handle)
        raise
    return handle


def stop_server(handle: ServerHandle, grace_s: float = 15.0) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left after grace_s."""
    proc = handle.process
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    if pgid is not None:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    if pgid is not None:
        # children (engine core) may outlive the API server: make sure the group is gone
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
