"""The Run step goes through the launch sequence of `spark-tui launch` (spark_tui.core.runtime.launch): the preflight
notes are shown (in the log, as `launch` prints them), then the startup, then the check against the plan. The server
is the fake vLLM (tests/support/fake_vllm.py): a real process replaying a recorded real vLLM 0.32.0 startup."""

from __future__ import annotations

import socket
import time

from textual.widgets import Static

from spark_tui.ui.app import SparkApp
from tests.support.fake_vllm import tiny_model, write_fake_vllm
from tests.ui.conftest import load_probe, plain


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _until(pilot, cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        await pilot.pause(0.1)
        if cond():
            return True
    return False


async def test_run_shows_the_preflight_notes_the_startup_and_the_plan_check(tmp_path, monkeypatch):
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    monkeypatch.setenv("SPARK_TUI_VLLM", str(write_fake_vllm(tmp_path / "vllm")))
    model = tiny_model(tmp_path / "tiny")
    app = SparkApp(probe=load_probe("gb10"), live_probe=False)
    async with app.run_test(size=(120, 40)) as pilot:
        app.overrides = {"model_path": str(model), "set_flags": [f"--port={_free_port()}"]}
        app.target_device = "cpu-test"
        assert await _until(pilot, lambda: app.plan is not None and app.plan.device.id == "cpu-test"
                            and app.plan.model == str(model), 60), app.plan_error
        await pilot.press("5", "l")
        assert await _until(pilot, lambda: app.server_state in ("ready", "failed"), 60), app.server_state
        scr = app.screen
        assert app.server_state == "ready", plain(scr.query_one("#run-status", Static))
        # the preflight's notes, first in the log (before vLLM's own lines): cpu-test shares the host's memory
        assert scr.lines[0].startswith("[spark-tui] memory: MemAvailable "), list(scr.lines)[:3]
        assert scr.lines[1].startswith(f"[spark-tui] checkpoint: {model} complete, bf16"), list(scr.lines)[:3]
        assert any("Application startup complete" in ln for ln in scr.lines)
        assert await _until(pilot, lambda: "vs plan" in plain(scr.query_one("#run-diagnosis", Static)), 60)
        assert "KV cache:" in plain(scr.query_one("#run-diagnosis", Static))  # logged vs predicted
        await pilot.press("s")
        assert await _until(pilot, lambda: app.server_state == "stopped", 30), app.server_state
        assert not app.server_alive()
