"""Issue #14 item 12: the terminal is restored when the TUI gets SIGTERM (or SIGHUP), in a real terminal
(tmux, 80x24): the alternate screen is left, the cursor is shown, mouse reporting is off and the tty is back
in canonical mode with echo, and a server it started is still stopped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from tests.ui.test_tmux import capture, wait_for

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "tests" / "data" / "probes" / "gb10" / "probe.json"


def _display(session: str, fmt: str) -> str:
    return subprocess.run(["tmux", "display", "-p", "-t", session, fmt], capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_sigterm_restores_the_terminal(tmp_path, sig):
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is not installed (CI must install it: apt-get install -y tmux)")
        pytest.skip("tmux is not installed")
    name = f"spark-tui-term-{uuid.uuid4().hex[:8]}"
    cmd = (f"cd {ROOT} && env SPARK_TUI_PROBE_FILE={PROBE} SPARK_TUI_HOME={tmp_path / 'home'} PYTHONPATH={ROOT} "
           f"TERM=xterm-256color {sys.executable} -m spark_tui; echo \"rc=$?\"; stty -a | tr ' ;' '\\n\\n' "
           f"| grep -x -e '-\\?icanon' -e '-\\?echo'; sleep 60")
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "80", "-y", "24", cmd], check=True)
    try:
        wait_for(name, "1 Device", "GPU 0: NVIDIA GB10")
        assert _display(name, "#{alternate_on}") == "1"  # the app is on the alternate screen
        shell = psutil.Process(int(_display(name, "#{pane_pid}")))
        app = next(p for p in shell.children(recursive=True) if "spark_tui" in " ".join(p.cmdline()))
        os.kill(app.pid, sig)
        pane = wait_for(name, "rc=", timeout=20)
        assert f"rc={128 + sig}" in pane, pane
        end = time.monotonic() + 5
        while "echo" not in capture(name) and time.monotonic() < end:
            time.sleep(0.1)
        pane = capture(name)
        lines = pane.split()
        assert "icanon" in lines and "echo" in lines, pane  # not -icanon / -echo: the tty mode is back
        assert _display(name, "#{alternate_on}") == "0", "still on the alternate screen"
        assert _display(name, "#{cursor_flag}") == "1", "the cursor is still hidden"
        assert _display(name, "#{mouse_any_flag}") == "0" and _display(name, "#{mouse_all_flag}") == "0"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
