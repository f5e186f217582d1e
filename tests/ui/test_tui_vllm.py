"""The Run and Dashboard screens against a real CPU vLLM 0.32 serving the tiny generated models.

- Dashboard: the session server (always-accept MTP model, k=1) under a small load: tok/s, MTP acceptance.
- Run: the TUI launches vLLM itself (device profile cpu-test): a too-long --max-model-len fails, the
  diagnosis offers the fix, `f` applies it and relaunches; then quitting asks, "keep" leaves the server
  running and `spark-tui stop PID` (what the app tells the user) ends it. A second start checks
  "stop and quit" leaves nothing behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from textual.widgets import Sparkline, Static

from spark_tui.ui.app import SparkApp
from tests.support.vllm_server import free_port, mtp_config
from tests.ui.conftest import load_probe, plain

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).resolve().parents[2]


def _complete(url: str, model: str, n: int, max_tokens: int = 48) -> None:
    import httpx

    with httpx.Client(timeout=120) as c:
        for i in range(n):
            r = c.post(url + "/v1/completions", json={"model": model, "prompt": f"def f{i}(x):", "max_tokens": max_tokens,
                                                      "temperature": 0, "ignore_eos": True})
            r.raise_for_status()


async def _until(pilot, cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        await pilot.pause(0.2)
        if cond():
            return True
    return False


async def test_dashboard_live_from_a_real_vllm_with_mtp(vllm_server_factory, tiny_qwen35_mtp_accept):
    import httpx

    h = vllm_server_factory(tiny_qwen35_mtp_accept, mtp_config(1))
    model = httpx.get(h.url + "/v1/models", timeout=10).json()["data"][0]["id"]
    app = SparkApp(url=h.url, probe=load_probe("gb10"), live_probe=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6")
        load = threading.Thread(target=_complete, args=(h.url, model, 6), daemon=True)
        load.start()
        scr = app.screen

        def mtp_seen() -> bool:
            t = plain(scr.query_one("#dash-mtp", Static))
            return "MTP acceptance" in t and "n/a" not in t.splitlines()[0]

        assert await _until(pilot, mtp_seen, 180), plain(scr.query_one("#dash-status", Static))
        load.join(timeout=180)
        mtp = plain(scr.query_one("#dash-mtp", Static))
        rate = float(mtp.split("MTP acceptance ")[1].split("%")[0])
        assert rate > 50.0  # the always-accept model (~93% at k=1)
        assert "pos 0" in mtp
        assert any(v > 0 for v in scr.query_one("#spark-gen", Sparkline).data)
        assert "watching " + h.url in plain(scr.query_one("#dash-status", Static))
        assert "ms" in plain(scr.query_one("#dash-latency", Static))  # TTFT/ITL quantiles from histograms
        app.workers.cancel_all()


@pytest.fixture
def vllm_for_tui(vllm_env, tmp_path, monkeypatch):
    from tests.support.vllm_env import vllm_bin

    monkeypatch.setenv("SPARK_TUI_VLLM", str(vllm_bin()))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VLLM_NO_USAGE_STATS", "1")
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "vllm-cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _app_for(model: Path, port: int, extra: list[str]) -> SparkApp:
    app = SparkApp(probe=load_probe("gb10"), live_probe=False)
    app._test_overrides = {"model_path": str(model), "set_flags": [f"--port={port}", *extra]}
    return app


async def _choose_cpu_test(app, pilot) -> None:
    app.overrides = app._test_overrides
    app.target_device = "cpu-test"
    assert await _until(pilot, lambda: app.plan is not None and app.plan.device.id == "cpu-test", 30), app.plan_error


async def test_run_fail_diagnose_fix_relaunch_then_keep_on_quit(vllm_for_tui, tiny_qwen35_mtp_accept):
    port = free_port()
    app = _app_for(tiny_qwen35_mtp_accept, port, ["--max-model-len=4096"])  # the model was built for 2048
    pid = None
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await _choose_cpu_test(app, pilot)
            await pilot.press("5", "l")
            scr = app.screen
            diag = scr.query_one("#run-diagnosis", Static)
            assert await _until(pilot, lambda: "max_model_len_above_model" in plain(diag), 240), \
                plain(scr.query_one("#run-status", Static))
            assert "--max-model-len 2048" in plain(diag)  # the one-key fix it offers
            assert app.server_state == "failed" and not app.server_alive()
            await pilot.press("f")
            assert await _until(pilot, lambda: app.server_state == "ready", 300), \
                plain(scr.query_one("#run-status", Static))
            assert app.plan.flag("--max-model-len").value == 2048  # typed: the flag model holds an int
            assert app.server_url == f"http://127.0.0.1:{port}"
            phases = plain(scr.query_one("#run-phases", Static))
            assert "✓" in phases and "server ready" in phases
            pid = app.supervisor.proc.pid
            # the log is searchable
            await pilot.press("slash")
            await pilot.press(*"kv cache", "enter")
            await pilot.pause()
            log = scr.query_one("#run-log")
            assert log.line_count >= 1 and all("kv cache" in ln.lower() for ln in log.lines)
            # quit: asked; cancel keeps the app; keep leaves the server running
            await pilot.press("q")
            await pilot.pause()
            assert type(app.screen).__name__ == "QuitModal"
            await pilot.press("escape")
            await pilot.pause()
            assert type(app.screen).__name__ == "RunScreen"
            await pilot.press("q")
            await pilot.pause()
            await pilot.press("k")
            await pilot.pause()
        assert app.kept_server is not None and app.kept_server.pid == pid
        assert psutil.pid_exists(pid)
        # what the app tells the user: `spark-tui stop PID`
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        p = subprocess.run([sys.executable, "-m", "spark_tui", "stop", str(pid)], capture_output=True, text=True,
                           env=env, timeout=60)
        assert p.returncode == 0, p.stderr
        end = time.monotonic() + 20
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE \
                and time.monotonic() < end:
            time.sleep(0.2)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    finally:
        if pid is not None and psutil.pid_exists(pid):
            os.killpg(pid, 9)


async def test_run_launch_then_stop_and_quit_leaves_nothing(vllm_for_tui, tiny_qwen35_mtp_accept):
    port = free_port()
    app = _app_for(tiny_qwen35_mtp_accept, port, [])
    pid = None
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await _choose_cpu_test(app, pilot)
            await pilot.press("5", "l")
            assert await _until(pilot, lambda: app.server_state == "ready", 300), \
                plain(app.screen.query_one("#run-status", Static))
            pid = app.supervisor.proc.pid
            children = psutil.Process(pid).children(recursive=True)
            await pilot.press("q")
            await pilot.pause()
            await pilot.press("s")
            assert await _until(pilot, lambda: not app.is_running, 60) or not app.is_running
        assert app.kept_server is None
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        time.sleep(1)
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        state = Path(os.environ["SPARK_TUI_HOME"]) / "state" / "servers"
        assert not list(state.glob("*.json"))  # no record of a running server left
    finally:
        if pid is not None and psutil.pid_exists(pid):
            try:
                os.killpg(pid, 9)
            except ProcessLookupError:
                pass
