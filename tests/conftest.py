"""Shared fixtures: the real CPU vLLM (venv, tiny models, servers).

Everything vLLM-related is session-scoped and lazily created, so `pytest -m "not vllm"` never builds or
starts anything. Tests using these fixtures should carry `@pytest.mark.vllm`; one that forgets gets the
marker added at collection, so `-m "not vllm"` still skips it.

`vllm_server_factory(model_dir, speculative_config=None, extra_args=())` returns a ServerHandle
(url, process, log_path). Servers are shared: the same arguments give the same running server for the
whole session. At most SPARK_TUI_TEST_MAX_SERVERS (default 2) run at once; asking for another stops the
least recently used one. All are stopped at session end (SIGTERM to the process group, then SIGKILL).
"""

from __future__ import annotations

import json
import os
import sys
from collections import OrderedDict
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # `tests.support` importable with plain `pytest` too
    sys.path.insert(0, str(_ROOT))

from tests.support import vllm_server  # noqa: E402
from tests.support.vllm_server import ServerHandle, mtp_config  # noqa: E402,F401

@pytest.fixture(scope="session", autouse=True)
def _session_home(tmp_path_factory):
    """SPARK_TUI_HOME for the whole session (module- and session-scoped fixtures run before the per-test one below):
    no test, and no fixture, reads or writes the user's real config, state or data (a tune result in the user's config
    dir changes the plans)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARK_TUI_HOME", str(tmp_path_factory.mktemp("spark-tui-home")))
        yield


@pytest.fixture(autouse=True)
def _test_home(_session_home, tmp_path_factory, monkeypatch):
    """A fresh SPARK_TUI_HOME per test (config, state, data and cache dirs: spark_tui.core.paths). A test that sets
    its own with monkeypatch.setenv overrides this one; tmp_path itself stays empty."""
    monkeypatch.setenv("SPARK_TUI_HOME", str(tmp_path_factory.mktemp("home")))


VLLM_FIXTURES = {"vllm_env", "tiny_models_dir", "tiny_qwen3_moe", "tiny_qwen35_mtp", "tiny_qwen35_mtp_accept",
                 "vllm_server_factory"}


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m deselection
def pytest_collection_modifyitems(config, items):
    for item in items:
        if VLLM_FIXTURES.intersection(getattr(item, "fixturenames", ())) and item.get_closest_marker("vllm") is None:
            item.add_marker(pytest.mark.vllm)


@pytest.fixture(scope="session")
def vllm_env() -> Path:
    """The CPU vLLM venv directory (built on first use: ~2 min, ~6 GB)."""
    from tests.support.vllm_env import ensure_vllm_env

    return ensure_vllm_env()


@pytest.fixture(scope="session")
def tiny_models_dir(vllm_env) -> Path:
    from tests.support.tiny_models import ensure_tiny_models

    return ensure_tiny_models()


@pytest.fixture(scope="session")
def tiny_qwen3_moe(tiny_models_dir) -> Path:
    return tiny_models_dir / "qwen3-moe"


@pytest.fixture(scope="session")
def tiny_qwen35_mtp(tiny_models_dir) -> Path:
    """Qwen3.5-MoE hybrid with an MTP head, random weights (draft acceptance ~0)."""
    return tiny_models_dir / "qwen35-mtp"


@pytest.fixture(scope="session")
def tiny_qwen35_mtp_accept(tiny_models_dir) -> Path:
    """Same with a zero lm_head: drafts are nearly always accepted (~93% at k=1)."""
    return tiny_models_dir / "qwen35-mtp-accept"


class _ServerPool:
    def __init__(self, workdir: Path, max_live: int) -> None:
        self.workdir = workdir
        self.max_live = max_live
        self.live: OrderedDict[str, ServerHandle] = OrderedDict()
        self.starts = 0

    def get(self, model_dir: Path, speculative_config: dict | None = None,
            extra_args: tuple[str, ...] = ()) -> ServerHandle:
        key = json.dumps([str(model_dir), speculative_config, list(extra_args)], sort_keys=True)
        h = self.live.get(key)
        if h is not None and h.process.poll() is None:
            self.live.move_to_end(key)
            return h
        if h is not None:  # died: drop it and start a fresh one
            vllm_server.stop_server(self.live.pop(key))
        while len(self.live) >= self.max_live:
            _, old = self.live.popitem(last=False)
            vllm_server.stop_server(old)
        h = vllm_server.start_server(Path(model_dir), speculative_config, tuple(extra_args),
                                     workdir=self.workdir / f"server{self.starts}")
        self.starts += 1
        self.live[key] = h
        return h

    def close(self) -> None:
        while self.live:
            _, h = self.live.popitem()
            vllm_server.stop_server(h)


@pytest.fixture(scope="session")
def vllm_server_factory(vllm_env, tmp_path_factory):
    pool = _ServerPool(tmp_path_factory.mktemp("vllm-servers"),
                       max(1, int(os.environ.get("SPARK_TUI_TEST_MAX_SERVERS", "2"))))
    try:
        yield pool.get
    finally:
        pool.close()
