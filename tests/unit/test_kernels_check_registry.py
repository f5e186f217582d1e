"""The check registry: each check is declared once (`@check`), and its `needs` decide skipping for the run
and for `--list` alike."""

from __future__ import annotations

import pytest

from kernels_check.checks import CHECKS, CheckSpec, Context, check
from kernels_check.model import CheckResult, Status

# the run order of the report (and of `--list`); a new check is appended where it is declared
ORDER = ["environment", "torch_arch", "bf16_gemm", "fp8_gemm", "nvfp4_reference", "nvfp4_gemm_torch",
         "nvfp4_gemm_vllm", "nvfp4_marlin", "moe_backends", "moe_nvfp4_agree", "moe_triton_bf16", "kv_cache_fp8"]


def test_every_check_is_declared_once_in_run_order():
    assert [c.name for c in CHECKS] == ORDER
    for c in CHECKS:
        assert c.needs in ("torch", "gpu", "vllm")
        assert c.title and c.short and len(c.short) <= len(c.title)


def test_a_second_declaration_of_a_name_is_refused():
    with pytest.raises(ValueError, match="declared twice"):
        check("bf16_gemm", "again", needs="gpu")(lambda ctx, c: c.result(Status.INFO))
    assert [c.name for c in CHECKS] == ORDER


def _ctx(torch=True, cuda=True, vllm=True) -> Context:
    ctx = Context()
    if torch:
        ctx.torch = object()
    else:
        ctx.torch_error = ctx.cuda_reason = "torch is not importable (ImportError: x)"
    if torch and not cuda:
        ctx.cuda_reason = "torch 2.x sees no CUDA GPU"
    ctx.cuda = torch and cuda
    if ctx.cuda and vllm:
        ctx.vllm = object()
    elif ctx.cuda:
        ctx.vllm_error = "vLLM is not installed"
    return ctx


def _spec(needs: str, own_skip: bool = False, calls: list | None = None) -> CheckSpec:
    def fn(ctx: Context, c: CheckSpec) -> CheckResult:
        if calls is not None:
            calls.append(c.name)
        return c.result(Status.PASS, details={"ran": True})
    return CheckSpec("probe", "a probe check", "probe", needs, fn, own_skip)  # type: ignore[arg-type]


@pytest.mark.parametrize("needs,ctx_args,reason", [
    ("torch", dict(torch=False), "torch is not importable (ImportError: x)"),
    ("torch", dict(cuda=False), None),
    ("gpu", dict(cuda=False), "torch 2.x sees no CUDA GPU"),
    ("vllm", dict(cuda=False), "torch 2.x sees no CUDA GPU"),
    ("vllm", dict(vllm=False), "vLLM is not installed"),
    ("gpu", dict(vllm=False), None),
    ("vllm", {}, None),
])
def test_unmet_needs_skip_the_run_with_the_reason_list_shows(needs, ctx_args, reason):
    calls: list = []
    spec = _spec(needs, calls=calls)
    ctx = _ctx(**ctx_args)
    assert spec.unmet(ctx) == reason
    r = spec.run(ctx)
    assert (r.name, r.title) == ("probe", "a probe check")
    if reason is None:
        assert r.status is Status.PASS and calls == ["probe"]
    else:
        assert r.status is Status.SKIPPED and r.reason == reason and calls == [] and r.details == {}


def test_own_skip_checks_are_always_called():
    calls: list = []
    r = _spec("vllm", own_skip=True, calls=calls).run(_ctx(torch=False))
    assert r.status is Status.PASS and calls == ["probe"]


def test_the_plan_uses_the_short_titles_and_the_same_reasons():
    from kernels_check.runner import plan_selftest

    ctx = _ctx(vllm=False)
    planned = {p.name: p for p in plan_selftest(ctx=ctx)}
    assert [*planned] == ORDER
    fp8 = next(c for c in CHECKS if c.name == "fp8_gemm")
    assert planned["fp8_gemm"].title == fp8.short != fp8.title
    assert planned["fp8_gemm"].will_run and planned["nvfp4_reference"].will_run
    assert not planned["moe_backends"].will_run and planned["moe_backends"].reason == "vLLM is not installed"
