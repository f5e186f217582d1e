"""`spark-tui export` end to end through the CLI, with the real planner (spark_tui.commands.plan)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECRET_HF = "hf_TESTTOKEN_must_never_be_written_0123456789"
SECRET_KEY = "sk-TESTKEY-must-never-be-written-9876543210"


def test_import_hygiene():
    code = (
        "import sys, spark_tui.core.export, spark_tui.commands.export; "
        "print(sorted(m for m in ('textual', 'torch', 'vllm', 'httpx', 'yaml') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_no_secret_value_in_any_format_even_with_secrets_in_env(monkeypatch):
    from spark_tui.core import export as ex
    from tests.unit.test_export_render import spark_plan

    monkeypatch.setenv("HF_TOKEN", SECRET_HF)
    monkeypatch.setenv("VLLM_API_KEY", SECRET_KEY)
    for host, opts in [("127.0.0.1", ex.ExportOptions()), ("0.0.0.0", ex.ExportOptions(api_key_env="VLLM_API_KEY"))]:
        for fmt in ex.FORMATS:
            text = ex.combined(ex.render(spark_plan(host), fmt, opts))
            assert SECRET_HF not in text and SECRET_KEY not in text
            assert "HF_TOKEN" in text  # referenced by name
