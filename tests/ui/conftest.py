"""Fixtures for the Textual tests: recorded probes, an isolated HF cache and state dir."""

from __future__ import annotations

from pathlib import Path

import pytest

PROBES = Path(__file__).resolve().parents[1] / "data" / "probes"


def load_probe(name: str):
    """A recorded probe, with its source shown relative to the repo so screens (and snapshots) read the
    same in every checkout."""
    import dataclasses

    from spark_tui.core.hardware.probe import ProbeResult

    p = ProbeResult.load(PROBES / name / "probe.json")
    return dataclasses.replace(p, source=f"file:tests/data/probes/{name}/probe.json")


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """Servers' state files, profile overrides and the HF cache live under tmp_path (nothing of the user's)."""
    from huggingface_hub import constants

    monkeypatch.setenv("SPARK_TUI_HOME", str(tmp_path / "home"))
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    from spark_tui.core.catalog import profiles

    profiles._cached.cache_clear()
    yield tmp_path
    profiles._cached.cache_clear()


def plain(widget) -> str:
    """What a Static shows, without markup (dynamic text in the app is escaped, so compare rendered text)."""
    from rich.text import Text

    c = widget.content
    return c.plain if isinstance(c, Text) else Text.from_markup(str(c)).plain
