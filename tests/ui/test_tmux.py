"""The packaged entry point in a real terminal (tmux, 80x24): first screen, switching steps, quitting.

Skipped when tmux is missing, except in CI (env CI set), where that is a failure: CI installs tmux from Debian.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "tests" / "data" / "probes" / "gb10" / "probe.json"


@pytest.fixture
def tmux():
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is not installed (CI must install it: apt-get install -y tmux)")
        pytest.skip("tmux is not installed")
    sessions = []

    def start(env: dict[str, str], tmp: Path) -> str:
        name = f"spark-tui-test-{uuid.uuid4().hex[:8]}"
        sessions.append(name)
        rc_file = tmp / f"{name}.rc"
        assigns = " ".join(f"{k}={v}" for k, v in env.items())
        cmd = (f"cd {ROOT} && env {assigns} PYTHONPATH={ROOT} TERM=xterm-256color "
               f"{sys.executable} -m spark_tui; echo $? > {rc_file}")
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "80", "-y", "24", cmd], check=True)
        return name

    yield start
    for s in sessions:
        subprocess.run(["tmux", "kill-session", "-t", s], capture_output=True)


def capture(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def wait_for(session: str, *needles: str, timeout: float = 30.0) -> str:
    end = time.monotonic() + timeout
    pane = ""
    while time.monotonic() < end:
        pane = capture(session)
        if all(n in pane for n in needles):
            return pane
        time.sleep(0.2)
    raise AssertionError(f"{needles} not on screen after {timeout} s:\n{pane}")


def send(session: str, key: str) -> None:
    subprocess.run(["tmux", "send-keys", "-t", session, key], check=True)


def alive(session: str) -> bool:
    return subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode == 0


def test_recorded_gb10_device_plan_dashboard_and_quit(tmux, tmp_path):
    s = tmux({"SPARK_TUI_PROBE_FILE": str(PROBE), "SPARK_TUI_HOME": str(tmp_path / "home")}, tmp_path)
    pane = wait_for(s, "1 Device", "GPU 0: NVIDIA GB10", "native NVFP4")
    assert "unified with the CPU" in pane
    send(s, "3")
    pane = wait_for(s, "predicted KV cache", "--gpu-memory-utilization")
    assert "weights" in pane and "headroom" in pane
    send(s, "6")
    wait_for(s, "No server to watch")
    send(s, "q")
    end = time.monotonic() + 15
    while alive(s) and time.monotonic() < end:
        time.sleep(0.2)
    assert not alive(s), "the app did not quit on q"
    assert (tmp_path / f"{s}.rc").read_text().strip() == "0"


def test_this_machine_for_real(tmux, tmp_path):
    """No probe file: the real probe of this machine (no GPU here: the no-GPU path and the target picker)."""
    s = tmux({"SPARK_TUI_HOME": str(tmp_path / "home")}, tmp_path)
    pane = wait_for(s, "1 Device", "host:")
    assert "No GPU here" in pane or "GPU 0:" in pane
    if "No GPU here" in pane:
        assert "Plan for device profile" in pane
    send(s, "q")
    end = time.monotonic() + 15
    while alive(s) and time.monotonic() < end:
        time.sleep(0.2)
    assert not alive(s)
