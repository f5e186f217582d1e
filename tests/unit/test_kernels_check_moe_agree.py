"""moe_nvfp4_agree: the problem, the references, the ModelOpt tensors, the bands, the grading and the
verdict notes on the CPU; the vLLM part only as far as it can run without vLLM (its skip and error paths)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from kernels_check import moe_agree as ma  # noqa: E402
from kernels_check import nvfp4 as q4  # noqa: E402
from kernels_check.model import CheckResult, Status, Verdict  # noqa: E402
from kernels_check.runner import decide_from  # noqa: E402

SMALL = ma.MoeShape(tokens=48, hidden=256, intermediate=128, experts=6, topk=2)
H200 = Path(__file__).resolve().parents[1] / "data" / "kernels_check" / "h200-vllm-0.26.0.json"


@pytest.fixture(scope="module")
def prob() -> ma.MoeProblem:
    return ma.make_problem(torch, "cpu", SMALL, seed=0)


# ------------------------------------------------------------------------------------------ the problem
def test_routing_is_unambiguous_and_renormalized(prob):
    s = prob.shape
    lg = prob.router_logits
    assert lg.shape == (s.tokens, s.experts)
    assert torch.equal(lg.to(torch.bfloat16).float(), lg)  # exact in bf16: every kernel routes the same
    assert all(len(set(row.tolist())) == s.experts for row in lg)  # no ties
    ids = prob.topk_ids.long()
    assert prob.topk_ids.dtype == torch.int32 and ids.shape == (s.tokens, s.topk)
    assert torch.equal(ids.sort(dim=-1).values, lg.topk(s.topk, dim=-1).indices.sort(dim=-1).values)
    assert torch.allclose(prob.topk_weights.sum(-1), torch.ones(s.tokens))
    # Renormalize (TopK -> Softmax) equals softmax over all experts, then top-k, then renormalized
    full = torch.softmax(lg, dim=-1).gather(1, ids)
    assert torch.allclose(prob.topk_weights, full / full.sum(-1, keepdim=True), atol=1e-6)


def _moe_loop(p: ma.MoeProblem, quant_acts: bool) -> torch.Tensor:
    """The same MoE written token by token, as a second opinion on ma._moe64."""
    inter = p.shape.intermediate
    x = p.x.double()
    if quant_acts:
        x = q4.quantize(p.x.float(), global_scale=p.a13_gscale).dequantize(torch.float64)
    out = torch.zeros(p.shape.tokens, p.shape.hidden, dtype=torch.float64)
    for t in range(p.shape.tokens):
        for j in range(p.shape.topk):
            e = int(p.topk_ids[t, j])
            h = p.w13[e].dequantize(torch.float64) @ x[t]
            a = torch.nn.functional.silu(h[:inter]) * h[inter:]
            if quant_acts:
                a = q4.quantize(a[None].float(), global_scale=p.a2_gscale).dequantize(torch.float64)[0]
            out[t] += float(p.topk_weights[t, j]) * (p.w2[e].dequantize(torch.float64) @ a)
    return out


@pytest.mark.parametrize("acts", ["bf16", "nvfp4"])
def test_the_reference_is_the_moe_of_the_dequantized_weights(prob, acts):
    ref = prob.refs[acts]
    assert ref.dtype == torch.float64 and ref.shape == (prob.shape.tokens, prob.shape.hidden)
    assert ma.rel(ref, _moe_loop(prob, acts == "nvfp4")) < 1e-12


def test_the_activation_scale_of_gemm2_comes_from_the_intermediate(prob):
    assert 0 < float(prob.a2_gscale) < math.inf
    assert float(prob.a13_gscale) == pytest.approx(448 * 6 / float(prob.x.float().abs().max()))
    # quantizing the intermediate with its own amax cannot saturate: the largest block scale fits e4m3
    assert ma.rel(prob.refs["nvfp4"], prob.refs["bf16"]) < 0.3


def test_modelopt_tensors_have_vllms_shapes_and_decode_to_the_reference_weights(prob):
    E, H, inter = prob.shape.experts, prob.shape.hidden, prob.shape.intermediate
    m = ma.modelopt_tensors(prob)
    # vLLM v0.26.0 modelopt.py:1441-1555 (ModelOptNvFp4FusedMoE.create_weights), w13_num_shards = 2
    want = {"w13_weight": ((E, 2 * inter, H // 2), torch.uint8),
            "w13_weight_scale": ((E, 2 * inter, H // 16), torch.float8_e4m3fn),
            "w13_weight_scale_2": ((E, 2), torch.float32), "w13_input_scale": ((E, 2), torch.float32),
            "w2_weight": ((E, H, inter // 2), torch.uint8),
            "w2_weight_scale": ((E, H, inter // 16), torch.float8_e4m3fn),
            "w2_weight_scale_2": ((E,), torch.float32), "w2_input_scale": ((E,), torch.float32)}
    assert {k: (tuple(v.shape), v.dtype) for k, v in m.items()} == want
    assert torch.equal(m["w13_weight_scale_2"][:, 0], m["w13_weight_scale_2"][:, 1])  # one gscale per w13

    def decode(packed, scale, scale_2):  # checkpoint semantics: e2m1 (low nibble first) * e4m3 * scale_2
        lo, hi = packed & 0xF, packed >> 4
        codes = torch.stack((lo, hi), -1).reshape(*packed.shape[:-1], -1)
        vals = q4.e2m1_decode(codes).double()
        blocks = vals.reshape(*vals.shape[:-1], -1, 16) * scale.double()[..., None]
        return blocks.reshape(vals.shape) * scale_2.double().reshape(-1, 1, 1)

    w13 = decode(m["w13_weight"], m["w13_weight_scale"], m["w13_weight_scale_2"][:, 0])
    w2 = decode(m["w2_weight"], m["w2_weight_scale"], m["w2_weight_scale_2"])
    for e in range(E):
        assert ma.rel(w13[e], prob.w13[e].dequantize(torch.float64)) < 1e-6
        assert ma.rel(w2[e], prob.w2[e].dequantize(torch.float64)) < 1e-6
    # input_scale = activation amax / (448 * 6), ModelOpt's convention
    assert float(m["w13_input_scale"][0, 0]) == pytest.approx(float(prob.x.float().abs().max()) / 2688, rel=1e-6)


# ------------------------------------------------------------------------------------------ the bands
def _kernel_like(p: ma.MoeProblem, quant_acts: bool, swap_gate_up: bool = False) -> torch.Tensor:
    """What a correct fused MoE computes in practice: bf16 operands, fp32 accumulation, the GEMM1 output and
    the intermediate rounded to bf16 (then quantized when the activations are NVFP4), bf16 output."""
    bf = torch.bfloat16
    inter = p.shape.intermediate
    x = p.x
    if quant_acts:
        x = q4.quantize(x.float(), global_scale=p.a13_gscale).dequantize().to(bf)
    out = torch.zeros(p.shape.tokens, p.shape.hidden)
    ids = p.topk_ids.long()
    for e in range(p.shape.experts):
        tok, slot = (ids == e).nonzero(as_tuple=True)
        w1 = p.w13[e].dequantize().to(bf).float()
        if swap_gate_up:
            w1 = torch.cat((w1[inter:], w1[:inter]))
        h = (x[tok].float() @ w1.t()).to(bf).float()
        act = (torch.nn.functional.silu(h[:, :inter]) * h[:, inter:]).to(bf)
        if quant_acts:
            act = q4.quantize(act.float(), global_scale=p.a2_gscale).dequantize().to(bf)
        y = (act.float() @ p.w2[e].dequantize().to(bf).float().t()).to(bf).float()
        out.index_add_(0, tok, p.topk_weights[tok, slot][:, None] * y)
    return out.to(bf)


def test_the_bands_pass_a_bf16_kernel_and_catch_wrong_ones(prob):
    a16, a4 = _kernel_like(prob, False), _kernel_like(prob, True)
    e16, e4 = ma.rel(a16, prob.refs["bf16"]), ma.rel(a4, prob.refs["nvfp4"])
    # the figures the bands' comments quote (5.3e-3 and 3.5e-2 at seed 0), with a margin below each band
    assert 2e-3 < e16 < ma.A16_BAND / 1.5
    assert 2e-2 < e4 < ma.A4_BAND / 1.5
    # a W4A4 kernel that skipped the activation quantization, or one fed the gate/up halves swapped, fails
    assert ma.rel(a16, prob.refs["nvfp4"]) > 1.5 * ma.A4_BAND
    assert ma.rel(_kernel_like(prob, False, swap_gate_up=True), prob.refs["bf16"]) > 5 * ma.A4_BAND
    assert ma.rel(a4 * 2, prob.refs["nvfp4"]) > 5 * ma.A4_BAND  # a global scale applied twice


# ------------------------------------------------------------------------------------------ grading
def _run(flag, scheme, acts, err, backend=None):
    return ma.grade({"backend": backend or flag.upper(), "flag": flag, "scheme": scheme, "activations": acts,
                     "rel_error": err, "median_ms": 0.2})


def test_grading_and_the_summary():
    runs = [_run("humming", "w4a16", "bf16", 4e-3), _run("marlin", "w4a16", "bf16", 5e-3),
            _run("emulation", "w4a4", "nvfp4", 3.5e-2)]
    assert [r["status"] for r in runs] == ["pass"] * 3 and runs[2]["band"] == ma.A4_BAND
    pairs = [{"a": "humming w4a16", "b": "marlin w4a16", "rel_diff": 2e-3, "same_activations": True},
             {"a": "humming w4a16", "b": "emulation w4a4", "rel_diff": 0.16, "same_activations": False}]
    status, reason, summary = ma.summarize(runs, pairs)
    assert (status, reason) == ("pass", "")
    assert summary["max_spread"] == {"bf16": 2e-3}  # different activations are not a spread
    assert summary["max_rel_error"] == {"bf16": 5e-3, "nvfp4": 3.5e-2}
    assert summary["backends_passed"] == ["humming", "marlin", "emulation"]
    note = ma.agreement_note({"summary": summary})
    assert note.startswith("3 NVFP4 MoE backends (humming, marlin, emulation) agree with the float64 reference")
    assert "5.0e-03 (bf16 activations)" in note and "2.0e-03 (bf16)" in note


def test_one_wrong_or_raising_backend_fails_the_check_and_the_others_still_report():
    bad = _run("humming", "w4a16", "bf16", 0.9)
    assert bad["status"] == "fail" and "relative error 0.9 above 0.01" in bad["reason"]
    err = {"backend": "MARLIN", "flag": "marlin", "scheme": "w4a4", "status": "error",
           "reason": "raised RuntimeError: CUDA error: an illegal memory access was encountered"}
    good = _run("emulation", "w4a4", "nvfp4", 3e-2)
    status, reason, summary = ma.summarize([bad, err, good], [])
    assert status == "fail"
    assert reason == ("humming w4a16: relative error 0.9 above 0.01 (bf16 activations); "
                      "marlin w4a4: raised RuntimeError: CUDA error: an illegal memory access was encountered")
    assert summary["backends_passed"] == ["emulation"] and summary["backends_failed"] == ["humming", "marlin"]
    assert ma.agreement_note({"summary": summary}) is None
    assert ma.flags_by_outcome({"runs": [bad, err, good]}, "w4a4") == (["emulation"], ["marlin"])


def test_nothing_ran_is_a_skip_with_each_reason():
    runs = [{"flag": "marlin", "scheme": "w4a16", "status": "skipped", "reason": "not run: x"}]
    assert ma.summarize(runs, []) == ("skipped", "marlin w4a16: not run: x",
                                      {"runs": 1, "ran": 0, "passed": 0, "backends_passed": [],
                                       "backends_failed": [], "max_rel_error": {}, "max_spread": {}})


def test_the_plan_follows_vllms_own_answers_recorded_on_the_h200():
    rep = json.loads(H200.read_text())
    moe = next(c for c in rep["checks"] if c["name"] == "moe_backends")["details"]
    plan = ma.backends_to_run(moe["backends"], moe["auto_order"])
    assert [(f, s) for _, f, s in plan] == [("humming", "w4a16"), ("humming", "w4a4"), ("marlin", "w4a16"),
                                            ("marlin", "w4a4"), ("emulation", "w4a4")]


def test_the_batched_cutedsl_variant_is_not_run_twice():
    rows = [{"backend": "FLASHINFER_CUTEDSL", "flag": "flashinfer_cutedsl", "w4a4": True},
            {"backend": "FLASHINFER_CUTEDSL_BATCHED", "flag": "flashinfer_cutedsl", "w4a4": True},
            {"backend": "VLLM_CUTLASS", "flag": "cutlass", "w4a4": True, "w4a16": False}]
    assert ma.backends_to_run(rows, ["FLASHINFER_CUTEDSL", "FLASHINFER_CUTEDSL_BATCHED", "VLLM_CUTLASS"]) == [
        ("FLASHINFER_CUTEDSL", "flashinfer_cutedsl", "w4a4"), ("VLLM_CUTLASS", "cutlass", "w4a4")]


def test_pairwise_spread(prob):
    ref = prob.refs["bf16"]
    a, b = ref.float(), (ref * 1.01).float()
    rows = ma.pairwise({"x w4a16": ("bf16", a), "y w4a16": ("bf16", b), "z w4a4": ("nvfp4", a)}, prob.refs)
    by = {(r["a"], r["b"]): r for r in rows}
    assert by[("x w4a16", "y w4a16")]["rel_diff"] == pytest.approx(0.01, rel=1e-4)
    assert by[("x w4a16", "y w4a16")]["same_activations"] and not by[("x w4a16", "z w4a4")]["same_activations"]
    nan = a.clone()
    nan[0, 0] = float("nan")
    assert ma.pairwise({"x w4a16": ("bf16", nan), "y w4a16": ("bf16", a)}, prob.refs)[0]["rel_diff"] == math.inf


# ------------------------------------------------------------------------------------------ vLLM part, no vLLM
def test_call_with_names_what_a_newer_vllm_requires():
    def ctor(a, b, c=1):
        return (a, b, c)

    assert ma.call_with(ctor, "X", a=1, b=2, gone=3) == (1, 2, 1)  # an argument it no longer takes is left out
    with pytest.raises(ma.ApiMismatch, match="X now requires b"):
        ma.call_with(ctor, "X", a=1)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="asserts the path without vLLM")
def test_without_vllm_every_backend_is_skipped_with_the_reason(prob):
    plan = [("MARLIN", "marlin", "w4a16"), ("EMULATION", "emulation", "w4a4")]
    runs, outputs = ma.run_backends(torch, prob, plan, warmup=1, repeats=1)
    assert outputs == {} and [r["status"] for r in runs] == ["skipped", "skipped"]
    assert all(r["reason"].startswith("not run: vLLM's MoE API differs from 0.26.0's (not found: vllm.") for r in runs)
    assert ma.summarize(runs, [])[0] == "skipped"


def test_a_raising_backend_becomes_its_rows_error_with_the_last_traceback_line(prob, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(ma, "_build", boom)
    row, out = ma.run_one({}, torch, prob, "MARLIN", "marlin", "w4a16", None, 1, 1)
    assert out is None and row["status"] == "error"
    assert row["reason"] == "raised RuntimeError: CUDA error: an illegal memory access was encountered"
    assert "boom" in row["traceback_tail"]

    def differs(*a, **k):
        raise ma.ApiMismatch("FusedMoEConfig now requires swiglu_mode")

    monkeypatch.setattr(ma, "_build", differs)
    row, _ = ma.run_one({}, torch, prob, "MARLIN", "marlin", "w4a16", None, 1, 1)
    assert (row["status"], row["reason"]) == ("skipped", "not run: FusedMoEConfig now requires swiglu_mode")


def test_a_broken_cuda_context_stops_the_later_backends(prob, monkeypatch):
    # torch.cuda.synchronize() raises on this CPU-only torch, as it does after a sticky CUDA error
    monkeypatch.setattr(ma, "load_api", lambda: {
        "is_workspace_manager_initialized": lambda: True, "get_current_vllm_config_or_none": None,
        "model_parallel_is_initialized": lambda: True,
        "VllmConfig": object, "set_current_vllm_config": lambda cfg: __import__("contextlib").nullcontext()})
    monkeypatch.setattr(ma, "run_one", lambda api, t, p, b, f, s, v, w, r: (
        {"backend": b, "flag": f, "scheme": s, "status": "error", "reason": "raised X"}, None))
    runs, _ = ma.run_backends(torch, prob, [("A", "a", "w4a16"), ("B", "b", "w4a16")], 1, 1)
    assert runs[0]["status"] == "error" and "cuda_error_after" in runs[0]
    assert runs[1]["status"] == "skipped" and runs[1]["reason"].startswith("not run: the CUDA context broke in a w4a16")


def test_the_check_fails_with_the_last_line_when_setup_raises(monkeypatch):
    from kernels_check import checks

    rows = json.loads(H200.read_text())
    moe = next(c for c in rows["checks"] if c["name"] == "moe_backends")["details"]
    monkeypatch.setattr(checks, "_nvfp4_moe_support", lambda ctx: (moe["backends"], moe["auto_order"], 1, 1))

    def boom(*a, **k):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(ma, "make_problem", boom)
    spec = next(c for c in checks.CHECKS if c.name == "moe_nvfp4_agree")
    ctx = checks.Context(torch=torch, cuda=True, sm=90, vllm=object())
    r = spec.run(ctx)
    assert r.status is Status.FAIL and r.reason == "raised RuntimeError: CUDA out of memory"
    assert r.details["plan"][0] == "humming w4a16" and "traceback_tail" in r.details


# ------------------------------------------------------------------------------------------ the verdict
def _agree(status, runs):
    st, reason, summary = ma.summarize(runs, [])
    return CheckResult("moe_nvfp4_agree", "t", status, reason=reason, details={"runs": runs, "summary": summary})


def test_the_verdict_notes_the_agreement():
    runs = [_run("humming", "w4a16", "bf16", 4e-3), _run("marlin", "w4a16", "bf16", 5e-3)]
    rec = decide_from(True, True, 90, "", {
        "bf16_gemm": CheckResult("bf16_gemm", "", Status.PASS), "nvfp4_marlin": CheckResult("nvfp4_marlin", "", Status.PASS),
        "moe_nvfp4_agree": _agree(Status.PASS, runs)})
    assert rec.verdict is Verdict.FALLBACK
    assert any(n.startswith("2 NVFP4 MoE backends (humming, marlin) agree") for n in rec.notes)


def test_a_backend_that_gave_wrong_output_is_not_recommended():
    runs = [_run("humming", "w4a16", "bf16", 0.7), _run("marlin", "w4a16", "bf16", 5e-3)]
    rec = decide_from(True, True, 90, "", {
        "bf16_gemm": CheckResult("bf16_gemm", "", Status.PASS), "nvfp4_marlin": CheckResult("nvfp4_marlin", "", Status.PASS),
        "moe_nvfp4_agree": _agree(Status.FAIL, runs)})
    assert rec.moe_backend == "marlin"
    assert "through its humming weight-only" in rec.summary  # what vLLM would pick by itself
    assert any("--moe-backend humming gave wrong W4A16 NVFP4 MoE output here" in n for n in rec.notes)
    assert any("--moe-backend marlin (weight-only W4A16 dequant; set it: vLLM would pick humming)" in n
               for n in rec.notes)
    assert any(n.startswith("check failed: moe_nvfp4_agree (humming w4a16: relative error 0.7") for n in rec.notes)


def test_the_single_process_group_is_set_up_and_taken_down_only_when_missing():
    calls: list = []
    inited = {"v": False}

    def init(**kw):
        calls.append(("init", kw["world_size"], kw["backend"], kw["distributed_init_method"][:7]))
        inited["v"] = True

    api = {"model_parallel_is_initialized": lambda: inited["v"], "init_distributed_environment": init,
           "initialize_model_parallel": lambda tp, pp: calls.append(("tp_pp", tp, pp)),
           "destroy_model_parallel": lambda: calls.append(("destroy_mp",)),
           "destroy_distributed_environment": lambda: calls.append(("destroy_dist",))}
    with ma.single_process_group(api, torch):
        assert calls == [("init", 1, "nccl", "file://"), ("tp_pp", 1, 1)]
    assert calls[-2:] == [("destroy_mp",), ("destroy_dist",)]
    calls.clear()
    with ma.single_process_group(api, torch):  # already there (inited["v"] is True): left alone
        pass
    assert calls == []


def test_the_report_line_names_each_backend_and_the_spread():
    from kernels_check.render import summary_line

    runs = [_run("humming", "w4a16", "bf16", 4.2e-3), _run("marlin", "w4a16", "bf16", 0.5),
            {"flag": "emulation", "scheme": "w4a4", "status": "error", "reason": "raised X"}]
    pairs = [{"a": "humming w4a16", "b": "marlin w4a16", "rel_diff": 0.49, "same_activations": True}]
    status, reason, summary = ma.summarize(runs, pairs)
    r = CheckResult("moe_nvfp4_agree", "t", Status.FAIL, reason=reason,
                    details={"runs": runs, "pairs": pairs, "summary": summary})
    assert summary_line(r) == ("humming w4a16: err 0.0042, 0.2 ms; marlin w4a16 FAIL: err 0.5, 0.2 ms; "
                               "emulation w4a4: error; spread bf16 0.49; " + reason)


def test_on_blackwell_a_wrong_w4a4_pick_gives_way_to_one_that_matched():
    moe = CheckResult("moe_backends", "", Status.INFO, details={"auto_pick_w4a4": "FLASHINFER_TRTLLM", "backends": []})
    runs = [_run("flashinfer_trtllm", "w4a4", "nvfp4", 0.4), _run("flashinfer_cutlass", "w4a4", "nvfp4", 3e-2),
            _run("marlin", "w4a16", "bf16", 4e-3)]
    rec = decide_from(True, True, 100, "", {
        "bf16_gemm": CheckResult("bf16_gemm", "", Status.PASS),
        "nvfp4_gemm_vllm": CheckResult("nvfp4_gemm_vllm", "", Status.PASS), "moe_backends": moe,
        "moe_nvfp4_agree": _agree(Status.FAIL, runs)})
    assert rec.verdict is Verdict.NATIVE and rec.moe_backend == "flashinfer_cutlass"
    assert any("--moe-backend flashinfer_trtllm gave wrong W4A4 NVFP4 MoE output here" in n for n in rec.notes)
