"""`spark-tui launch` with a real CPU vLLM serving a tiny model; no vLLM survives spark-tui's death.

Four vLLM starts in all (~30 s each on 2 cores): attached + SIGTERM (also: requests, phases, KV check),
attached + SIGHUP, attached + SIGKILL, detached + `spark-tui stop`.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 240


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Launch:
    """`spark-tui launch` in its own session, its stdout read line by line into a queue."""

    def __init__(self, model: Path, home: Path, vllm_env: Path, *extra: str) -> None:
        from tests.support.vllm_env import vllm_bin

        self.port = _free_port()
        env = {**os.environ, "SPARK_TUI_HOME": str(home), "SPARK_TUI_VLLM": str(vllm_bin()),
               "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
               "VLLM_CACHE_ROOT": str(home / "vllm-cache"), "PYTHONUNBUFFERED": "1"}
        self.argv = [sys.executable, "-m", "spark_tui", "launch", "--device", "cpu-test", "--model-path", str(model),
                     "--port", str(self.port), "--startup-timeout", str(READY_TIMEOUT), "--stats-interval", "2", *extra]
        self.p = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                  start_new_session=True, cwd=home)
        self.lines: list[str] = []
        self.q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.server_pid: int | None = None

    def _read(self) -> None:
        for line in self.p.stdout:
            self.q.put(line.rstrip("\n"))
        self.q.put(None)

    def until(self, pred, timeout: float) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.q.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError("spark-tui exited early:\n" + "\n".join(self.lines[-40:]))
            self.lines.append(line)
            if line.startswith("vLLM starting: pid "):
                self.server_pid = int(line.split()[3].rstrip(","))
            if pred(line):
                return line
        raise AssertionError(f"timed out after {timeout} s:\n" + "\n".join(self.lines[-40:]))

    def drain(self, timeout: float = 5) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.q.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                return
            self.lines.append(line)

    def kill_all(self) -> None:  # test cleanup only: our own processes, by id
        for pid in filter(None, (self.server_pid, self.p.pid)):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _group(pgid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass
    return out


def _wait_gone(pgid: int, timeout: float = 30) -> list[psutil.Process]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        left = _group(pgid)
        if not left:
            return []
        time.sleep(0.2)
    return _group(pgid)


def _complete(port: int) -> dict:
    import httpx

    models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()["data"]
    r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=60,
                   json={"model": models[0]["id"], "prompt": "def hello world", "max_tokens": 8})
    r.raise_for_status()
    return r.json()


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_launch_serves_and_leaves_no_orphan(sig, vllm_env, tiny_qwen3_moe, tmp_path):
    run = Launch(tiny_qwen3_moe, tmp_path, vllm_env)
    try:
        run.until(lambda ln: ln.startswith("ready in"), READY_TIMEOUT + 30)
        assert run.server_pid is not None
        pgid = run.server_pid  # the server leads its own process group
        assert len(_group(pgid)) >= 2  # API server + engine core
        if sig == signal.SIGTERM:  # the full check once: phases, plan verification, requests, stats
            kv = run.until(lambda ln: ln.startswith("KV cache: "), 30)  # printed right after "ready in"
            out = "\n".join(run.lines)
            assert "ok configuration resolved" in out and "ok KV cache allocated" in out, out
            # the cpu-test plan predicts vLLM's KV cache exactly (16 MiB of KV, block 128): 0% error
            assert "plan predicted" in kv and "(+0.0%)" in kv, kv
            assert "MISMATCH" not in out
            res = _complete(run.port)
            assert res["usage"]["completion_tokens"] > 0
            run.until(lambda ln: ln.startswith("running ") and "total generated" in ln, 30)
        os.kill(run.p.pid, sig)
        run.p.wait(timeout=60)
        left = _wait_gone(pgid, timeout=40)
        assert not left, f"vLLM processes survived {sig!r}: {[(p.pid, p.name()) for p in left]}"
        if sig != signal.SIGKILL:
            assert run.p.returncode == 128 + sig
        assert not list((tmp_path / "state" / "servers").glob("*.json")) or _wait_gone(pgid, 0) == []
    finally:
        run.kill_all()


@pytest.mark.vllm
@pytest.mark.slow
def test_detached_launch_then_stop(vllm_env, tiny_qwen3_moe, tmp_path):
    run = Launch(tiny_qwen3_moe, tmp_path, vllm_env, "--detach")
    try:
        run.until(lambda ln: ln.startswith("detached: pid"), READY_TIMEOUT + 30)
        assert run.p.wait(timeout=30) == 0
        pgid = run.server_pid
        time.sleep(2)  # spark-tui is gone; the server must still serve
        assert _complete(run.port)["usage"]["completion_tokens"] > 0
        env = {**os.environ, "SPARK_TUI_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
        listed = subprocess.run([sys.executable, "-m", "spark_tui", "stop", "--list"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert f"pid {pgid}" in listed.stdout and "detached" in listed.stdout
        out = subprocess.run([sys.executable, "-m", "spark_tui", "stop"], env=env, capture_output=True, text=True,
                             timeout=90)
        assert out.returncode == 0, out.stderr
        assert "stopped" in out.stdout
        assert not _wait_gone(pgid, timeout=30)
    finally:
        run.kill_all()
