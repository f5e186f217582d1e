"""Run the checks, derive the verdict. `run_selftest()` and `plan_selftest()` are the API the CLI and the
TUI's self-test screen use (run it in a worker thread: it blocks for up to a couple of minutes on a GPU)."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from kernels_check.checks import CHECKS, Context, Options, discover, vllm_config_context
from kernels_check.model import CheckResult, Recommendation, Report, Status, Verdict

NVFP4_CHECKPOINT = "nvidia/Qwen3.6-35B-A3B-NVFP4"
FP8_CHECKPOINT = "Qwen/Qwen3.6-35B-A3B-FP8"  # the Hopper choice (spark_tui.core.catalog.kernel_paths ranking)


def static_moe_pick(scheme: str, sm: int, results: dict[str, CheckResult]) -> tuple[str | None, str]:
    """vLLM's automatic NVFP4 MoE pick when vLLM was not asked here: spark_tui's replay of vLLM's MoE oracle for the
    vLLM release this report ran with (else the installed one, else the newest the replay read), with its source."""
    from spark_tui.core.catalog import kernel_paths
    from spark_tui.core.catalog.vllm_compat import DEFAULT_VERSION, installed_release

    env = results.get("environment")
    version = (env.details.get("vllm_version") if env else None) or installed_release() or DEFAULT_VERSION
    try:
        kp = kernel_paths.moe_kernel_path(scheme, sm, str(version).split("+")[0])
    except (ValueError, KeyError):
        return None, "no vLLM MoE backend takes it"
    return kp.backend.lower(), kp.source


@dataclass(frozen=True)
class PlannedCheck:
    name: str
    title: str
    will_run: bool
    reason: str  # why it will not run ("" when it will)


def plan_selftest(options: Options | None = None, ctx: Context | None = None) -> list[PlannedCheck]:
    """What `run_selftest` will run here, without running any kernel (imports torch / vLLM to find out)."""
    ctx = ctx or discover(options)
    out = []
    for spec in CHECKS:
        why = spec.unmet(ctx)
        out.append(PlannedCheck(spec.name, spec.short, why is None, why or ""))
    return out


def _environment_key(ctx: Context, env: CheckResult | None) -> dict:
    d = dict(env.details) if env else {}
    return {
        "gpu": ctx.device_name,
        "sm": f"sm_{ctx.sm}" if ctx.sm else None,
        "gpu_count": len(d.get("gpus", [])) or (0 if not ctx.cuda else None),
        "driver": d.get("driver_version"),
        "cuda_driver": d.get("cuda_driver_version"),
        "torch": d.get("torch_version") or (getattr(ctx.torch, "__version__", None)),
        "torch_cuda": d.get("torch_cuda"),
        "vllm": d.get("vllm_version"),
        "flashinfer": d.get("flashinfer_version"),
        "python": d.get("python"),
    }


def decide(ctx: Context, results: dict[str, CheckResult]) -> Recommendation:
    """The verdict from what ran. Pure function of the results (tested on recorded reports)."""
    return decide_from(ctx.torch is not None, ctx.cuda, ctx.sm, ctx.cuda_reason or ctx.torch_error, results)


def decide_from(has_torch: bool, cuda: bool, sm: int | None, no_gpu_reason: str,
                results: dict[str, CheckResult]) -> Recommendation:
    def st(name: str) -> Status | None:
        r = results.get(name)
        return r.status if r else None

    if not has_torch or not cuda or sm is None:
        return Recommendation(Verdict.NO_GPU, f"No GPU checks ran: {no_gpu_reason}.",
                              notes=["run this on the GPU machine with the torch (and vLLM) that will serve the model"])
    failed = [n for n, r in results.items() if r.status == Status.FAIL]
    notes = [f"check failed: {n} ({results[n].reason})" for n in failed]
    agree = results.get("moe_nvfp4_agree")
    if agree is not None and agree.status == Status.PASS:
        from kernels_check.moe_agree import agreement_note

        if (line := agreement_note(agree.details)) is not None:
            notes.append(line)
    if st("bf16_gemm") == Status.FAIL or st("torch_arch") == Status.FAIL:
        return Recommendation(Verdict.UNSUPPORTED,
                              f"The baseline failed on sm_{sm}: this torch build cannot run correct GEMMs here.",
                              notes=notes)
    moe = results.get("moe_backends")
    pick_w4a4 = moe.details.get("auto_pick_w4a4") if moe else None
    native = [n for n in ("nvfp4_gemm_vllm", "nvfp4_gemm_torch") if st(n) == Status.PASS]
    if native:
        backend = None
        if pick_w4a4:
            from kernels_check.checks import MOE_FLAG

            backend = MOE_FLAG.get(pick_w4a4, pick_w4a4.lower())
            src = "vLLM's own backend checks on this GPU"
        else:
            backend, src = static_moe_pick("W4A4_NVFP4", sm, results)
            src += " (vLLM's oracle replayed, not asked here)"
        backend = _avoid_wrong_backend(backend, agree, "w4a4", notes)
        if sm // 10 == 12:
            notes.append("sm_12x: NVIDIA's checkpoint (W4A16 experts) runs MARLIN; W4A4 checkpoints run "
                         "FLASHINFER_CUTLASS, vLLM's automatic pick (vllm-project/recipes@8959cf6 "
                         "models/Qwen/Qwen3.6-35B-A3B.yaml uses --moe-backend marlin for the NVIDIA checkpoint)")
        return Recommendation(Verdict.NATIVE,
                              f"sm_{sm} ran an NVFP4 GEMM natively ({', '.join(native)}) and it matched the reference.",
                              checkpoint=NVFP4_CHECKPOINT, moe_backend=backend,
                              notes=notes + [f"MoE backend from {src}"])
    if sm < 75:
        return Recommendation(Verdict.UNSUPPORTED, f"sm_{sm} is below sm_75: vLLM has no NVFP4 path (Marlin needs sm_75+).",
                              notes=notes)
    marlin = st("nvfp4_marlin")
    if marlin == Status.FAIL:
        return Recommendation(Verdict.UNSUPPORTED,
                              f"sm_{sm} has no native NVFP4 GEMM and vLLM's Marlin weight-only fallback failed here.",
                              notes=notes)
    fallback: str | None = static_moe_pick("W4A16_NVFP4", sm, results)[0] or "marlin"
    if moe is not None:
        by = {r["backend"]: r for r in moe.details.get("backends", [])}
        pick16 = moe.details.get("auto_pick_w4a16")
        if pick16:
            from kernels_check.checks import MOE_FLAG

            fallback = MOE_FLAG.get(pick16, pick16.lower())
        elif not by.get("HUMMING", {}).get("w4a16"):
            fallback = "marlin"
    auto_fallback = fallback
    fallback = _avoid_wrong_backend(fallback, agree, "w4a16", notes)
    ran = "ran and matched the reference" if marlin == Status.PASS else "was not run (vLLM not installed)"
    if sm >= 100:
        notes.append(f"sm_{sm} should have native FP4: the native GEMMs did not pass; update torch / vLLM")
    fp8_ok = st("fp8_gemm") == Status.PASS
    notes.append(f"to serve {NVFP4_CHECKPOINT} here anyway: --moe-backend {fallback} (weight-only W4A16 dequant; "
                 + ("vLLM picks it automatically)" if fallback == auto_fallback
                    else f"set it: vLLM would pick {auto_fallback})"))
    return Recommendation(
        Verdict.FALLBACK,
        f"sm_{sm} has no native NVFP4 GEMM; vLLM would run NVFP4 weights through its {auto_fallback} weight-only "
        f"(W4A16) fallback, whose Marlin GEMM {ran}.",
        checkpoint=FP8_CHECKPOINT if fp8_ok else NVFP4_CHECKPOINT,
        moe_backend="auto" if fp8_ok else fallback,
        notes=notes + ([f"FP8 GEMM runs natively here: {FP8_CHECKPOINT} keeps activations in FP8 "
                        "(MoE backend left to vLLM: not checked by this self-test)"] if fp8_ok else []),
    )


def _avoid_wrong_backend(backend: str | None, agree: CheckResult | None, scheme: str, notes: list[str]) -> str | None:
    """The MoE backend to recommend: `backend`, unless moe_nvfp4_agree saw it give wrong output for `scheme`
    here and another backend matched the reference (then that one, with a note saying why)."""
    if backend is None or agree is None or agree.status != Status.FAIL:
        return backend
    from kernels_check.moe_agree import flags_by_outcome

    good, bad = flags_by_outcome(agree.details, scheme)
    if backend not in bad:
        return backend
    if not good:
        notes.append(f"--moe-backend {backend} gave wrong {scheme.upper()} NVFP4 MoE output here (moe_nvfp4_agree) "
                     "and no other backend matched the reference")
        return backend
    notes.append(f"--moe-backend {backend} gave wrong {scheme.upper()} NVFP4 MoE output here (moe_nvfp4_agree); "
                 f"{good[0]} matched the float64 reference, so it is recommended instead")
    return good[0]


def run_selftest(options: Options | None = None,
                 on_result: Callable[[CheckResult], object] | None = None,
                 only: list[str] | None = None) -> Report:
    """Run every check (or those named in `only`) and return the Report. Never raises for a failing kernel."""
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    ctx = discover(options)
    results: dict[str, CheckResult] = {}
    for spec in CHECKS:
        if only and spec.name not in only and spec.name != "environment":
            continue
        c0 = time.perf_counter()
        try:
            if spec.needs == "vllm" and ctx.vllm is not None:
                with vllm_config_context():
                    r = spec.run(ctx)
            else:
                r = spec.run(ctx)
        except Exception as e:  # a check bug or an unexpected library error: report it, keep going
            tb = traceback.format_exception(type(e), e, e.__traceback__)
            r = CheckResult(spec.name, spec.title, Status.FAIL, reason=f"{type(e).__name__}: {e}"[:400],
                            details={"traceback_tail": "".join(tb[-3:])[-1500:]})
        r.seconds = time.perf_counter() - c0
        results[spec.name] = r
        if ctx.cuda and ctx.torch is not None:
            try:  # free this check's tensors before the next one measures
                ctx.torch.cuda.synchronize()
                ctx.torch.cuda.empty_cache()
            except Exception as e:  # a sticky CUDA error: later checks will fail and say so
                r.details.setdefault("cuda_error_after", f"{type(e).__name__}: {e}"[:300])
        if on_result is not None:
            on_result(r)
    rec = decide(ctx, results)
    return Report(checks=list(results.values()), recommendation=rec,
                  environment=_environment_key(ctx, results.get("environment")),
                  started_at=started, seconds=time.perf_counter() - t0)
