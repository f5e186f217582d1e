"""The checks. Each takes the shared Context and returns a CheckResult; none raises (the runner also
catches anything that escapes and turns it into a FAIL). torch and vLLM are imported inside.
Expected error bands are relative Frobenius errors ||out - ref|| / ||ref||, each with its source below.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import platform
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal

from kernels_check.model import CheckResult, Status

# bf16 operands, fp32 accumulation, bf16 output vs float64: errors of 1e-3..1e-2 (bf16 keeps 8 mantissa bits;
# torch.testing.assert_close's default bfloat16 rtol is 1.6e-2, torch/testing/_comparison.py); we accept up to 1e-2.
BF16_GEMM_BAND = 1e-2
# FP8 GEMM vs the float64 product of the *dequantized* fp8 inputs: only accumulation and the bf16 output
# rounding remain, so the bf16 band applies.
FP8_GEMM_BAND = 1e-2
# NVFP4 round trip of standard-normal data with this module's reference quantizer: 0.0951-0.0953 measured
# on CPU (torch 2.13, seeds 0..3, 256x1024 and 4096x4096); band kept wide around it, and with a floor so a
# quantizer that quantizes nothing cannot pass.
NVFP4_ROUNDTRIP_BAND = (0.07, 0.12)
# NVFP4 GEMM vs the float64 product of the dequantized NVFP4 inputs (same values the kernel sees):
# fp32 accumulation + bf16 output rounding, so the bf16 band.
NVFP4_GEMM_BAND = 1e-2
# FP8 e4m3 KV cache round trip (3 mantissa bits: relative step 2^-4, RMS error about 2-3%).
KV_FP8_BAND = 0.05

NVFP4_MOE_ORDER_DEFAULT = [  # vLLM's automatic order (vLLM v0.33.0 vllm/model_executor/layers/fused_moe/oracle/nvfp4.py:203-213); sm_90 puts HUMMING first
    "FLASHINFER_TRTLLM", "FLASHINFER_CUTEDSL", "FLASHINFER_CUTEDSL_BATCHED", "FLASHINFER_CUTLASS",
    "VLLM_CUTLASS", "MARLIN", "HUMMING", "EMULATION",
]
# --moe-backend spelling of each oracle name
MOE_FLAG = {
    "B12X": "b12x", "FLASHINFER_TRTLLM": "flashinfer_trtllm", "FLASHINFER_CUTLASS": "flashinfer_cutlass",
    "FLASHINFER_CUTEDSL": "flashinfer_cutedsl", "FLASHINFER_CUTEDSL_BATCHED": "flashinfer_cutedsl",
    "FLASHINFER_B12X": "flashinfer_b12x", "VLLM_CUTLASS": "cutlass", "MARLIN": "marlin",
    "HUMMING": "humming", "EMULATION": "emulation",
}


@dataclass
class Options:
    size: int = 8192  # M = N = K of the timed GEMMs (fills an H100 / B200)
    check_size: int = 2048  # M = N = K of the float64-checked GEMMs
    repeats: int = 15
    warmup: int = 3
    seed: int = 0
    use_vllm: bool = True  # try vLLM's ops when it is importable

    @classmethod
    def quick(cls) -> "Options":
        return cls(size=2048, check_size=512, repeats=5, warmup=2)


@dataclass
class Context:
    options: Options = field(default_factory=Options)
    torch: Any = None
    torch_error: str = ""
    cuda: bool = False
    cuda_reason: str = ""
    device_name: str | None = None
    sm: int | None = None  # 90, 100, 120, 121
    vllm: Any = None
    vllm_error: str = ""
    bf16_tflops: float | None = None  # set by bf16_gemm, read by the FP8 / NVFP4 ratios

    @property
    def dev(self) -> str:
        return "cuda"

    def gen(self):
        return self.torch.Generator(device=self.dev).manual_seed(self.options.seed)


def discover(options: Options | None = None) -> Context:
    """Find torch / CUDA / vLLM without running any kernel (safe for `--list`)."""
    ctx = Context(options=options or Options())
    try:
        import torch
    except Exception as e:  # ImportError, or a broken install raising OSError on a missing .so
        ctx.torch_error = f"torch is not importable ({type(e).__name__}: {e})"
        ctx.cuda_reason = ctx.torch_error
        return ctx
    ctx.torch = torch
    try:
        ok = torch.cuda.is_available()
    except Exception as e:  # pragma: no cover - defensive
        ok, ctx.cuda_reason = False, f"torch.cuda.is_available() raised {type(e).__name__}: {e}"
    if not ok:
        ctx.cuda_reason = ctx.cuda_reason or (
            f"torch {torch.__version__} sees no CUDA GPU"
            + (" (a CPU-only build)" if torch.version.cuda is None else f" (built for CUDA {torch.version.cuda})")
        )
    else:
        ctx.cuda = True
        major, minor = torch.cuda.get_device_capability(0)
        ctx.sm = major * 10 + minor
        ctx.device_name = torch.cuda.get_device_name(0)
    if ctx.options.use_vllm:
        if importlib.util.find_spec("vllm") is None:
            ctx.vllm_error = "vLLM is not installed"
        elif ctx.cuda:
            try:
                ctx.vllm = importlib.import_module("vllm")
            except Exception as e:
                ctx.vllm_error = f"vLLM is installed but failed to import ({type(e).__name__}: {e})"
        else:
            ctx.vllm_error = "vLLM is installed but there is no CUDA GPU to run its ops on"
    else:
        ctx.vllm_error = "vLLM checks turned off (--no-vllm)"
    return ctx


def _version(mod: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:
        return None


# ------------------------------------------------------------------------------------- the check registry
Need = Literal["torch", "gpu", "vllm"]


@dataclass(frozen=True)
class CheckSpec:
    """One check, declared once with `@check(...)`: its id, titles, what it needs, and the function.

    The runner skips a check whose need is not met here before calling it (`unmet`), with the same
    reason `--list` shows; a check declared with own_skip=True is always called and reports its own
    skip (the environment check still records versions without torch; the KV-cache check says which
    FP8 hardware it would have used).
    """

    name: str  # stable id: --only, the JSON report, the TUI's row key
    title: str  # one line in the report
    short: str  # the shorter line of `--list` and the TUI's plan
    needs: Need
    fn: Callable[[Context, "CheckSpec"], CheckResult]
    own_skip: bool = False

    def result(self, status: Status, reason: str = "", details: dict[str, Any] | None = None) -> CheckResult:
        return CheckResult(self.name, self.title, status, reason=reason, details=details or {})

    def unmet(self, ctx: Context) -> str | None:
        """Why this check cannot run here (None when it can)."""
        if ctx.torch is None:
            return ctx.torch_error
        if self.needs == "torch":
            return None
        if not ctx.cuda:
            return ctx.cuda_reason
        if self.needs == "vllm" and ctx.vllm is None:
            return ctx.vllm_error or "vLLM is not available"
        return None

    def run(self, ctx: Context) -> CheckResult:
        if not self.own_skip and (why := self.unmet(ctx)) is not None:
            return self.result(Status.SKIPPED, reason=why)
        return self.fn(ctx, self)


CHECKS: list[CheckSpec] = []  # in run order: the order of the @check declarations below


def check(name: str, title: str, *, needs: Need, short: str | None = None,
          own_skip: bool = False) -> Callable[[Callable[[Context, CheckSpec], CheckResult]], Callable[[Context, CheckSpec], CheckResult]]:
    """Register the decorated function as a check (appended to CHECKS in declaration order)."""
    def register(fn: Callable[[Context, CheckSpec], CheckResult]) -> Callable[[Context, CheckSpec], CheckResult]:
        if any(c.name == name for c in CHECKS):
            raise ValueError(f"check {name!r} is declared twice")
        CHECKS.append(CheckSpec(name, title, short or title, needs, fn, own_skip))
        return fn
    return register


@contextlib.contextmanager
def vllm_config_context() -> Iterator[None]:
    """vLLM's kernels may read the current VllmConfig: give them a default one. If making or entering it
    fails (another vLLM version), run without it: the check itself then reports what breaks."""
    cm = None
    try:
        from vllm.config import VllmConfig, set_current_vllm_config

        cm = set_current_vllm_config(VllmConfig())
        cm.__enter__()
    except Exception:
        cm = None
    try:
        yield
    finally:
        if cm is not None:
            cm.__exit__(None, None, None)


def _err(e: BaseException) -> str:
    s = f"{type(e).__name__}: {e}"
    return s if len(s) < 400 else s[:397] + "..."


def arch_support(sm: int, arch_list: list[str]) -> tuple[str, str]:
    """Does a torch build with `arch_list` (torch.cuda.get_arch_list()) carry kernels for sm_<sm>?

    Returns (kind, entry): kind is "native" (sm_XY or sm_XYa/f itself), "family" (a cubin of the same
    major with a lower or equal minor, which runs here; arch-specific 'a' cubins do not carry over),
    "ptx" (only PTX of an older arch: the driver JIT-compiles it, slow start and no arch-specific
    instructions) or "missing".
    """
    major, minor = divmod(sm, 10)
    cubins: list[tuple[int, str, str]] = []
    ptx: list[tuple[int, str]] = []
    for entry in arch_list:
        kind, _, rest = entry.partition("_")
        digits = "".join(ch for ch in rest if ch.isdigit())
        suffix = rest[len(digits):]
        if not digits:
            continue
        v = int(digits)
        if kind == "sm":
            cubins.append((v, suffix, entry))
        elif kind == "compute":
            ptx.append((v, entry))
    for v, suffix, entry in cubins:
        if v == sm:
            return "native", entry
    for v, suffix, entry in sorted(cubins, reverse=True):
        vmaj, vmin = divmod(v, 10)
        if vmaj == major and vmin <= minor and suffix in ("", "f"):
            return "family", entry
    for v, entry in sorted(ptx, reverse=True):
        if v <= sm:
            return "ptx", entry
    return "missing", ""


def _probe_environment() -> dict[str, Any]:
    """Driver and GPU facts through spark_tui's probe when present, else NVML directly."""
    out: dict[str, Any] = {}
    try:
        from spark_tui.core.hardware import probe as probe_mod

        take = getattr(probe_mod, "take_probe", None)
        if take is not None:
            p = take()
            out["probe_status"] = p.status
            out["driver_version"] = p.driver_version
            out["cuda_driver_version"] = p.cuda_driver_version
            out["gpus_nvml"] = [
                {"index": g.index, "name": g.name, "sm": g.sm_name, "memory_total_bytes": g.memory_total_bytes}
                for g in p.gpus
            ]
            out["probe_source"] = "spark_tui.core.hardware.probe.take_probe"
            return out
    except Exception as e:
        out["probe_error"] = _err(e)
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        try:
            drv = pynvml.nvmlSystemGetDriverVersion()
            out["driver_version"] = drv.decode() if isinstance(drv, bytes) else drv
            cv = pynvml.nvmlSystemGetCudaDriverVersion()
            out["cuda_driver_version"] = f"{cv // 1000}.{(cv % 1000) // 10}"
            out["probe_source"] = "pynvml"
        finally:
            pynvml.nvmlShutdown()
    except Exception as e:
        out.setdefault("probe_error", _err(e))
    return out


# ---------------------------------------------------------------------------------------------- checks
@check("environment", "GPU, driver, CUDA, torch, vLLM, FlashInfer", needs="torch", own_skip=True)
def check_environment(ctx: Context, c: CheckSpec) -> CheckResult:
    d: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "vllm_version": _version("vllm"),
        "flashinfer_version": _version("flashinfer-python") or _version("flashinfer"),
    }
    if ctx.torch is None:
        return c.result(Status.SKIPPED, reason=ctx.torch_error, details=d)
    t = ctx.torch
    d["torch_version"] = t.__version__
    d["torch_cuda"] = t.version.cuda
    if not ctx.cuda:
        d.update(_probe_environment())
        return c.result(Status.SKIPPED, reason=ctx.cuda_reason, details=d)
    d["gpus"] = []
    for i in range(t.cuda.device_count()):
        pr = t.cuda.get_device_properties(i)
        d["gpus"].append(
            {
                "index": i, "name": pr.name, "sm": f"sm_{pr.major}{pr.minor}",
                "multiprocessors": pr.multi_processor_count, "memory_total_bytes": int(pr.total_memory),
            }
        )
    d["sm"] = f"sm_{ctx.sm}"
    d["cudnn"] = t.backends.cudnn.version() if t.backends.cudnn.is_available() else None
    d.update(_probe_environment())
    return c.result(Status.INFO, details=d)


@check("torch_arch", "torch build carries kernels for this SM", needs="gpu")
def check_torch_arch(ctx: Context, c: CheckSpec) -> CheckResult:
    arch = list(ctx.torch.cuda.get_arch_list())
    if ctx.sm is None:  # a GPU without a compute capability read: nothing to match the arch list against
        return c.result(Status.SKIPPED, reason=ctx.cuda_reason or "the GPU's compute capability was not read")
    kind, entry = arch_support(ctx.sm, arch)
    d = {"sm": f"sm_{ctx.sm}", "arch_list": arch, "match": kind, "entry": entry}
    if kind in ("native", "family"):
        return c.result(Status.PASS, details=d)
    if kind == "ptx":
        return c.result(Status.FAIL, details=d,
                        reason=f"only PTX ({entry}) for sm_{ctx.sm}: slow JIT start, no arch-specific kernels; "
                        "install a torch wheel built for this GPU")
    return c.result(Status.FAIL, details=d,
                    reason=f"torch {ctx.torch.__version__} has no kernels for sm_{ctx.sm}; install a newer CUDA wheel")


def _time_gemm(ctx: Context, s: int, sets: list, fn: Any) -> dict[str, Any]:
    """Time `fn(*sets[i % 2])`, an s x s x s GEMM, alternating two input sets so neither stays in cache:
    timed shape, median ms, TFLOP/s, repeats, and the ratio to this run's BF16 figure (None before it)."""
    from kernels_check.timing import tflops, time_cuda

    i = [0]

    def run():
        args = sets[i[0] % 2]
        i[0] += 1
        return fn(*args)

    tm = time_cuda(ctx.torch, run, ctx.options.warmup, ctx.options.repeats)
    tf = tflops(s, s, s, tm["median_ms"])
    bf = ctx.bf16_tflops
    return {"timed_shape": [s, s, s], "median_ms": tm["median_ms"], "tflops": tf,
            "ratio_to_bf16": (tf / bf) if bf else None, "repeats": tm["repeats"]}


@check("bf16_gemm", "BF16 GEMM: correctness vs float64, TFLOP/s", needs="gpu")
def check_bf16_gemm(ctx: Context, c: CheckSpec) -> CheckResult:
    from kernels_check.nvfp4 import rel_error

    t, o, g = ctx.torch, ctx.options, ctx.gen()
    n = o.check_size
    a = t.randn(n, n, device=ctx.dev, generator=g, dtype=t.float32).to(t.bfloat16)
    b = t.randn(n, n, device=ctx.dev, generator=g, dtype=t.float32).to(t.bfloat16)
    out = t.full((n, n), float("nan"), device=ctx.dev, dtype=t.bfloat16)  # poisoned: every element must be written
    t.matmul(a, b, out=out)
    err = rel_error(out, a.double() @ b.double())
    s = o.size
    sets = [(t.randn(s, s, device=ctx.dev, generator=g).to(t.bfloat16),
             t.randn(s, s, device=ctx.dev, generator=g).to(t.bfloat16)) for _ in range(2)]
    tm = _time_gemm(ctx, s, sets, lambda x, y: x @ y)
    tm.pop("ratio_to_bf16")  # this is the baseline
    ctx.bf16_tflops = tm["tflops"]
    d = {"check_shape": [n, n, n], "rel_error": err, "band": BF16_GEMM_BAND, **tm}
    ok = err <= BF16_GEMM_BAND
    return c.result(Status.PASS if ok else Status.FAIL, details=d,
                    reason="" if ok else f"relative error {err:.3g} above {BF16_GEMM_BAND}")


def _fp8_quant(t: Any, x: Any) -> tuple[Any, Any]:
    amax = x.abs().amax().float().clamp(min=1e-12)
    scale = amax / 448.0  # dequant scale
    q = (x.float() / scale).clamp(-448, 448).to(t.float8_e4m3fn)
    return q, scale.reshape(())


@check("fp8_gemm", "FP8 e4m3 scaled GEMM (torch._scaled_mm): error, TFLOP/s, ratio to BF16", needs="gpu",
       short="FP8 e4m3 scaled GEMM (torch._scaled_mm)")
def check_fp8_gemm(ctx: Context, c: CheckSpec) -> CheckResult:
    from kernels_check.nvfp4 import rel_error

    t, o, g = ctx.torch, ctx.options, ctx.gen()
    d: dict[str, Any] = {"api": "torch._scaled_mm(a, b, scale_a, scale_b, out_dtype=bfloat16)"}
    n = o.check_size
    a = t.randn(n, n, device=ctx.dev, generator=g)
    w = t.randn(n, n, device=ctx.dev, generator=g)  # (N, K) weight, row-major
    aq, sa = _fp8_quant(t, a)
    wq, sw = _fp8_quant(t, w)
    try:
        out = t._scaled_mm(aq, wq.t(), scale_a=sa, scale_b=sw, out_dtype=t.bfloat16)
        t.cuda.synchronize()
    except Exception as e:
        native = ctx.sm is not None and ctx.sm >= 89
        d["error"] = _err(e)
        return c.result(Status.FAIL if native else Status.NOT_NATIVE, details=d,
                        reason=("torch._scaled_mm FP8 raised on a GPU with FP8 tensor cores" if native
                                else f"sm_{ctx.sm} has no FP8 tensor cores (sm_89+)"))
    ref = (aq.double() * sa.double()) @ (wq.double() * sw.double()).t()
    err = rel_error(out, ref)
    d.update({"check_shape": [n, n, n], "rel_error": err, "band": FP8_GEMM_BAND,
              "rel_error_vs_unquantized": rel_error(out, a.double() @ w.double().t())})
    # row-wise scales (one per row of A, one per column of the output), optional API
    try:
        sra = (a.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / 448.0)
        srw = (w.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / 448.0)
        aqr = (a / sra).clamp(-448, 448).to(t.float8_e4m3fn)
        wqr = (w / srw).clamp(-448, 448).to(t.float8_e4m3fn)
        outr = t._scaled_mm(aqr, wqr.t(), scale_a=sra, scale_b=srw.t().contiguous(), out_dtype=t.bfloat16)
        refr = (aqr.double() * sra.double()) @ (wqr.double() * srw.double()).t()
        d["rowwise_rel_error"] = rel_error(outr, refr)
    except Exception as e:
        d["rowwise_error"] = _err(e)
    s = o.size
    sets = []
    for _ in range(2):
        x, sx = _fp8_quant(t, t.randn(s, s, device=ctx.dev, generator=g))
        y, sy = _fp8_quant(t, t.randn(s, s, device=ctx.dev, generator=g))
        sets.append((x, y.t(), sx, sy))
    d.update(_time_gemm(ctx, s, sets, lambda x, y, sx, sy: t._scaled_mm(x, y, scale_a=sx, scale_b=sy, out_dtype=t.bfloat16)))
    ok = err <= FP8_GEMM_BAND and ("rowwise_rel_error" not in d or d["rowwise_rel_error"] <= FP8_GEMM_BAND)
    return c.result(Status.PASS if ok else Status.FAIL, details=d,
                    reason="" if ok else f"relative error {err:.3g} (row-wise {d.get('rowwise_rel_error')}) above {FP8_GEMM_BAND}")


@check("nvfp4_reference", "NVFP4 reference quantizer: round-trip error, grid exactness", needs="torch",
       short="NVFP4 reference quantizer round trip")
def check_nvfp4_reference(ctx: Context, c: CheckSpec) -> CheckResult:
    """The reference quantizer's own round trip; runs on the GPU, or on the CPU when there is none."""
    from kernels_check import nvfp4 as q4

    t = ctx.torch
    dev = ctx.dev if ctx.cuda else "cpu"
    g = t.Generator(device=dev).manual_seed(ctx.options.seed)
    x = t.randn(512, 1024, device=dev, generator=g)
    q = q4.quantize(x)
    err = q4.rel_error(q.dequantize(), x)
    # values already on the grid (grid value x power-of-two block scale) must round-trip exactly
    codes = t.randint(0, 16, (256, 1024), device=dev, generator=g, dtype=t.int64).to(t.uint8)
    codes[:, ::16] = 7  # each block holds +6 so its amax is 6 * block scale
    bscale = 2.0 ** t.randint(-4, 5, (256, 64), device=dev, generator=g).float()
    grid = (q4.e2m1_decode(codes).reshape(256, 64, 16) * bscale[..., None]).reshape(256, 1024)
    qg = q4.quantize(grid, global_scale=1.0)
    exact = bool(t.equal(qg.dequantize(), grid))
    canon = codes.clone()
    canon[canon == 8] = 0  # -0 is stored as +0
    same_codes = bool(t.equal(q4.unpack(qg.packed), canon))
    d = {"device": dev, "shape": [512, 1024], "rel_error": err, "band": list(NVFP4_ROUNDTRIP_BAND),
         "global_scale": float(q.global_scale), "packed_shape": list(q.packed.shape),
         "scale_shape": list(q.block_scale.shape), "grid_roundtrip_exact": exact, "grid_codes_identical": same_codes}
    ok = NVFP4_ROUNDTRIP_BAND[0] <= err <= NVFP4_ROUNDTRIP_BAND[1] and exact and same_codes
    return c.result(Status.PASS if ok else Status.FAIL, details=d,
                    reason="" if ok else "reference quantizer out of its band or not exact on the grid")


def _nvfp4_pair(ctx: Context, m: int, n: int, k: int, g: Any) -> tuple[Any, Any, Any, Any]:
    from kernels_check import nvfp4 as q4

    t = ctx.torch
    a = t.randn(m, k, device=ctx.dev, generator=g).to(t.bfloat16)
    w = t.randn(n, k, device=ctx.dev, generator=g).to(t.bfloat16)
    return a, w, q4.quantize(a), q4.quantize(w)


def _torch_fp4_mm(ctx: Context, qa: Any, qw: Any) -> Any:
    from kernels_check import nvfp4 as q4

    t = ctx.torch
    sa = q4.to_blocked(qa.block_scale)
    sw = q4.to_blocked(qw.block_scale)
    out = t._scaled_mm(qa.packed.view(t.float4_e2m1fn_x2), qw.packed.view(t.float4_e2m1fn_x2).t(),
                       scale_a=sa, scale_b=sw, out_dtype=t.bfloat16)
    return out, 1.0 / (qa.global_scale * qw.global_scale)


@check("nvfp4_gemm_torch", "NVFP4 GEMM via torch._scaled_mm (float4_e2m1fn_x2, e4m3 block scales)", needs="gpu",
       short="NVFP4 GEMM via torch._scaled_mm")
def check_nvfp4_gemm_torch(ctx: Context, c: CheckSpec) -> CheckResult:
    from kernels_check import nvfp4 as q4

    t, o = ctx.torch, ctx.options
    d: dict[str, Any] = {"api": "torch._scaled_mm(fp4 A, fp4 B^T, to_blocked(scales), out_dtype=bfloat16) * 1/(gA*gB)"}
    if not hasattr(t, "float4_e2m1fn_x2"):
        return c.result(Status.SKIPPED, details=d, reason=f"torch {t.__version__} has no float4_e2m1fn_x2 dtype")
    g = ctx.gen()
    n = o.check_size
    a, w, qa, qw = _nvfp4_pair(ctx, n, n, n, g)
    try:
        out, alpha = _torch_fp4_mm(ctx, qa, qw)
        out = out.float() * alpha
        t.cuda.synchronize()
    except Exception as e:
        d["error"] = _err(e)
        if ctx.sm is not None and ctx.sm < 100:
            return c.result(Status.NOT_NATIVE, details=d,
                            reason=f"sm_{ctx.sm} has no FP4 tensor cores (Blackwell sm_100+/sm_120+); torch refused")
        return c.result(Status.FAIL, details=d,
                        reason=f"torch._scaled_mm NVFP4 raised on sm_{ctx.sm}")
    ref = qa.dequantize(t.float64) @ qw.dequantize(t.float64).t()
    err = q4.rel_error(out, ref)
    d.update({"check_shape": [n, n, n], "rel_error": err, "band": NVFP4_GEMM_BAND,
              "rel_error_vs_bf16_inputs": q4.rel_error(out, a.double() @ w.double().t())})
    if err > NVFP4_GEMM_BAND:
        return c.result(Status.FAIL, details=d, reason=f"relative error {err:.3g} above {NVFP4_GEMM_BAND}")
    s = o.size
    sets = []
    for _ in range(2):
        _, _, xa, xw = _nvfp4_pair(ctx, s, s, s, g)
        sets.append((xa.packed.view(t.float4_e2m1fn_x2), xw.packed.view(t.float4_e2m1fn_x2).t(),
                     q4.to_blocked(xa.block_scale), q4.to_blocked(xw.block_scale)))
    d.update(_time_gemm(ctx, s, sets, lambda x, y, sx, sy: t._scaled_mm(x, y, scale_a=sx, scale_b=sy, out_dtype=t.bfloat16)))
    return c.result(Status.PASS, details=d)


@check("nvfp4_gemm_vllm", "NVFP4 GEMM via vLLM (scaled_fp4_quant + cutlass_scaled_fp4_mm)", needs="vllm",
       short="NVFP4 GEMM via vLLM cutlass_scaled_fp4_mm")
def check_nvfp4_gemm_vllm(ctx: Context, c: CheckSpec) -> CheckResult:
    from kernels_check import nvfp4 as q4

    t, o = ctx.torch, ctx.options
    d: dict[str, Any] = {}
    try:
        ops = importlib.import_module("vllm._custom_ops")
    except Exception as e:
        return c.result(Status.FAIL, details={"error": _err(e)}, reason="vllm._custom_ops failed to import")
    sup = getattr(ops, "cutlass_scaled_mm_supports_fp4", None)
    if sup is not None:
        try:
            d["vllm_supports_fp4"] = bool(sup(ctx.sm))
        except Exception as e:
            d["vllm_supports_fp4_error"] = _err(e)
    if d.get("vllm_supports_fp4") is False:
        return c.result(Status.NOT_NATIVE, details=d,
                        reason=f"vLLM's cutlass_scaled_mm_supports_fp4({ctx.sm}) is False: no native NVFP4 GEMM on this GPU")
    g = ctx.gen()
    n = o.check_size
    a, w, qa_ref, qw_ref = _nvfp4_pair(ctx, n, n, n, g)
    try:
        ga, gw = q4.global_scale_for(a), q4.global_scale_for(w)
        aq, sa = ops.scaled_fp4_quant(a, ga)
        wq, sw = ops.scaled_fp4_quant(w, gw)
        alpha = (1.0 / (ga * gw)).to(t.float32)
        out = ops.cutlass_scaled_fp4_mm(aq, wq, sa, sw, alpha, t.bfloat16)
        t.cuda.synchronize()
    except Exception as e:
        d["error"] = _err(e)
        native = ctx.sm is not None and ctx.sm >= 100
        return c.result(Status.FAIL if native else Status.NOT_NATIVE, details=d,
                        reason=("vLLM NVFP4 ops raised" if native else f"sm_{ctx.sm} has no native NVFP4 GEMM in vLLM"))
    # reference from vLLM's own quantized bytes and scales (swizzled layout read back with from_blocked)
    kb = n // q4.BLOCK
    va = q4.Nvfp4Tensor(aq.view(t.uint8), q4.from_blocked(sa.view(t.float8_e4m3fn).reshape(-1), n, kb), ga, (n, n))
    vw = q4.Nvfp4Tensor(wq.view(t.uint8), q4.from_blocked(sw.view(t.float8_e4m3fn).reshape(-1), n, kb), gw, (n, n))
    ref = va.dequantize(t.float64) @ vw.dequantize(t.float64).t()
    err = q4.rel_error(out, ref)
    same_bytes = float((aq.view(t.uint8) == qa_ref.packed).float().mean())
    same_scales = float((va.block_scale.float() == qa_ref.block_scale.float()).float().mean())
    d.update({"check_shape": [n, n, n], "rel_error": err, "band": NVFP4_GEMM_BAND,
              "quant_bytes_equal_to_reference": same_bytes, "quant_scales_equal_to_reference": same_scales,
              "rel_error_vs_bf16_inputs": q4.rel_error(out, a.double() @ w.double().t())})
    if err > NVFP4_GEMM_BAND or same_scales < 0.99 or same_bytes < 0.99:
        return c.result(Status.FAIL, details=d,
                        reason=f"relative error {err:.3g} (band {NVFP4_GEMM_BAND}); quantizer agreement "
                        f"bytes {same_bytes:.4f}, scales {same_scales:.4f} (need 0.99)")
    s = o.size
    sets = []
    for _ in range(2):
        x = t.randn(s, s, device=ctx.dev, generator=g).to(t.bfloat16)
        y = t.randn(s, s, device=ctx.dev, generator=g).to(t.bfloat16)
        gx, gy = q4.global_scale_for(x), q4.global_scale_for(y)
        xq, sx = ops.scaled_fp4_quant(x, gx)
        yq, sy = ops.scaled_fp4_quant(y, gy)
        sets.append((xq, yq, sx, sy, (1.0 / (gx * gy)).to(t.float32)))
    d.update(_time_gemm(ctx, s, sets, lambda x, y, sx, sy, al: ops.cutlass_scaled_fp4_mm(x, y, sx, sy, al, t.bfloat16)))
    return c.result(Status.PASS, details=d)


@check("nvfp4_marlin", "NVFP4 weight-only fallback (vLLM Marlin W4A16 GEMM)", needs="vllm",
       short="NVFP4 weight-only fallback (vLLM Marlin)")
def check_nvfp4_marlin(ctx: Context, c: CheckSpec) -> CheckResult:
    from kernels_check import nvfp4 as q4
    from kernels_check.timing import time_cuda

    t, o = ctx.torch, ctx.options
    d: dict[str, Any] = {}
    try:
        mu = importlib.import_module("vllm.model_executor.layers.quantization.utils.marlin_utils_fp4")
    except Exception as e:
        return c.result(Status.FAIL, details={"error": _err(e)}, reason="vLLM's marlin_utils_fp4 failed to import")
    try:
        d["vllm_is_fp4_marlin_supported"] = bool(mu.is_fp4_marlin_supported())
    except Exception as e:
        d["vllm_is_fp4_marlin_supported_error"] = _err(e)
    if d.get("vllm_is_fp4_marlin_supported") is False:
        return c.result(Status.FAIL, details=d, reason=f"vLLM says FP4 Marlin is not supported on sm_{ctx.sm}")
    g = ctx.gen()
    results: list[dict[str, Any]] = []
    for m, n, k in ((16, 4096, 4096), (o.check_size, o.check_size, o.check_size)):
        w = t.randn(n, k, device=ctx.dev, generator=g).to(t.bfloat16)
        x = t.randn(m, k, device=ctx.dev, generator=g).to(t.bfloat16)
        qw = q4.quantize(w)
        layer = t.nn.Module()
        layer.output_size_per_partition, layer.input_size_per_partition = n, k
        layer.params_dtype = t.bfloat16
        P = t.nn.Parameter
        layer.weight = P(qw.packed.clone(), requires_grad=False)
        layer.weight_scale = P(qw.block_scale.clone(), requires_grad=False)
        dec = (1.0 / qw.global_scale).to(t.float32).reshape(())
        # newer vLLM names the per-tensor dequant scale weight_global_scale, older weight_scale_2
        layer.weight_global_scale = P(dec.clone(), requires_grad=False)
        layer.weight_scale_2 = P(dec.clone(), requires_grad=False)
        before = {"weight_global_scale": layer.weight_global_scale, "weight_scale_2": layer.weight_scale_2}
        try:
            mu.prepare_fp4_layer_for_marlin(layer)
            gname = next((k_ for k_, v in before.items() if getattr(layer, k_) is not v), None)
            if gname is None:
                raise RuntimeError("prepare_fp4_layer_for_marlin did not rewrite the global scale")
            gsc = getattr(layer, gname)

            def run():
                return mu.apply_fp4_marlin_linear(x, layer.weight, layer.weight_scale, gsc, layer.workspace, n, k)

            out = t.full((m, n), float("nan"), device=ctx.dev, dtype=t.bfloat16)
            out.copy_(run())
            t.cuda.synchronize()
        except Exception as e:
            d["error"] = _err(e)
            return c.result(Status.FAIL, details=d, reason="vLLM's FP4 Marlin GEMM raised")
        ref = x.double() @ qw.dequantize(t.float64).t()
        err = q4.rel_error(out, ref)
        tm = time_cuda(t, run, o.warmup, o.repeats)
        wbytes = n * k // 2 + n * k // 16
        results.append({"shape_mnk": [m, n, k], "rel_error": err, "median_ms": tm["median_ms"],
                        "tflops": 2.0 * m * n * k / (tm["median_ms"] * 1e-3) / 1e12,
                        "weight_gb_per_s": wbytes / (tm["median_ms"] * 1e-3) / 1e9, "global_scale_attr": gname})
    d["runs"] = results
    d["band"] = NVFP4_GEMM_BAND
    bad = [r for r in results if r["rel_error"] > NVFP4_GEMM_BAND]
    if bad:
        return c.result(Status.FAIL, details=d,
                        reason=f"relative error {bad[0]['rel_error']:.3g} above {NVFP4_GEMM_BAND} at {bad[0]['shape_mnk']}")
    return c.result(Status.PASS, details=d)


def _moe_oracle(ctx: Context) -> tuple[Any, Any, Any]:
    oracle = importlib.import_module("vllm.model_executor.layers.fused_moe.oracle.nvfp4")
    qu = importlib.import_module("vllm.model_executor.layers.quantization.utils.quant_utils")
    return oracle, getattr(qu, "kNvfp4Static", None), getattr(qu, "kNvfp4Dynamic", None)


def _nvfp4_moe_support(ctx: Context) -> tuple[list[dict[str, Any]], list[str], Any, Any]:
    """Per NVFP4 MoE backend: vLLM's own _supports_current_device / _supports_quant_scheme answers, and vLLM's
    automatic order for this SM. Raises when the oracle module does not import."""
    oracle, wkey, akey = _moe_oracle(ctx)
    rows = []
    for b in list(oracle.NvFp4MoeBackend):
        row: dict[str, Any] = {"backend": b.value, "flag": MOE_FLAG.get(b.value, b.value.lower())}
        try:
            classes = oracle.backend_to_kernel_cls(b)
            classes = classes if isinstance(classes, (list, tuple)) else [classes]
        except Exception as e:
            row.update({"available": False, "reason": f"kernel module not importable: {_err(e)}"})
            rows.append(row)
            continue
        row["available"] = True
        row["kernels"] = [k.__name__ for k in classes]
        dev = w4a4 = w4a16 = False
        notes = []
        for k in classes:
            try:
                dev = dev or bool(k._supports_current_device())
            except Exception as e:
                notes.append(f"{k.__name__}._supports_current_device: {_err(e)}")
            for pair, label in (((wkey, akey), "w4a4"), ((wkey, None), "w4a16")):
                try:
                    okq = bool(k._supports_quant_scheme(*pair))
                except Exception as e:
                    okq = False
                    notes.append(f"{k.__name__}._supports_quant_scheme({label}): {_err(e)}")
                if label == "w4a4":
                    w4a4 = w4a4 or okq
                else:
                    w4a16 = w4a16 or okq
        # scheme_*: the kernel accepts the quant scheme at all; w4a4 / w4a16: and on this device
        row.update({"device_supported": dev, "scheme_w4a4": w4a4, "scheme_w4a16": w4a16,
                    "w4a4": w4a4 and dev, "w4a16": w4a16 and dev})
        if notes:
            row["notes"] = notes
        rows.append(row)
    order = list(NVFP4_MOE_ORDER_DEFAULT)
    if ctx.sm is not None and ctx.sm // 10 == 9 and "HUMMING" in order and "MARLIN" in order:
        order.remove("HUMMING")
        order.insert(order.index("MARLIN"), "HUMMING")
    return rows, order, wkey, akey


@check("moe_backends", "NVFP4 MoE backends vLLM would accept on this SM (vLLM's own checks)", needs="vllm",
       short="NVFP4 MoE backends per vLLM's own checks")
def check_moe_backends(ctx: Context, c: CheckSpec) -> CheckResult:
    try:
        rows, order, wkey, akey = _nvfp4_moe_support(ctx)
    except Exception as e:
        return c.result(Status.FAIL, details={"error": _err(e)},
                        reason="vLLM's NVFP4 MoE oracle (fused_moe/oracle/nvfp4.py) failed to import")
    by = {r_["backend"]: r_ for r_ in rows}
    auto_w4a4 = next((b for b in order if by.get(b, {}).get("w4a4")), None)
    auto_w4a16 = next((b for b in order if by.get(b, {}).get("w4a16")), None)
    d = {"sm": f"sm_{ctx.sm}", "quant_keys_found": wkey is not None and akey is not None,
         "backends": rows, "auto_order": order, "auto_pick_w4a4": auto_w4a4,
         "auto_pick_w4a16": auto_w4a16,
         "method": "each kernel class's _supports_current_device() and _supports_quant_scheme(kNvfp4Static, "
                   "kNvfp4Dynamic | None), the checks select_nvfp4_moe_backend runs; order per vLLM v0.33.0 vllm/model_executor/layers/fused_moe/oracle/nvfp4.py:203-213"}
    return c.result(Status.INFO, details=d)


@check("moe_nvfp4_agree", "NVFP4 fused MoE through each backend vLLM supports here: error vs float64, "
       "spread between backends, time", needs="vllm", short="NVFP4 MoE backends agree (vLLM layers)")
def check_moe_nvfp4_agree(ctx: Context, c: CheckSpec) -> CheckResult:
    """The same small NVFP4 MoE through vLLM's own MoE layer once per supported backend and scheme
    (kernels_check/moe_agree.py); one backend failing or raising fails the check, the others still run."""
    from kernels_check import moe_agree as ma

    try:
        rows, order, _, _ = _nvfp4_moe_support(ctx)
    except Exception as e:
        return c.result(Status.FAIL, details={"error": _err(e)},
                        reason="vLLM's NVFP4 MoE oracle (fused_moe/oracle/nvfp4.py) failed to import")
    shape = ma.MoeShape()
    plan = ma.backends_to_run(rows, order)
    d: dict[str, Any] = {"shape": shape.as_dict(), "bands": dict(ma.BANDS), "plan": [f"{f} {s}" for _, f, s in plan],
                         "method": "vLLM RoutedExperts + ModelOptNvFp4Config per --moe-backend, the reference "
                                   "quantizer's tensors, process_weights_after_loading, forward_modular / "
                                   "forward_monolithic; float64 reference of the dequantized MoE"}
    if not plan:
        return c.result(Status.SKIPPED, details=d,
                        reason=f"vLLM's own checks accept no NVFP4 MoE backend on sm_{ctx.sm}")
    try:
        p = ma.make_problem(ctx.torch, ctx.dev, shape, seed=ctx.options.seed)
        d["reference_distance"] = ma.rel(p.refs["nvfp4"], p.refs["bf16"])  # NVFP4 vs BF16 activations
        runs, outputs = ma.run_backends(ctx.torch, p, plan, ctx.options.warmup, ctx.options.repeats)
        pairs = ma.pairwise(outputs, p.refs)
    except Exception as e:  # outside any one backend (problem, references, vLLM setup): the check fails
        last, tail = ma._tail(e)
        d.update(error=last, traceback_tail=tail)
        return c.result(Status.FAIL, details=d, reason=f"raised {last}")
    status, reason, summary = ma.summarize(runs, pairs)
    d.update(runs=runs, pairs=pairs, summary=summary)
    st = {"pass": Status.PASS, "fail": Status.FAIL, "skipped": Status.SKIPPED}[status]
    return c.result(st, reason=reason, details=d)


def _torch_moe(t: Any, x: Any, w1: Any, w2: Any, topk_w: Any, topk_ids: Any) -> Any:
    """Plain float64 MoE: out = sum_k w_k * W2[e_k] (silu(gate) * up), with W1[e] = [gate; up]."""
    xd = x.double()
    out = t.zeros(x.shape[0], w2.shape[1], dtype=t.float64, device=x.device)
    inter = w1.shape[1] // 2
    for j in range(topk_ids.shape[1]):
        for e in topk_ids[:, j].unique().tolist():
            rows = (topk_ids[:, j] == e).nonzero().squeeze(1)
            h = xd[rows] @ w1[e].double().t()
            act = t.nn.functional.silu(h[:, :inter]) * h[:, inter:]
            out[rows] += topk_w[rows, j].double()[:, None] * (act @ w2[e].double().t())
    return out


@check("moe_triton_bf16", "BF16 fused MoE (vLLM triton fused_experts) vs a torch reference", needs="vllm",
       short="BF16 fused MoE (vLLM triton) vs torch")
def check_moe_triton_bf16(ctx: Context, c: CheckSpec) -> CheckResult:
    from kernels_check import nvfp4 as q4
    from kernels_check.timing import time_cuda

    t, o = ctx.torch, ctx.options
    fused = None
    errs = []
    for mod in ("vllm.model_executor.layers.fused_moe.fused_moe", "vllm.model_executor.layers.fused_moe"):
        try:
            fused = getattr(importlib.import_module(mod), "fused_experts")
            break
        except Exception as e:
            errs.append(f"{mod}: {_err(e)}")
    if fused is None:
        return c.result(Status.FAIL, details={"errors": errs}, reason="vLLM's fused_experts not found")
    g = ctx.gen()
    # Qwen3.6-35B-A3B shapes (the model's config.json, profiles/models/qwen3.6-35b-a3b.toml): hidden 2048, moe_intermediate 512, top-8; 64 of the 256 experts
    tokens, hidden, inter, experts, topk = 256, 2048, 512, 64, 8
    x = (t.randn(tokens, hidden, device=ctx.dev, generator=g) * 0.5).to(t.bfloat16)
    w1 = (t.randn(experts, 2 * inter, hidden, device=ctx.dev, generator=g) / hidden ** 0.5).to(t.bfloat16)
    w2 = (t.randn(experts, hidden, inter, device=ctx.dev, generator=g) / inter ** 0.5).to(t.bfloat16)
    logits = t.randn(tokens, experts, device=ctx.dev, generator=g)
    topk_w, topk_ids = t.topk(t.softmax(logits, dim=-1), topk, dim=-1)
    topk_w = (topk_w / topk_w.sum(-1, keepdim=True)).float()
    topk_ids = topk_ids.to(t.int32)
    d: dict[str, Any] = {"shape": {"tokens": tokens, "hidden": hidden, "intermediate": inter, "experts": experts, "topk": topk}}
    try:
        out = fused(hidden_states=x, w1=w1, w2=w2, topk_weights=topk_w, topk_ids=topk_ids)
        t.cuda.synchronize()
    except Exception as e:
        d["error"] = _err(e)
        return c.result(Status.FAIL, details=d, reason="vLLM fused_experts raised")
    ref = _torch_moe(t, x, w1, w2, topk_w, topk_ids.long())
    err = q4.rel_error(out, ref)
    tm = time_cuda(t, lambda: fused(hidden_states=x, w1=w1, w2=w2, topk_weights=topk_w, topk_ids=topk_ids),
                   o.warmup, o.repeats)
    d.update({"rel_error": err, "band": BF16_GEMM_BAND, "median_ms": tm["median_ms"]})
    ok = err <= BF16_GEMM_BAND
    return c.result(Status.PASS if ok else Status.FAIL, details=d,
                    reason="" if ok else f"relative error {err:.3g} above {BF16_GEMM_BAND}")


@check("kv_cache_fp8", "FP8 (e4m3) KV cache: vLLM's cache-write kernel round trip", needs="vllm",
       short="FP8 KV cache write kernel (vLLM)", own_skip=True)
def check_kv_cache_fp8(ctx: Context, c: CheckSpec) -> CheckResult:
    if not ctx.cuda:
        return c.result(Status.SKIPPED, reason=ctx.cuda_reason)
    from kernels_check import nvfp4 as q4

    t = ctx.torch
    fp8_hw = ctx.sm is not None and ctx.sm >= 89
    d: dict[str, Any] = {"fp8_tensor_cores": fp8_hw}
    if ctx.vllm is None:
        return c.result(Status.SKIPPED, details=d,
                        reason=f"{ctx.vllm_error}: vLLM's FP8 KV-cache kernel cannot be run")
    g = ctx.gen()
    # one full-attention layer of Qwen3.6-35B-A3B: 2 KV heads x head_dim 256 (the model's config.json, profiles/models/qwen3.6-35b-a3b.toml)
    tokens, heads, hd, block, nblocks = 64, 2, 256, 16, 8
    key = t.randn(tokens, heads, hd, device=ctx.dev, generator=g).to(t.bfloat16)
    value = t.randn(tokens, heads, hd, device=ctx.dev, generator=g).to(t.bfloat16)
    kc = t.zeros(nblocks, block, heads, hd, device=ctx.dev, dtype=t.uint8)
    vc = t.zeros_like(kc)
    slots = t.randperm(nblocks * block, device=ctx.dev, generator=g)[:tokens].to(t.int64)
    ks = t.tensor(float(key.abs().max()) / 448.0, device=ctx.dev, dtype=t.float32)
    vs = t.tensor(float(value.abs().max()) / 448.0, device=ctx.dev, dtype=t.float32)
    try:
        ops = importlib.import_module("vllm._custom_ops")
        ops.reshape_and_cache_flash(key, value, kc, vc, slots, "fp8", ks, vs)
        t.cuda.synchronize()
    except Exception as e:
        d["error"] = _err(e)
        return c.result(Status.FAIL, details=d, reason="vLLM reshape_and_cache_flash with kv_cache_dtype=fp8 raised")
    flat_k = kc.view(t.float8_e4m3fn).reshape(-1, heads, hd)[slots].float() * ks
    flat_v = vc.view(t.float8_e4m3fn).reshape(-1, heads, hd)[slots].float() * vs
    ek, ev = q4.rel_error(flat_k, key), q4.rel_error(flat_v, value)
    d.update({"rel_error_k": ek, "rel_error_v": ev, "band": KV_FP8_BAND, "layout": "[blocks, block_size, kv_heads, head_dim]"})
    ok = ek <= KV_FP8_BAND and ev <= KV_FP8_BAND
    return c.result(Status.PASS if ok else Status.FAIL, details=d,
                    reason="" if ok else f"FP8 KV round-trip error k={ek:.3g} v={ev:.3g} above {KV_FP8_BAND}")
