"""Per-user directories (platformdirs), overridable with SPARK_TUI_HOME for tests and sandboxes."""

from __future__ import annotations

import os
from pathlib import Path

APP = "spark-tui"


def _base(kind: str) -> Path:
    home = os.environ.get("SPARK_TUI_HOME")
    if home:
        return Path(home) / kind
    import platformdirs

    fn = {
        "config": platformdirs.user_config_dir,
        "state": platformdirs.user_state_dir,
        "data": platformdirs.user_data_dir,
        "cache": platformdirs.user_cache_dir,
    }[kind]
    return Path(fn(APP))


def config_dir() -> Path:
    """User overrides: <config>/profiles/devices/*.toml, <config>/profiles/checkpoints/*.toml."""
    return _base("config")


def state_dir() -> Path:
    """Server logs, pid files of launched servers."""
    return _base("state")


def data_dir() -> Path:
    """Bench results, tune results."""
    return _base("data")


def cache_dir() -> Path:
    return _base("cache")


def safe_filename(s: str) -> str:
    """A file-name-safe form of s: letters, digits, '.', '_' and '-' kept, anything else '_'."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in s)
