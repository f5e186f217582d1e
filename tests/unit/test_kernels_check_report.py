"""Report model, verdict logic and renderers; the format check runs over every committed report file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kernels_check.checks import CHECKS, arch_support
from kernels_check.model import CheckResult, Report, SelftestExit, Status, Verdict
from kernels_check.render import render_json, render_markdown, render_text
from kernels_check.runner import FP8_CHECKPOINT, NVFP4_CHECKPOINT, decide_from

DATA = Path(__file__).resolve().parents[1] / "data" / "kernels_check"
REPORTS = sorted(DATA.glob("*.json"))
KNOWN = {c.name for c in CHECKS}
ENV_KEYS = {"gpu", "sm", "gpu_count", "driver", "cuda_driver", "torch", "torch_cuda", "vllm", "flashinfer", "python"}


def R(name, status, reason="", **details):
    return CheckResult(name, name, status, reason=reason, details=details)


def results(*rs):
    return {r.name: r for r in rs}


# ------------------------------------------------------------------------------------------ the verdict
def test_hopper_without_vllm_is_weight_only_fallback_and_recommends_fp8():
    rec = decide_from(True, True, 90, "", results(
        R("bf16_gemm", Status.PASS), R("fp8_gemm", Status.PASS),
        R("nvfp4_gemm_torch", Status.NOT_NATIVE, "sm_90 has no FP4 tensor cores"),
        R("nvfp4_marlin", Status.SKIPPED, "vLLM is not installed")))
    assert rec.verdict is Verdict.FALLBACK and rec.exit_code == 1
    assert rec.checkpoint == FP8_CHECKPOINT
    assert "was not run (vLLM not installed)" in rec.summary
    assert any("--moe-backend humming" in n for n in rec.notes)


def test_hopper_with_vllm_takes_the_fallback_backend_from_vllms_checks():
    moe = R("moe_backends", Status.INFO, auto_pick_w4a4=None, auto_pick_w4a16="MARLIN",
            backends=[{"backend": "MARLIN", "w4a16": True}, {"backend": "HUMMING", "w4a16": False}])
    rec = decide_from(True, True, 90, "", results(
        R("bf16_gemm", Status.PASS), R("fp8_gemm", Status.FAIL, "boom"), R("nvfp4_marlin", Status.PASS),
        R("nvfp4_gemm_vllm", Status.NOT_NATIVE), moe))
    assert rec.verdict is Verdict.FALLBACK
    assert rec.checkpoint == NVFP4_CHECKPOINT and rec.moe_backend == "marlin"
    assert "ran and matched the reference" in rec.summary
    assert "check failed: fp8_gemm (boom)" in rec.notes


def test_blackwell_native_uses_vllms_pick_or_the_static_table():
    moe = R("moe_backends", Status.INFO, auto_pick_w4a4="FLASHINFER_TRTLLM", backends=[])
    rec = decide_from(True, True, 100, "", results(R("bf16_gemm", Status.PASS), R("nvfp4_gemm_vllm", Status.PASS), moe))
    assert (rec.verdict, rec.exit_code, rec.checkpoint, rec.moe_backend) == (
        Verdict.NATIVE, 0, NVFP4_CHECKPOINT, "flashinfer_trtllm")
    rec = decide_from(True, True, 121, "", results(R("bf16_gemm", Status.PASS), R("nvfp4_gemm_torch", Status.PASS)))
    assert rec.moe_backend == "flashinfer_cutlass" and any("marlin" in n for n in rec.notes)


def test_failed_fallback_or_baseline_is_unsupported():
    rec = decide_from(True, True, 90, "", results(R("bf16_gemm", Status.PASS), R("nvfp4_marlin", Status.FAIL, "x")))
    assert rec.verdict is Verdict.UNSUPPORTED and rec.exit_code == 2
    rec = decide_from(True, True, 100, "", results(R("bf16_gemm", Status.FAIL, "bad"), R("nvfp4_gemm_torch", Status.PASS)))
    assert rec.verdict is Verdict.UNSUPPORTED
    rec = decide_from(True, True, 70, "", results(R("bf16_gemm", Status.PASS)))
    assert rec.verdict is Verdict.UNSUPPORTED and "sm_75" in rec.summary


def test_no_gpu():
    rec = decide_from(True, False, None, "torch sees no CUDA GPU", {})
    assert rec.verdict is Verdict.NO_GPU and rec.exit_code == SelftestExit.NO_GPU == 3


@pytest.mark.parametrize("sm,arch,kind", [
    (90, ["sm_80", "sm_90", "sm_100"], "native"),
    (121, ["sm_90", "sm_100", "sm_120"], "family"),
    (121, ["sm_90", "sm_120a"], "missing"),  # arch-specific cubins do not carry to another minor
    (103, ["sm_100f"], "family"),
    (120, ["sm_90", "compute_90"], "ptx"),
    (100, ["sm_80", "sm_90"], "missing"),
])
def test_arch_support(sm, arch, kind):
    assert arch_support(sm, arch)[0] == kind


def test_arch_support_exact_a_variant_is_native():
    assert arch_support(90, ["sm_90a"]) == ("native", "sm_90a")


# ------------------------------------------------------------------------------------------ renderers
def _sample() -> Report:
    from kernels_check.model import Recommendation

    return Report(
        checks=[R("bf16_gemm", Status.PASS, rel_error=0.0021, tflops=741.2, median_ms=1.483),
                R("nvfp4_gemm_torch", Status.NOT_NATIVE, "sm_90 has no FP4 tensor cores")],
        recommendation=Recommendation(Verdict.FALLBACK, "No native FP4.", FP8_CHECKPOINT, "auto", ["a | note"]),
        environment={"gpu": "NVIDIA H100 80GB HBM3", "sm": "sm_90", "driver": "580.159.04", "torch": "2.11.0+cu130"},
        started_at="2026-11-23T00:00:00+00:00", seconds=12.5)


def test_text_renderer():
    out = render_text(_sample())
    assert "PASS        bf16_gemm  " in out
    assert "err 0.0021; TFLOP/s 741; ms 1.48" in out
    assert "NOT NATIVE  nvfp4_gemm_torch" in out
    assert "Verdict: NVFP4 via weight-only fallback (exit 1)" in out


def test_markdown_renderer_is_keyed_by_versions_and_escapes_pipes():
    out = render_markdown(_sample())
    assert out.splitlines()[0] == "### spark-tui self-test: NVFP4 via weight-only fallback"
    assert "| NVIDIA H100 80GB HBM3 | sm_90 | 580.159.04 | - | 2.11.0+cu130 | - | - | - |" in out
    assert "| `nvfp4_gemm_torch` | NOT NATIVE | 0.0s | sm_90 has no FP4 tensor cores |" in out
    assert "- a | note" in out
    assert f"Recommended: `{FP8_CHECKPOINT}` with `--moe-backend auto`." in out


def test_json_roundtrip():
    rep = _sample()
    again = Report.from_dict(json.loads(render_json(rep)))
    assert again.to_dict() == rep.to_dict()


# ------------------------------------------------------------------------------------------ report files
def test_there_is_at_least_the_cpu_report():
    assert (DATA / "cpu-only.json").exists()


@pytest.mark.parametrize("path", REPORTS, ids=[p.name for p in REPORTS])
def test_report_file_matches_the_format(path):
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == 1 and raw["tool"] == "kernels_check"
    assert set(raw["environment"]) == ENV_KEYS
    v = raw["verdict"]
    assert set(v) == {"id", "title", "exit_code", "summary", "recommended_checkpoint", "recommended_moe_backend", "notes"}
    verdict = Verdict(v["id"])
    assert v["title"] == verdict.label
    assert v["exit_code"] == {Verdict.NATIVE: 0, Verdict.FALLBACK: 1, Verdict.UNSUPPORTED: 2, Verdict.NO_GPU: 3}[verdict]
    names = [c["name"] for c in raw["checks"]]
    assert names and set(names) <= KNOWN and len(set(names)) == len(names)
    for c in raw["checks"]:
        assert set(c) == {"name", "title", "status", "reason", "seconds", "details"}
        st = Status(c["status"])
        if st in (Status.SKIPPED, Status.FAIL, Status.NOT_NATIVE):
            assert c["reason"], f"{c['name']}: {st.value} without a reason"
        for k in ("rel_error", "tflops", "median_ms"):
            if k in c["details"]:
                assert isinstance(c["details"][k], (int, float))
        if c["details"].get("rel_error") is not None and "band" in c["details"] and st is Status.PASS:
            band = c["details"]["band"]
            hi = band[1] if isinstance(band, list) else band
            assert c["details"]["rel_error"] <= hi
    if verdict is not Verdict.NO_GPU:
        assert raw["environment"]["gpu"] and raw["environment"]["sm"]
    rep = Report.from_dict(raw)
    assert rep.to_dict() == raw  # the model reads back everything the file holds
    assert rep.exit_code == v["exit_code"]
    gpu = raw["environment"]["gpu"] or "-"
    assert gpu in render_markdown(rep) and v["title"] in render_text(rep)


def _cli(*argv: str):
    import argparse

    from kernels_check.cli import add_arguments, run

    p = argparse.ArgumentParser()
    add_arguments(p)
    return run(p.parse_args(list(argv)))


@pytest.mark.parametrize("content", ["[]", '{"verdict": 5}', "{}", '{"verdict": {"id": "bogus"}}', "not json"])
def test_from_a_malformed_report_exits_2_with_a_message(tmp_path, capsys, content):
    f = tmp_path / "r.json"
    f.write_text(content)
    assert _cli("--from", str(f)) == 2
    err = capsys.readouterr().err
    assert f"cannot read report {f}" in err and "written by --json" in err


def test_from_with_an_unwritable_out_exits_2_and_rerenders_a_good_report(tmp_path, capsys):
    src = REPORTS[0]
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert _cli("--from", str(src), "--out", str(blocker / "x.md"), "--markdown") == 2  # parent is a file
    assert "cannot write --out" in capsys.readouterr().err
    out = tmp_path / "x.md"
    assert _cli("--from", str(src), "--out", str(out), "--markdown") == Report.load(src).exit_code
    assert out.read_text() == capsys.readouterr().out
