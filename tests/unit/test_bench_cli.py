"""`spark-tui bench` argument handling that needs no server: --api-key-env is a variable NAME, and what was
passed there is never echoed (it may be the key itself)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench(*args: str, **env: str) -> subprocess.CompletedProcess:
    e = {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", ""), **env}
    # port 9 (discard) on loopback: nothing listens, and argument errors must come before any request
    return subprocess.run([sys.executable, "-m", "spark_tui", "bench", "--url", "http://127.0.0.1:9", "--no-save",
                           "--requests", "1", "--concurrency", "1", *args], capture_output=True, text=True, cwd=ROOT,
                          env=e, timeout=60)


def test_a_key_passed_as_the_variable_name_is_refused_and_not_echoed():
    secret = "sk-live-7f3a9c2b1e"
    r = _bench("--api-key-env", secret)
    assert r.returncode == 2, r.stderr
    assert "not the key itself" in r.stderr and "hint:" in r.stderr
    assert secret not in r.stderr + r.stdout


def test_an_unset_named_variable_is_refused_without_naming_it():
    r = _bench("--api-key-env", "MY_BENCH_KEY_UNSET")
    assert r.returncode == 2, r.stderr
    assert "is not set" in r.stderr and "MY_BENCH_KEY_UNSET" not in r.stderr


def test_default_variable_unset_means_no_key_and_the_run_proceeds():
    r = _bench()  # VLLM_API_KEY unset: a server without a key; fails only at the (unreachable) server
    assert r.returncode == 6, r.stderr
    assert "cannot list models" in r.stderr and "Traceback" not in r.stderr


def test_a_set_key_is_never_printed_on_failure():
    secret = "sk-live-0123456789abcdef"
    r = _bench("--api-key-env", "MY_BENCH_KEY", MY_BENCH_KEY=secret)
    assert r.returncode == 6, r.stderr
    assert secret not in r.stderr + r.stdout
