"""The Run screen shows the memory guard's warnings and its stop diagnosis (events as the guard thread posts them;
the guard itself is tested in tests/unit/test_memguard.py and against a real vLLM in tests/e2e)."""

from __future__ import annotations

from textual.widgets import Static

from spark_tui.core.hardware import memguard as mg
from spark_tui.ui.app import SparkApp
from spark_tui.core.runtime.launch import default_guard
from spark_tui.ui.messages import GuardAlert
from tests.ui.conftest import load_probe, plain

GiB = 2**30


def _verdict(level: str, avail_gib: float, *reasons: str) -> mg.Verdict:
    s = mg.MemSample(t=1.0, mem_total=int(121.69 * GiB), mem_available=int(avail_gib * GiB), psi_some_avg10=30.0,
                     psi_full_avg10=5.0)
    return mg.Verdict(level, reasons, s, rate_bytes_s=-2.5 * GiB)


async def test_guard_stop_shows_the_diagnosis_on_the_run_screen():
    app = SparkApp(probe=load_probe("gb10"), live_probe=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.press("5")
        await pilot.pause()
        scr = app.screen
        assert type(scr).__name__ == "RunScreen"
        warn = _verdict("warn", 3.5, "MemAvailable 3.5 GiB < warn 4.0 GiB")
        scr.post_message(GuardAlert(mg.GuardEvent("warn", warn, "memory guard warning: " + warn.reasons[0])))
        await pilot.pause()
        stop = _verdict("stop", 1.7, "MemAvailable 1.7 GiB < stop 2.0 GiB")
        text = mg.diagnosis(stop, phase="loading weights")
        scr.post_message(GuardAlert(mg.GuardEvent("stop", stop, text)))
        await pilot.pause()
        status = plain(scr.query_one("#run-status", Static))
        diag = plain(scr.query_one("#run-diagnosis", Static))
        assert status.startswith("memory guard stopped vLLM during loading weights")
        assert diag.startswith("memory guard") and "fix: plan a lower --gpu-memory-utilization" in diag
        assert app.server_state == "failed"


def test_the_launch_guards_unified_plans_only():
    class Plan:
        class device:
            unified_memory = False

    assert default_guard(Plan) is None
    Plan.device.unified_memory = True
    assert default_guard(Plan) == mg.GuardThresholds()
