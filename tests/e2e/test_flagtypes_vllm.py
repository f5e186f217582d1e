"""The shipped flag table (spark_tui.core.planning.flagtypes) against the real vLLM 0.32.0 parser it was read from, and
the optional path that validates `--set` values with the installed vLLM's own parser."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.support.vllm_env import vllm_python

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.vllm

SCRIPT = textwrap.dedent("""
    import json, sys
    from spark_tui.core.planning import flagtypes as ft
    from spark_tui.errors import UsageError
    version, actions = ft._installed_actions()
    out = {"version": version, "entries": {}, "checks": {}}
    for t in ft.FLAG_TYPES:
        for n in t.names:
            a = actions.get(n)
            out["entries"][n] = None if a is None else {
                "nargs": a.nargs, "type": getattr(a.type, "__name__", None),
                "choices": None if not a.choices else [c for c in a.choices if c is not None],
                "json": (a.type("{}") if t.kind == "json_object" else None)}
    for flag, value in [("max-num-seqs", "abc"), ("max-num-seqs", "16"), ("port", "99999"), ("port", "8001"),
                        ("gpu-memory-utilization", "nan"), ("gpu-memory-utilization", "0.5"),
                        ("kv-cache-dtype", "fp9"), ("moe-backend", "FlashInfer-Cutlass"),
                        ("max-num-batched-tokens", "16k"), ("enable-prefix-caching", None),
                        ("enable-prefix-caching", "1"), ("frobnicate", "1"), ("api-key", "x")]:
        try:
            got = ft.validate_flag_value(flag, value, None, use_installed_vllm=True)
            out["checks"][f"{flag}={value}"] = ["ok", got]
        except UsageError as e:
            out["checks"][f"{flag}={value}"] = ["refused", e.message]
    print("RESULT" + json.dumps(out))
""")


def test_the_table_matches_the_real_parser_and_the_parser_path_validates(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARK_TUI_HOME": str(tmp_path), "VLLM_NO_USAGE_STATS": "1"}
    p = subprocess.run([str(vllm_python()), "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT"))
    d = json.loads(line[len("RESULT"):])
    assert d["version"].startswith("0.32.0")
    from spark_tui.core.planning import flagtypes as ft

    for t in ft.FLAG_TYPES:
        for n in t.names:
            a = d["entries"][n]
            assert a is not None, f"{n} is not a flag of vLLM 0.32.0"
            if t.kind == "switch":
                assert a["nargs"] == 0, n
            elif t.kind == "choice":
                assert sorted(a["choices"]) == sorted(t.choices), n
            elif t.kind == "int":
                assert a["type"] == "int", n
            elif t.kind == "float":
                assert a["type"] == "float", n
            elif t.kind == "size":
                assert a["type"] in ("human_readable_int", "_optional_type"), n
            elif t.kind == "size_or_auto":
                assert a["type"] == "human_readable_int_or_auto", n
            elif t.kind == "json_object":
                assert a["json"] == {}, n
    c = d["checks"]
    assert c["max-num-seqs=16"] == ["ok", 16]
    assert c["port=8001"] == ["ok", 8001]
    assert c["gpu-memory-utilization=0.5"] == ["ok", 0.5]
    assert c["moe-backend=FlashInfer-Cutlass"] == ["ok", "flashinfer_cutlass"]
    assert c["max-num-batched-tokens=16k"] == ["ok", 16000]
    assert c["enable-prefix-caching=None"] == ["ok", None]
    for k in ("max-num-seqs=abc", "port=99999", "gpu-memory-utilization=nan", "kv-cache-dtype=fp9",
              "enable-prefix-caching=1", "frobnicate=1", "api-key=x"):
        assert c[k][0] == "refused", (k, c[k])
    assert "rejected by vLLM 0.32.0" in c["max-num-seqs=abc"][1]
    assert "not a flag of the installed vLLM 0.32.0" in c["frobnicate=1"][1]
    assert "refusing a secret" in c["api-key=x"][1]
