"""The planner: device + checkpoint + goal -> a `vllm serve` Plan where every flag has a reason and a source.

`make_plan(...)` is pure (no printing, no network, no torch/vllm import) and fast: the CLI's
`plan --json`, the TUI and export/launch/tune call it. The memory picture is always computed from the
FINAL flag set (after `--set` overrides or a published recipe), so what is shown is what would run.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from spark_tui.core import memory as mem
from spark_tui.core import vllm_compat as compat
from spark_tui.core.plan import CheckpointRef, DeviceRef, EnvChoice, FlagChoice, MemoryEstimate, Plan
from spark_tui.core.profiles import Catalog, CheckpointProfile, DeviceProfile, catalog as default_catalog, match_gpu
from spark_tui.errors import PlanError, UsageError

GOALS = ("latency", "throughput", "context", "balanced")
GiB = 2**30
UNIFIED_MARGIN_BYTES = 4 * GiB  # kept free below MemAvailable on unified memory (spark-tui choice, page cache/OS)
DEFAULT_SERVED_NAME = "qwen3.6-35b-a3b"
S_FACTS1, S_FACTS2, S_FACTS6 = "FACTS.md §1", "FACTS.md §2", "FACTS.md §6"
R = "vllm-project/recipes Qwen3.6-35B-A3B.yaml via FACTS.md §6"

# max-num-seqs per goal when not given: latency = the model-card Spark command, balanced = the official recipe
GOAL_SEQS = {"latency": (4, "seed 001 (model-card DGX Spark command: --max-num-seqs 4)"),
             "balanced": (8, f"{R} (--max-num-seqs 8)"),
             "context": (4, "seed 001 (4 sequences leave the most KV per request)")}
GOAL_MTP = {"latency": 3, "balanced": 3, "context": 3, "throughput": 1}


@dataclass(frozen=True)
class Target:
    """The device being planned for, resolved from a profile or a probe."""

    profile: DeviceProfile
    total_bytes: int | None
    mem_available_bytes: int | None  # unified memory: host MemAvailable
    free_bytes: int | None  # discrete: NVML free
    gpu_count: int
    name: str
    sm: int | None
    source: str
    match: str = ""


# ------------------------------------------------------------------------------------------------ parse
def parse_size(s: str) -> int:
    """vLLM's human-readable sizes: 16M = 16 MiB (upper case binary), 16m = 16e6 (lower case decimal)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*", s)
    if not m:
        raise UsageError(f"not a size: {s!r}", "write bytes, or a number with K/M/G/T (binary) or k/m/g/t (decimal)")
    num, unit = float(m.group(1)), m.group(2)
    if not unit:
        return int(num)
    power = "kmgt".index(unit.lower()) + 1
    return int(num * ((1024 if unit.isupper() else 1000) ** power))


def parse_set(items: Iterable[str]) -> list[tuple[str, str | None, bool]]:
    """`--set` items -> (name, value, remove). FLAG=VALUE sets, FLAG a switch, FLAG= removes.
    A name in UPPER_CASE without dashes is an environment variable."""
    out = []
    for raw in items:
        name, eq, value = raw.partition("=")
        name = name.strip()
        if not name:
            raise UsageError(f"--set {raw!r}: no flag name", "write --set FLAG=VALUE, --set FLAG or --set FLAG=")
        is_env = re.fullmatch(r"[A-Z_][A-Z0-9_]*", name) is not None
        if not is_env and not name.startswith("-"):
            name = "--" + name
        if not is_env and not re.fullmatch(r"--?[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise UsageError(f"--set {raw!r}: {name!r} is not a flag name", "e.g. --set max-num-seqs=16")
        if not eq:
            out.append((name, None, False))
        elif value == "":
            out.append((name, None, True))
        else:
            out.append((name, value, False))
    return out


def split_args(args: Iterable[str]) -> list[tuple[str, str | None]]:
    """['--a', '1', '--b'] -> [('--a', '1'), ('--b', None)]."""
    out: list[tuple[str, str | None]] = []
    toks = list(args)
    i = 0
    while i < len(toks):
        t = toks[i]
        if "=" in t and t.startswith("--"):
            k, _, v = t.partition("=")
            out.append((k, v))
            i += 1
        elif i + 1 < len(toks) and not toks[i + 1].startswith("--"):
            out.append((t, toks[i + 1]))
            i += 2
        else:
            out.append((t, None))
            i += 1
    return out


# ------------------------------------------------------------------------------------------------ device
def resolve_target(cat: Catalog, device_id: str | None, probe: Any = None, gpu_index: int = 0) -> Target:
    if device_id:
        d = cat.device(device_id)
        return Target(d, d.memory_total_bytes, None, None, 1, d.name, d.sm, "profile", f"--device {d.id}")
    if probe is None:
        raise UsageError("no device given", "pass --device ID (see `spark-tui devices`) or --probe-file FILE")
    src = "probe" if probe.source == "nvml" else f"probe-{probe.source}"
    if not probe.ok:
        raise PlanError(
            f"no NVIDIA GPU found ({probe.status}{': ' + probe.message if probe.message else ''})",
            "plan for another machine with --device ID (see `spark-tui devices`) or --probe-file FILE",
        )
    if not 0 <= gpu_index < len(probe.gpus):
        raise UsageError(f"GPU index {gpu_index} is not in the probe ({len(probe.gpus)} GPUs)", "pick a listed index")
    g = probe.gpus[gpu_index]
    m = match_gpu(cat, g.name, g.pci_device, g.sm)
    if m is None:
        raise PlanError(f"GPU {g.name!r} ({g.sm_name or 'unknown SM'}) matches no device profile",
                        "add a profile under your config dir profiles/devices/, or pass --device ID")
    same = sum(1 for x in probe.gpus if x.name == g.name)
    host = probe.host
    total = g.memory_total_bytes
    if total is None:  # GB10: NVML NOT_SUPPORTED; vLLM then uses CUDA's total_memory, i.e. the host RAM total
        total = host.ram_total_bytes or m.device.memory_total_bytes
    return Target(m.device, total, host.mem_available_bytes if (g.unified_memory or m.device.unified_memory) else None,
                  g.memory_free_bytes, same, g.name, g.sm if g.sm is not None else m.device.sm, src, m.detail)


# ------------------------------------------------------------------------------------------------ checkpoint
def choose_checkpoint(cat: Catalog, t: Target, checkpoint_id: str | None) -> tuple[CheckpointProfile, str, str, list[str]]:
    """(checkpoint, reason, source, warnings)."""
    sm = t.sm or 0
    warns: list[str] = []
    if checkpoint_id:
        c = cat.checkpoint(checkpoint_id)
        if c.is_nvfp4 and sm < 100:
            warns.append(f"{c.repo_id} is NVFP4; {t.profile.id} (sm_{sm}) has no FP4 tensor cores, so it runs as "
                         "weight-only dequant (Marlin/Humming), not native FP4. The FP8 checkpoint "
                         "(--checkpoint qwen-fp8) is usually faster on Hopper (seed 000).")
        if c.format is None:
            warns.append(f"{c.repo_id}: quantization format not verified (FACTS.md §5); vLLM reads it from the "
                         "checkpoint's config.")
        return c, "chosen with --checkpoint", "user --checkpoint", warns
    if sm >= 100:
        c = cat.checkpoint("nvidia-nvfp4")
        return (c, f"native NVFP4 on Blackwell (sm_{sm}); NVIDIA's ModelOpt checkpoint is the one the official "
                   "recipe serves, 3.06x smaller than BF16 with <1% accuracy loss on the model card",
                f"{R}; seeds 000, 001", warns)
    c = cat.checkpoint("qwen-fp8")
    return (c, f"Hopper (sm_{sm}) has FP8 but no FP4 tensor cores: the official FP8 checkpoint runs natively; NVFP4 "
               "would run as Marlin/Humming weight-only dequant (pass --checkpoint nvidia-nvfp4 for that)",
            "FACTS.md §5 ('the Hopper choice'), §2; seed 000 ('an FP8 checkpoint on Hopper will be faster')", warns)


def _weights(cat: Catalog, c: CheckpointProfile, arch: mem.Arch) -> tuple[int, str]:
    if c.size_on_disk_gb is not None:
        return int(c.size_on_disk_gb * 1e9), f"weights = {c.size_on_disk_gb} GB on disk ({c.source('size_on_disk_gb')})"
    scheme = "nvfp4" if c.is_nvfp4 else ("fp8" if c.format == "fp8" else "bf16")
    b = mem.estimate_weight_bytes(arch, scheme)
    return b, (f"weights = {b / 1e9:.1f} GB ESTIMATED from the architecture ({scheme}); {c.repo_id} publishes no "
               "size")


# ------------------------------------------------------------------------------------------------ flags
class _Flags:
    def __init__(self) -> None:
        self.items: list[FlagChoice] = []

    def add(self, flag: str, value: Any, reason: str, source: str) -> None:
        v = None if value is None else str(value)
        self.items = [f for f in self.items if f.flag != flag]
        self.items.append(FlagChoice(flag, v, reason, source))

    def get(self, flag: str) -> FlagChoice | None:
        return next((f for f in self.items if f.flag == flag), None)

    def remove(self, flag: str) -> None:
        self.items = [f for f in self.items if f.flag != flag]


def _put(flags: _Flags, flag: str, value: Any, reason: str, source: str) -> None:
    """Set a flag keeping its place in the argv (append when new)."""
    v = None if value is None else str(value)
    for i, f in enumerate(flags.items):
        if f.flag == flag:
            flags.items[i] = FlagChoice(flag, v, reason, source)
            return
    flags.items.append(FlagChoice(flag, v, reason, source))


def _apply_tuned(flags: _Flags, device: str, checkpoint: str, goal: str, mtp: int | None, concurrency: int | None,
                 drafter_backend: str | None, cpu: bool = False) -> None:
    """Apply what `spark-tui tune` measured fastest on this machine, unless the user chose it explicitly."""
    from spark_tui.core.tuned import load_tuned

    t = load_tuned(device, checkpoint, goal)
    if t is None:
        return
    if mtp is None:
        if t.mtp == 0:
            flags.remove("--speculative-config")
        else:
            _put(flags, "--speculative-config", spec_config(t.mtp, drafter_backend),
                 f"MTP k={t.mtp}: the fastest setting `spark-tui tune` measured here", t.mtp_source)
            if cpu:
                _put(flags, "--no-enable-prefix-caching", None, "MTP on CPU needs prefix caching off",
                     "/work/shared/cpu-vllm/README.md")
    if t.max_num_seqs is not None and concurrency is None:
        _put(flags, "--max-num-seqs", t.max_num_seqs, "the fastest setting `spark-tui tune` measured here",
             t.max_num_seqs_source)
    if t.max_num_batched_tokens is not None:
        _put(flags, "--max-num-batched-tokens", t.max_num_batched_tokens,
             "the fastest setting `spark-tui tune` measured here", t.max_num_batched_tokens_source)


def spec_config(k: int, drafter_backend: str | None) -> str:
    d: dict[str, Any] = {"method": "mtp", "num_speculative_tokens": k}
    if drafter_backend:
        d["moe_backend"] = drafter_backend
    return json.dumps(d, separators=(",", ":"))


def _moe_backend(c: CheckpointProfile, sm: int) -> tuple[str | None, str, str]:
    """(backend or None for auto, reason, source) per FACTS.md §2."""
    if c.is_nvfp4:
        if sm >= 120:
            if c.w4a4 == "yes":
                return ("flashinfer_cutlass",
                        f"W4A4 NVFP4 on sm_{sm}: FlashInfer CUTLASS runs native FP4 grouped GEMMs; it is what vLLM "
                        "auto-picks on sm_12x and what the published sm_120/Spark measurements used",
                        "FACTS.md §2 table; seed 002 log ('Using FLASHINFER_CUTLASS', sm_120); seed 000 (Spark, "
                        "RedHatAI + flashinfer_cutlass)")
            return ("marlin",
                    "the official recipe's choice for this checkpoint on sm_12x; fastest published Spark figure "
                    "(97.7 tok/s, vLLM 0.28); FLASHINFER_CUTLASS correctness on sm_121 in 0.33 is unconfirmed",
                    f"{R}; FACTS.md §7 (recipes PR #918), open question 3")
        if sm >= 100:
            if c.w4a4 == "yes":
                return ("flashinfer_trtllm", f"W4A4 NVFP4 on sm_{sm}: what vLLM auto-picks on family 100 (native FP4 "
                        "TRT-LLM MoE); pinned so a change shows in the plan",
                        "FACTS.md §2 table (trtllm_nvfp4_moe.py:204-211)")
            return ("auto", f"vLLM's own choice: FLASHINFER_TRTLLM on sm_{sm} if the checkpoint is W4A4 NVFP4, Marlin or "
                    "Humming if it is W4A16; which one this checkpoint is has not been verified, and pinning a W4A4-only "
                    "backend would fail on a W4A16 checkpoint",
                    "FACTS.md §2 (oracle/nvfp4.py:196-215; W4A16 has no activation key), open question 1")
        return ("marlin", "no FP4 tensor cores before Blackwell: weight-only dequant. vLLM auto-ranks Humming first on "
                "sm_90 but no benchmark exists; Marlin is the path the official recipe uses",
                "FACTS.md §2 (humming/priority.py:11), open question 5")
    return (None, "", "")


def build_flags(t: Target, c: CheckpointProfile, *, goal: str, k: int, context: int, seqs: int, seqs_reason: str,
                seqs_source: str, batched: int, util: float | None, util_reason: str, util_source: str,
                kv_bytes: int | None, kv_reason: str, host: str, port: int, served: str, version: str | None,
                env: list[EnvChoice], warnings: list[str], context_reason: str, context_source: str) -> _Flags:
    f = _Flags()
    sm = t.sm or 0
    f.add("--served-model-name", served, "a stable model name for clients, whichever checkpoint or path is served",
          "spark-tui default")
    f.add("--host", host, "bind address; 127.0.0.1 keeps the API off the network (pass --host 0.0.0.0 to expose it)",
          "spark-tui default" if host == "127.0.0.1" else "user --host")
    f.add("--port", port, "OpenAI-compatible API port", "vLLM default 8000" if port == 8000 else "user --port")
    f.add("--language-model-only", None, "text only: the vision tower is not loaded, saving its memory",
          "FACTS.md §1 (config/multimodal.py:304-306, interfaces.py:347-360)")
    f.add("--kv-cache-dtype", "fp8", "halves KV bytes per token (10,240 B instead of 20,480 B): twice the context or "
          "concurrency; as in the official recipe. Third-party reports of FP8-KV quality issues on Qwen3.5 hybrids "
          "exist (ig1 card): --set kv-cache-dtype=auto to compare", f"{R}; FACTS.md §5, §6")
    backend, why, src = _moe_backend(c, sm)
    if backend:
        if compat.has_moe_backend_flag(version):
            f.add("--moe-backend", backend, why, src)
        else:
            env_form = compat.moe_backend_as_env(backend)
            if env_form:
                for n, v in env_form.items():
                    env.append(EnvChoice(n, v, f"vLLM {version} predates --moe-backend: {why}",
                                         "vllm_compat (PR #33807, #43148)"))
            else:
                warnings.append(f"vLLM {version} predates --moe-backend and has no environment form for "
                                f"'{backend}': vLLM's automatic choice applies.")
    if c.format == "fp8" and sm >= 120:
        env.append(EnvChoice("VLLM_USE_DEEP_GEMM", "0", "the official recipe disables DeepGEMM for FP8 on RTX PRO 6000",
                             f"{R} (FACTS.md §2)"))
        warnings.append("Qwen3.6-FP8 on RTX PRO 6000 was reported slow: the FP8 MoE config for E=256, N=256 is missing "
                        "(vLLM #44688).")
    if kv_bytes is not None:
        f.add("--kv-cache-memory-bytes", f"{kv_bytes // GiB}G" if kv_bytes % GiB == 0 else kv_bytes, kv_reason, "FACTS.md §1 (config/cache.py:374-381); probe MemAvailable")
    if util is not None:
        f.add("--gpu-memory-utilization", f"{util:.2f}".rstrip("0").rstrip("."), util_reason, util_source)
    f.add("--max-model-len", context, context_reason, context_source)
    f.add("--max-num-seqs", seqs, seqs_reason, seqs_source)
    f.add("--max-num-batched-tokens", batched, "prefill chunk per step; 8192 as in the official recipe (16384 on "
          ">=160 GiB cards for throughput, vLLM's own default there)", f"{R}; FACTS.md §1 (arg_utils.py:2946-3006)")
    f.add("--enable-prefix-caching", None, "reuse shared prompt prefixes (agents, chat history); on by default in "
          "0.33 and stated as in the recipe; for this hybrid model it switches DeltaNet state to align mode "
          "(2 + k slots per request)", f"{R}; FACTS.md §1 (models/config.py:750-790), §5")
    if k > 0:
        f.add("--speculative-config", spec_config(k, "triton"),
              f"MTP with {k} draft token(s) ({goal}: " + ("fewer drafts waste less compute at high batch" if k == 1
                                                          else "the official recipe's k=3 for single-user speed")
              + "); the drafter is BF16, so its MoE goes through the unquantized selector, which accepts triton but "
              "not marlin: moe_backend=triton", f"{R}; FACTS.md §1 (config/speculative.py), §2 (oracle/unquantized.py:180-194), §7")
    f.add("--load-format", "fastsafetensors", "loads safetensors straight to GPU memory (faster start)"
          + ("" if compat.fastsafetensors_bundled(version) else f"; vLLM {version} needs `pip install fastsafetensors`"),
          f"{R}; FACTS.md §1 (hard dependency of the 0.33 wheel)")
    f.add("--reasoning-parser", "qwen3", "splits <think> reasoning into reasoning_content", "FACTS.md §1 (reasoning/__init__.py:168); seed 001")
    f.add("--tool-call-parser", "qwen3_coder", "Qwen3 XML tool calls (qwen3_xml is an alias of the same parser)",
          f"{R}; FACTS.md §1 (tool_parsers/__init__.py:206-219)")
    f.add("--enable-auto-tool-choice", None, "let the model decide to call tools (needed with --tool-call-parser)",
          "FACTS.md §1 (entrypoints/common/cli_args.py:123)")
    return f


# ------------------------------------------------------------------------------------------------ memory from flags
def memory_from_flags(arch: mem.Arch, flags: list[FlagChoice], *, total: int, weights: int, weights_note: str,
                      version: str | None, cpu: bool, dev: DeviceProfile) -> MemoryEstimate:
    d = {f.flag: f.value for f in flags}
    k = 0
    if d.get("--speculative-config"):
        try:
            k = int(json.loads(d["--speculative-config"]).get("num_speculative_tokens", arch.mtp_layers or 1))
        except (ValueError, AttributeError, TypeError):
            raise UsageError("--speculative-config is not valid JSON", "e.g. '{\"method\":\"mtp\",\"num_speculative_tokens\":3}'") from None
    kvd = (d.get("--kv-cache-dtype") or "auto").lower()
    kv_bytes_el = 1 if kvd.startswith("fp8") else (arch.model_dtype_bytes if kvd == "auto" else mem.DTYPE_BYTES.get(kvd, 2))
    pc = "--no-enable-prefix-caching" not in d
    util = float(d.get("--gpu-memory-utilization") or 0.92)
    kvm = parse_size(d["--kv-cache-memory-bytes"]) if d.get("--kv-cache-memory-bytes") else None
    L = parse_size(d["--max-model-len"]) if d.get("--max-model-len") else (arch.max_position_embeddings or 4096)
    seqs = int(d.get("--max-num-seqs") or dev.vllm_default_max_num_seqs)
    align = dev.attention_kernel_block_alignment
    attn = (d.get("--attention-backend") or "").upper()
    if attn == "FLASH_ATTN" and dev.sm is not None and 100 <= dev.sm < 120 and arch.head_dim == 256:
        # FA4's head-dim-256 kernel on sm_10x pages by 128 tokens (v1/attention/backends/fa_utils.py
        # FA4_HD256_PAGE_SIZE, flash_attn.py get_supported_kernel_block_sizes; 0.32.0 wheel). The automatic
        # choice on sm_10x is FLASHINFER (16-token alignment), so this applies only when forced.
        align = 128
    bt = int(d.get("--max-num-batched-tokens") or dev.vllm_default_max_num_batched_tokens)
    inp = mem.MemoryInputs(
        device_total_bytes=total, weights_bytes=weights, max_model_len=L, max_num_seqs=seqs,
        max_num_batched_tokens=bt, kv_dtype_bytes=kv_bytes_el, mtp_k=k, prefix_caching=pc,
        gpu_memory_utilization=util, kv_cache_memory_bytes=kvm, enforce_eager="--enforce-eager" in d,
        initial_block=max(dev.attention_block_size, align), kernel_alignment=align,
        gdn_checkpoint_blocks=compat.gdn_checkpoint_blocks(version), legacy_tokens=compat.kv_tokens_legacy(version),
        weights_note=weights_note)
    return mem.estimate(arch, inp)


# ------------------------------------------------------------------------------------------------ differences
_OMIT_REASONS = {
    "--trust-remote-code": "left out: vLLM has the Qwen3.5/3.6 MoE architecture natively; no remote code needs to run",
    "--tensor-parallel-size": "left out: 1 is the default",
    "--attention-backend": "left out: vLLM's automatic choice (FLASH_ATTN first on sm_9x/12x, FLASHINFER first on "
                           "sm_10x; FACTS.md §1); FlashInfer with MTP crashed on GQA-16 models (#37754, status unknown)",
    "--enable-chunked-prefill": "left out: on by default (redundant in 0.33)",
    "--async-scheduling": "left out: on by default and compatible with MTP in 0.33 (FACTS.md §1, config/vllm.py:1650-1719)",
    "--quantization": "left out: vLLM reads the quantization method from the checkpoint's config; passing one that "
                      "does not match fails startup with 'Quantization method specified in the model config ... does "
                      "not match' (FACTS.md §1)",
}
_MODELOPT_FP4 = ("left out: `modelopt` means ModelOpt FP8; this FP4 checkpoint is modelopt_fp4, which vLLM reads from the "
                 "checkpoint, so `--quantization modelopt` fails at startup with 'Quantization method specified in the "
                 "model config ... does not match' (FACTS.md §1)")


def differences(recipe_args: tuple[str, ...], flags: list[FlagChoice], checkpoint_format: str | None = None) -> list[str]:
    """One sentence per flag where the plan deliberately differs from a published recipe."""
    rec = dict(split_args(recipe_args))
    plan = {f.flag: f for f in flags}
    out = []
    for flag, rv in rec.items():
        pf = plan.get(flag)
        if pf is None:
            why = _OMIT_REASONS.get(flag, "left out (the vLLM default applies)")
            if flag == "--quantization" and rv == "modelopt" and checkpoint_format == "modelopt_fp4":
                why = _MODELOPT_FP4
            out.append(f"{flag}{' ' + rv if rv else ''}: {why}")
        elif pf.value != rv:
            if flag == "--tool-call-parser" and {rv, pf.value} == {"qwen3_xml", "qwen3_coder"}:
                out.append(f"{flag}: recipe {rv}, plan {pf.value}: aliases of the same Qwen3 tool parser (FACTS.md §1)")
            else:
                out.append(f"{flag}: recipe {rv}, plan {pf.value}: {pf.reason}")
    for flag, pf in plan.items():
        if flag not in rec and flag not in ("--served-model-name",):
            out.append(f"{flag}{' ' + pf.value if pf.value else ''}: added: {pf.reason}")
    return out


# ------------------------------------------------------------------------------------------------ main API
def _floor2(x: float) -> float:
    return math.floor(x * 100) / 100


def check_bind(host: str, port: int) -> None:
    """A bind address vLLM (and every export format) can use: an IP address or a DNS name, a TCP port."""
    import ipaddress

    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is not a TCP port", "1 to 65535, e.g. --port 8000")
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if not re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*", host or ""):
        raise UsageError(f"--host {host!r} is neither an IP address nor a host name",
                         "e.g. --host 127.0.0.1 (this machine only) or --host 0.0.0.0 (all interfaces, with an API key)")


def make_plan(*, device: str | None = None, probe: Any = None, checkpoint: str | None = None,
              model_path: str | None = None, context: int | None = None, concurrency: int | None = None,
              goal: str = "balanced", mtp: int | None = None, set_flags: Iterable[str] = (), host: str = "127.0.0.1",
              port: int = 8000, vllm_version: str | None = None, served_model_name: str | None = None,
              recipe: str | None = None, gpu_index: int = 0, catalog: Catalog | None = None) -> Plan:
    """Plan a `vllm serve` for a device profile id or a ProbeResult. Raises PlanError / UsageError / ProfileError."""
    if goal not in GOALS:
        raise UsageError(f"unknown goal {goal!r}", f"one of: {', '.join(GOALS)}")
    if mtp is not None and not 0 <= mtp <= 8:
        raise UsageError(f"--mtp {mtp} is out of range", "0 (off) to 8 draft tokens")
    if context is not None and context < 16:
        raise UsageError(f"--context {context} is too small", "at least 16 tokens")
    if concurrency is not None and concurrency < 1:
        raise UsageError(f"--concurrency {concurrency} must be >= 1", "e.g. --concurrency 8")
    check_bind(host, port)
    sets = parse_set(set_flags)
    cat = catalog or default_catalog()
    t = resolve_target(cat, device, probe, gpu_index)
    dev = t.profile
    if not dev.supported:
        raise PlanError(f"{t.name}: {dev.refuse_reason}", "plan for a Hopper or Blackwell GPU (see `spark-tui devices`)")
    version = vllm_version or compat.DEFAULT_VERSION
    warnings: list[str] = [] if vllm_version else [
        f"written for vLLM {version} (pass --vllm-version to adapt flags to another release)"]
    env: list[EnvChoice] = []
    served = served_model_name or DEFAULT_SERVED_NAME

    # ---- model architecture: config.json of --model-path, else the model profile
    cfg_path = Path(model_path) / "config.json" if model_path else None
    if dev.cpu:
        if not model_path:
            raise UsageError("the cpu-test device plans a local model", "pass --model-path DIR (a dir with config.json)")
    if cfg_path is not None:
        try:
            arch = mem.Arch.from_config(json.loads(cfg_path.read_text()))
        except FileNotFoundError:
            raise UsageError(f"{cfg_path} not found", "--model-path must be a checkpoint directory") from None
        except (ValueError, KeyError) as e:
            raise UsageError(f"{cfg_path}: cannot read the architecture ({e})", "pass a Hugging Face config.json") from None
    if dev.cpu:
        return _cpu_plan(dev, t, arch, model_path or "", served, host, port, version, mtp, sets, warnings, env)

    c, c_reason, c_source, cw = choose_checkpoint(cat, t, checkpoint)
    warnings += cw
    if cfg_path is None:
        arch = mem.Arch.from_profile(cat.model(c.model).values)
    weights, weights_note = _weights(cat, c, arch)
    total = t.total_bytes
    if not total:
        raise PlanError(f"{t.name}: total memory unknown", "pass --probe-file from `spark-tui probe --json`")
    model_max = arch.max_position_embeddings or 262144

    # ---- MTP
    k = GOAL_MTP[goal] if mtp is None else mtp
    if c.mtp_head is False:
        k = 0
    elif c.mtp_head is None and k > 0:
        warnings.append(f"{c.repo_id}: MTP head not verified; if vLLM reports no MTP weights, plan with --mtp 0")

    # ---- memory budget
    kv_bytes = None
    kv_reason = ""
    if dev.unified_memory:
        avail = t.mem_available_bytes or int((dev.typical_mem_available_gib or 100) * GiB)
        util = min(0.92, _floor2((avail - UNIFIED_MARGIN_BYTES) / total))
        from_probe = t.mem_available_bytes is not None
        util_reason = (f"unified memory: vLLM refuses to start unless MemAvailable >= total x utilization; "
                       f"MemAvailable {'is' if from_probe else 'is typically'} {avail / GiB:.1f} GiB "
                       f"({'probe' if from_probe else 'low end at boot, no probe given'}), minus a 4 GiB margin, "
                       f"over {total / GiB:.1f} GiB total. The default 0.92 usually fails on Spark; the published "
                       "recipes' 0.4/0.5 leave tens of GiB unused")
        util_source = "FACTS.md §6 (v1/worker/utils.py:761-770; MemAvailable 102-111 GiB at boot)"
        if util <= 0.1:
            raise PlanError(f"only {avail / GiB:.1f} GiB MemAvailable on {t.name}",
                            "free memory (close other programs; `sync; echo 3 > /proc/sys/vm/drop_caches`) and re-probe")
    else:
        util = dev.gpu_memory_utilization or 0.92
        util_reason = f"share of the card's memory vLLM may use ({dev.id} profile)"
        util_source = dev.source("gpu_memory_utilization")
        if t.free_bytes is not None and t.free_bytes < util * total:
            util = _floor2((t.free_bytes - GiB // 2) / total)
            util_reason = (f"the probe shows only {t.free_bytes / GiB:.1f} GiB free of {total / GiB:.1f} GiB "
                           "(another process holds memory): lowered so vLLM's startup check passes")
            util_source = "probe memory_free_bytes; FACTS.md §6 (startup check)"
            busy = (f"{(total - t.free_bytes) / GiB:.1f} GiB of the {total / GiB:.1f} GiB on {t.name} is in use by "
                    "other processes")
            warnings.append(busy)
            if util <= 0.1:
                raise PlanError(f"{busy}; {t.free_bytes / GiB:.1f} GiB free is too little to serve the model",
                                f"stop the other GPU processes and re-probe, or plan with --device {dev.id} to ignore "
                                "current usage")

    # ---- batch sizes
    big = total >= 160 * GiB
    batched = 16384 if (goal == "throughput" and big) else 8192
    inputs = dict(weights=weights, weights_note=weights_note, version=version, cpu=False, dev=dev, total=total)

    def est(L: int, seqs: int, kvb: int | None) -> MemoryEstimate:
        fl = [FlagChoice("--max-model-len", str(L), "", ""), FlagChoice("--max-num-seqs", str(seqs), "", ""),
              FlagChoice("--max-num-batched-tokens", str(batched), "", ""), FlagChoice("--kv-cache-dtype", "fp8", "", ""),
              FlagChoice("--gpu-memory-utilization", str(util), "", "")]
        if kvb is not None:
            fl.append(FlagChoice("--kv-cache-memory-bytes", str(kvb), "", ""))
        if k:
            fl.append(FlagChoice("--speculative-config", spec_config(k, "triton"), "", ""))
        return memory_from_flags(arch, fl, **inputs)  # type: ignore[arg-type]

    seqs0 = concurrency or GOAL_SEQS.get(goal, (8, ""))[0]
    probe_L = context or model_max
    e0 = est(probe_L, seqs0, None)
    if e0.kv_cache_bytes <= 0:
        limited = t.free_bytes is not None and not dev.unified_memory and t.free_bytes < 0.9 * total
        raise PlanError(
            f"{c.repo_id} does not fit on {t.name}: weights {weights / GiB:.1f} GiB + overhead "
            f"{e0.overhead_bytes / GiB:.1f} GiB exceed the {e0.budget_bytes / GiB:.1f} GiB budget"
            + (f" ({(total - t.free_bytes) / GiB:.1f} GiB is in use by other processes)" if limited else ""),
            (f"stop the other GPU processes and re-probe, or plan with --device {dev.id} to ignore current usage"
             if limited else f"pick a smaller checkpoint (spark-tui checkpoints --device {dev.id}) or a larger GPU"))
    if dev.unified_memory and t.mem_available_bytes is not None:
        kv_bytes = (e0.kv_cache_bytes // GiB) * GiB
        kv_reason = (f"fix the KV pool at what MemAvailable allows ({kv_bytes / GiB:.0f} GiB = utilization x total "
                     "- weights - overhead, rounded down) so the pool does not depend on vLLM's profiling of "
                     "shared memory")

    # ---- context and concurrency that fit
    layout_e = est(probe_L, seqs0, kv_bytes)
    lay = mem.kv_layout(arch, 1, k, True, dev.attention_block_size, dev.attention_kernel_block_alignment,
                        compat.gdn_checkpoint_blocks(version))
    pool = layout_e.kv_cache_bytes
    if context is not None:
        L = context
        context_reason, context_source = "user --context", "user --context"
        if layout_e.max_concurrency < 1:
            fit = mem.max_len_for(lay, pool, 1.0)
            raise PlanError(f"--context {context} does not fit on {t.name}: one request needs more KV than the "
                            f"{pool / GiB:.1f} GiB pool", f"use --context {fit} or less (or --mtp 0 / fewer seqs)")
    else:
        want = concurrency if (goal == "context" and concurrency) else 1
        L = min(model_max, mem.max_len_for(lay, pool, want))
        if L >= model_max:
            context_reason = f"the model's full {model_max:,}-token context fits (at least {want} request(s) at full length)"
            context_source = "FACTS.md §5 (context 262,144); spark-tui memory model"
        else:
            L = max(L, lay.block_size)
            context_reason = (f"the longest context at which {want} full-length request(s) fit the "
                              f"{pool / GiB:.1f} GiB KV pool (the model allows {model_max:,})")
            context_source = "spark-tui memory model (FACTS.md §5 formulas, vLLM kv_cache_utils.py)"
            warnings.append(f"context reduced to {L:,} tokens to fit memory on {t.name}")
    e1 = est(L, seqs0, kv_bytes)
    if concurrency:
        seqs, seqs_reason, seqs_source = concurrency, "user --concurrency", "user --concurrency"
    elif goal == "throughput":
        per_req_blocks = lay.full_groups * mem.cdiv(8192, lay.block_size) + lay.mamba_groups * lay.mamba_slots_per_seq
        fit8k = int(e1.num_blocks / per_req_blocks)
        seqs = max(8, min(dev.vllm_default_max_num_seqs, fit8k))
        seqs_reason = (f"as many running requests as fit at ~8K tokens each ({fit8k} in the KV pool), capped at "
                       f"vLLM's default {dev.vllm_default_max_num_seqs} for this card")
        seqs_source = "spark-tui memory model; FACTS.md §1 (defaults)"
    else:
        seqs, seqs_source = GOAL_SEQS[goal]
        seqs_reason = f"{goal}: few concurrent requests keep per-user speed high"
    if not dev.unified_memory or t.mem_available_bytes is None:
        kv_bytes = None

    flags = build_flags(t, c, goal=goal, k=k, context=L, seqs=seqs, seqs_reason=seqs_reason, seqs_source=seqs_source,
                        batched=batched, util=util, util_reason=util_reason, util_source=util_source,
                        kv_bytes=kv_bytes, kv_reason=kv_reason, host=host, port=port, served=served,
                        version=version, env=env, warnings=warnings, context_reason=context_reason,
                        context_source=context_source)
    model = model_path or c.repo_id
    rec = dev.recipe(recipe) if recipe else None
    if recipe and rec is None:
        raise UsageError(f"device {dev.id} has no recipe {recipe!r}",
                         f"one of: {', '.join(r.id for r in dev.recipes) or '(none)'}")
    diffs: list[str] = []
    if rec is not None:
        own = list(flags.items)
        flags = _Flags()
        for fl, val in split_args(rec.args):
            flags.add(fl, val, f"as published: {rec.title}", rec.source)
        if rec.checkpoint != c.id:
            c = cat.checkpoint(rec.checkpoint)
            model = model_path or c.repo_id
        diffs = [f"reproducing {rec.title} [{rec.source}]; spark-tui's own plan ({dev.id}, goal {goal}) differs:"]
        diffs += differences(rec.args, own, c.format)
        q = dict(split_args(rec.args)).get("--quantization")
        if q == "modelopt" and c.format == "modelopt_fp4":
            warnings.append(f"recipe {rec.id}: --quantization modelopt is wrong for this checkpoint: " + _MODELOPT_FP4[10:])
    else:
        ref = dev.recipe_for(c.id)
        if ref is not None:
            diffs = [f"compared with {ref.title} [{ref.source}] (reproduce it with --recipe {ref.id}):"]
            diffs += differences(ref.args, flags.items, c.format)

    if rec is None:
        _apply_tuned(flags, dev.id, c.id, goal, mtp, concurrency, "triton")
    _apply_sets(flags, env, sets)
    k_final = 0
    sc = flags.get("--speculative-config")
    if sc and sc.value:
        try:
            k_final = int(json.loads(sc.value).get("num_speculative_tokens", 1))
        except (ValueError, AttributeError, TypeError):
            k_final = 1
    if k_final and "--enable-prefix-caching" in {f.flag for f in flags.items} and not compat.at_least(version, "0.33.0"):
        warnings.append("MTP with prefix caching dropped accuracy ~20% on this model (vLLM #43559, fix PR #43650, "
                        f"referenced in 0.33 source): check that vLLM {version} has the fix, or --set "
                        "no-enable-prefix-caching")
    memory = memory_from_flags(arch, flags.items, **inputs)  # type: ignore[arg-type]
    if memory.kv_cache_bytes <= 0 or memory.max_concurrency < 1:
        warnings.append(f"memory model: one {memory.max_model_len:,}-token request does not fit the KV pool "
                        f"({memory.kv_cache_bytes / GiB:.1f} GiB): vLLM would refuse to start")
    if memory.max_num_seqs > memory.num_blocks // max(memory.kv_cache_groups, 1):
        warnings.append(f"--max-num-seqs {memory.max_num_seqs} exceeds what the pool can hold at once "
                        f"(each request pins {memory.mamba_slots_per_seq} DeltaNet slots per group): expect preemptions")
    if t.gpu_count > 1:
        warnings.append(f"{t.gpu_count} x {t.name} found: this plan uses one GPU (the model fits); run one server "
                        f"per GPU or add --data-parallel-size {t.gpu_count}")
    if dev.id in ("b200", "b300", "gb200", "gb300") or dev.generic:
        warnings.append(f"no published Qwen3.6-35B-A3B figures for {dev.name}: the flags follow vLLM's source, "
                        "not a measured recipe (FACTS.md §7)")
    return Plan(
        device=DeviceRef(id=dev.id, name=t.name, sm=t.sm, memory_bytes=total, unified_memory=dev.unified_memory,
                         gpu_count=t.gpu_count, source=t.source),
        checkpoint=CheckpointRef(id=c.id, repo_id=c.repo_id, revision=c.revision, format=c.format or "not verified",
                                 local_path=model_path),
        model=model, flags=tuple(flags.items), env=tuple(env), memory=memory, warnings=tuple(warnings), goal=goal,
        host=_final(flags, "--host", host), port=int(_final(flags, "--port", str(port))),
        served_model_name=_final(flags, "--served-model-name", None), vllm_version=version,
        differences=tuple(diffs), checkpoint_reason=c_reason, checkpoint_source=c_source, match=t.match,
        recipe=rec.id if rec else None)


def _final(flags: _Flags, name: str, default: Any) -> Any:
    f = flags.get(name)
    return f.value if f is not None and f.value is not None else default


def _apply_sets(flags: _Flags, env: list[EnvChoice], sets: list[tuple[str, str | None, bool]]) -> None:
    for name, value, remove in sets:
        if re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
            env[:] = [e for e in env if e.name != name]
            if not remove:
                env.append(EnvChoice(name, value or "1", "user --set", "user --set"))
            continue
        if remove:
            flags.remove(name)
            continue
        if name.startswith("--no-"):
            flags.remove("--" + name[5:])
        elif flags.get("--no-" + name[2:]):
            flags.remove("--no-" + name[2:])
        if name == "--kv-cache-memory-bytes":
            parse_size(value or "")
        flags.add(name, value, "user --set", "user --set")


def _cpu_plan(dev: DeviceProfile, t: Target, arch: mem.Arch, model_path: str, served: str, host: str, port: int,
              version: str, mtp: int | None, sets: list, warnings: list[str], env: list[EnvChoice]) -> Plan:
    f = _Flags()
    k = (arch.mtp_layers if arch.mtp_layers else 0) if mtp is None else mtp
    if k and not arch.mtp_layers:
        raise PlanError(f"{model_path}: config.json has no mtp_num_hidden_layers", "plan without --mtp")
    f.add("--served-model-name", served, "a stable model name for clients", "spark-tui default")
    f.add("--host", host, "bind address; 127.0.0.1 only", "spark-tui default" if host == "127.0.0.1" else "user --host")
    f.add("--port", port, "OpenAI-compatible API port", "vLLM default 8000" if port == 8000 else "user --port")
    f.add("--max-model-len", dev.max_model_len, "small context for the tiny test models", dev.source("max_model_len"))
    f.add("--enforce-eager", None, "no CUDA graphs / compilation on CPU: faster start", "/work/shared/cpu-vllm/README.md")
    f.add("--kv-cache-memory-bytes", "16M", "without it vLLM reserves 92% of RAM and refuses to start",
          dev.source("kv_cache_memory_bytes"))
    if k:
        f.add("--speculative-config", spec_config(k, None), f"MTP with {k} draft token(s) from the model's MTP head",
              "FACTS.md §1 (method mtp)")
        f.add("--no-enable-prefix-caching", None, "MTP on CPU: with prefix caching the first request returns 500 "
              "(a Triton-only kernel)", "/work/shared/cpu-vllm/README.md")
    if arch.mtp_layers:
        _apply_tuned(f, dev.id, "local", "balanced", mtp, None, None, cpu=True)
    _apply_sets(f, env, sets)
    total = int((dev.memory_gb or 24) * GiB)
    memory = memory_from_flags(arch, f.items, total=total, weights=0, version=version, cpu=True, dev=dev,
                               weights_note="weights of the tiny test model are negligible (a few MB)")
    return Plan(
        device=DeviceRef(id=dev.id, name=dev.name, sm=None, memory_bytes=total, unified_memory=True, source=t.source),
        checkpoint=CheckpointRef(id="local", repo_id=Path(model_path).name, revision=None, format="bf16",
                                 local_path=model_path),
        model=model_path, flags=tuple(f.items), env=tuple(env), memory=memory, warnings=tuple(warnings), goal="balanced",
        host=_final(f, "--host", host), port=int(_final(f, "--port", str(port))),
        served_model_name=_final(f, "--served-model-name", None), vllm_version=version,
        checkpoint_reason="a local model directory (--model-path)", checkpoint_source="user --model-path",
        match=t.match)
