"""Snapshots of every screen at 80x24 and 120x40 (pytest-textual-snapshot). Deterministic: a recorded probe
(GB10), the plan it gives, an empty HF cache, no live data, no server. Review the SVGs by eye before
`--snapshot-update` (tests/ui/__snapshots__/)."""

from __future__ import annotations

import pytest

from spark_tui.ui.app import SparkApp
from spark_tui.ui.screens.base import STEPS
from tests.ui.conftest import load_probe


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("key,mode", [(k, m) for m, k, _ in STEPS], ids=[m for m, _, _ in STEPS])
def test_screen_snapshot(snap_compare, key, mode, size):
    app = SparkApp(probe=load_probe("gb10"), live_probe=False)

    async def ready(pilot):
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.press(key)
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.current_mode == mode

    assert snap_compare(app, terminal_size=size, run_before=ready)
