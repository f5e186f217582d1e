"""Load generator over the OpenAI-compatible API: aggregate and per-user tok/s, TTFT and ITL percentiles.

Pure asyncio + httpx (imported lazily). Each concurrency level runs `concurrency` workers issuing
streaming `/v1/completions` requests until a request count or a duration is reached (both bounded).
Prompts have exact token counts: the prompt is sent as token ids obtained from the server's own
`/tokenize` endpoint (the served tokenizer), so nothing here needs the tokenizer locally. Output length
is exact too (`max_tokens` with `ignore_eos`), and streaming uses vLLM's `continuous_usage_stats` so every
chunk says how many tokens it carried (with MTP one chunk can carry several tokens).

The server's own counters (/metrics, via spark_tui.core.observe.metrics) are read before and after each level:
generation tokens and speculative-decoding drafts/accepted tokens over exactly the same window. The
self-check compares the client's aggregate tok/s with the server's generation-token rate (within 5%).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from spark_tui.core.observe.metrics import Stats

SELF_CHECK_TOLERANCE = 0.05
SETUP_TIMEOUT_S = 60.0  # /v1/models, /version, /tokenize: each must answer completely within this

# A small shipped set of realistic prompts (chat and code). Used with --prompts realistic.
REALISTIC_PROMPTS: tuple[str, ...] = (
    "Explain, for a new engineer on the team, what a KV cache is in a transformer inference server and "
    "why its size limits how many requests can run at the same time.",
    "Write a Python function that parses a Prometheus text exposition and returns a dict of metric name "
    "to float value. Include type hints and a docstring.",
    "Summarise the trade-offs between FP8 and 4-bit floating point (NVFP4) weights for serving a mixture "
    "of experts model on a single workstation GPU.",
    "Here is a bash script that starts a server and never stops it:\n\nnohup ./server --port 8000 &\n\n"
    "Rewrite it so that it stops the server cleanly when the script receives SIGTERM.",
    "Write a SQL query that returns, for each customer, the total amount of their three most recent "
    "orders, using window functions.",
    "A user says their model server prints 'no kernel image is available for execution on the device'. "
    "What does that mean and what should they check first?",
    "Translate this Rust snippet into idiomatic Python:\n\nfn mean(xs: &[f64]) -> Option<f64> {\n"
    "    if xs.is_empty() { None } else { Some(xs.iter().sum::<f64>() / xs.len() as f64) }\n}",
    "Plan a three-day hiking trip with daily distances under 15 km, and list what to pack.",
)


@dataclass(frozen=True)
class RequestResult:
    ok: bool
    start: float
    end: float
    prompt_tokens: int = 0
    output_tokens: int = 0
    first_token: float | None = None  # time the first generated token arrived
    token_gaps: tuple[float, ...] = ()  # per-token inter-token latencies (a chunk's gap split over its tokens)
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.start


@dataclass(frozen=True)
class Percentiles:
    p50: float | None
    p95: float | None
    p99: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> "Percentiles":
        return cls(percentile(values, 50), percentile(values, 95), percentile(values, 99))


@dataclass(frozen=True)
class LevelResult:
    concurrency: int
    requests: int
    errors: int
    duration_s: float  # first request sent -> last response finished
    output_tokens: int
    prompt_tokens: int
    output_tok_s: float  # aggregate, client-side
    per_user_tok_s: float | None  # one user's end-to-end speed: tokens / request time, token-weighted
    request_per_s: float
    ttft_s: Percentiles
    itl_s: Percentiles
    server_gen_tok_s: float | None = None  # server's generation-token rate over the same window
    self_check_deviation: float | None = None  # |client - server| / server
    self_check_ok: bool | None = None
    acceptance_rate: float | None = None  # accepted / drafted tokens over the window (MTP / ngram)
    mean_acceptance_length: float | None = None  # 1 + accepted / drafts
    first_errors: tuple[str, ...] = ()


@dataclass
class BenchConfig:
    url: str
    model: str | None = None  # None: the first model /v1/models lists
    concurrency: tuple[int, ...] = (1, 4, 8, 16, 32)
    prompt_tokens: int = 512
    output_tokens: int = 128
    requests: int | None = None  # per level; None -> bounded by duration
    duration_s: float | None = 30.0  # per level
    prompts: str = "synthetic"  # "synthetic" (exact token count) or "realistic" (shipped chat/code set)
    request_timeout_s: float = 300.0
    api_key: str | None = field(default=None, repr=False)  # sent as a bearer token; never in results or repr
    warmup_requests: int = 1
    temperature: float = 0.0  # sampling temperature of every request (MTP acceptance depends on it)

    def __post_init__(self) -> None:
        from spark_tui.errors import UsageError

        if not self.concurrency or any(c < 1 for c in self.concurrency):
            raise UsageError("concurrency levels must be positive integers", "e.g. --concurrency 1,4,16")
        if self.requests is None and self.duration_s is None:
            raise UsageError("a level needs a bound", "give --requests N or --duration S")
        if self.requests is not None and self.requests < 1:
            raise UsageError("--requests must be at least 1", "e.g. --requests 32")
        if self.duration_s is not None and not 0 < self.duration_s < math.inf:  # nan or inf: a level never ends
            raise UsageError("--duration must be a positive, finite number of seconds", "e.g. --duration 30")
        if self.prompt_tokens < 1 or self.output_tokens < 1:
            raise UsageError("--prompt-tokens and --output-tokens must be at least 1", "e.g. --prompt-tokens 512")
        if not 0 <= self.temperature <= 10:  # nan fails both comparisons
            raise UsageError(f"--temperature {self.temperature} is out of range", "0 (greedy) to 10, e.g. 1.0")
        if self.prompts not in ("synthetic", "realistic"):
            raise UsageError(f"unknown prompt set {self.prompts!r}", "use --prompts synthetic or realistic")


@dataclass
class BenchResult:
    url: str
    model: str
    config: dict[str, Any]
    levels: list[LevelResult] = field(default_factory=list)
    server_version: str | None = None
    started_at: str | None = None
    context: dict[str, Any] = field(default_factory=dict)  # plan, GPU, versions (filled by the caller)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "model": self.model,
            "config": self.config,
            "server_version": self.server_version,
            "started_at": self.started_at,
            "levels": [asdict(lv) for lv in self.levels],
            "context": self.context,
        }


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method); None for no values."""
    xs = sorted(v for v in values if v is not None and not math.isnan(v))
    if not xs:
        return None
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarise_level(concurrency: int, results: Sequence[RequestResult], server: Stats | None = None,
                    window_s: float | None = None) -> LevelResult:
    """Fold one level's request results into figures. Pure.

    `server` is a spark_tui.core.observe.metrics.Stats over two /metrics snapshots taken right before the first
    request and right after the last one (`window_s` apart): the client's tokens over that same window are
    compared with the server's generation-token rate (the self-check), and speculative-decoding acceptance
    comes from the same counters."""
    ok = [r for r in results if r.ok]
    errs = [r for r in results if not r.ok]
    if results:
        t0 = min(r.start for r in results)
        t1 = max(r.end for r in results)
    else:
        t0 = t1 = 0.0
    duration = max(t1 - t0, 1e-9)
    out_tok = sum(r.output_tokens for r in ok)
    # per-user speed as the seeds report it (e.g. 433 tok/s over 32 users = 13.5 tok/s each): what one user
    # receives end to end, tokens over request time, token-weighted across requests. Decode-only timing
    # (after the first token) is left to the ITL percentiles: when the client is CPU-starved a response can
    # arrive in one read, and a decode-only rate then explodes.
    req_time = sum(r.end - r.start for r in ok)
    figures: dict[str, Any] = dict(
        concurrency=concurrency,
        requests=len(results),
        errors=len(errs),
        duration_s=duration if results else 0.0,
        output_tokens=out_tok,
        prompt_tokens=sum(r.prompt_tokens for r in ok),
        output_tok_s=out_tok / duration if results else 0.0,
        per_user_tok_s=(out_tok / req_time) if req_time > 0 else None,
        request_per_s=len(ok) / duration if results else 0.0,
        ttft_s=Percentiles.of([r.ttft for r in ok if r.ttft is not None]),
        itl_s=Percentiles.of([g for r in ok for g in r.token_gaps]),
        first_errors=tuple(dict.fromkeys(r.error or "error" for r in errs))[:3],
    )
    if server is not None and not server.counter_reset:
        rate = server.generation_tok_s
        figures["server_gen_tok_s"] = rate
        if rate and window_s:
            dev = abs(out_tok / window_s - rate) / rate
            figures["self_check_deviation"] = dev
            figures["self_check_ok"] = dev <= SELF_CHECK_TOLERANCE
        if server.spec is not None:
            figures["acceptance_rate"] = server.spec.acceptance_rate
            figures["mean_acceptance_length"] = server.spec.mean_acceptance_length
    return LevelResult(**figures)


# --------------------------------------------------------------------------------------------- client


def auth_headers(cfg: BenchConfig) -> dict[str, str]:
    """The bearer-token header vLLM's --api-key / VLLM_API_KEY expects; {} without a key."""
    return {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}


async def _discover_model(client: Any, cfg: BenchConfig) -> str:
    from spark_tui.errors import VllmError

    try:
        r = await client.get(f"{cfg.url}/v1/models", headers=auth_headers(cfg))
        r.raise_for_status()
        ids = [str(m["id"]) for m in r.json().get("data") or []]
    except Exception as e:  # httpx errors, bad JSON, not an OpenAI model list
        raise VllmError(
            f"cannot list models at {cfg.url}/v1/models ({type(e).__name__}: {e})",
            "is the server running and ready? check with `spark-tui monitor --url URL --once`",
        ) from None
    if not ids:
        raise VllmError(f"{cfg.url} serves no model", "start one with `spark-tui launch`")
    if cfg.model is not None:
        if cfg.model not in ids:  # else every request would fail with 404
            from spark_tui.errors import UsageError

            raise UsageError(f"--model {cfg.model!r} is not served at {cfg.url}",
                             f"served here: {', '.join(ids)}; drop --model to use the first one")
        return cfg.model
    return ids[0]


async def synthetic_prompt_ids(client: Any, cfg: BenchConfig, model: str, n_tokens: int) -> list[int]:
    """Exactly n_tokens token ids of natural text, tokenized by the served model's own tokenizer."""
    from spark_tui.errors import VllmError

    text = " ".join(REALISTIC_PROMPTS)
    try:
        r = await client.post(
            f"{cfg.url}/tokenize", json={"model": model, "prompt": text, "add_special_tokens": False},
            headers=auth_headers(cfg),
        )
        r.raise_for_status()
        ids = list(r.json()["tokens"])
    except Exception as e:
        raise VllmError(
            f"the server's /tokenize endpoint failed ({type(e).__name__}: {e})",
            "use --prompts realistic, or a vLLM version with /tokenize",
        ) from None
    if not ids:
        raise VllmError("the server tokenized the prompt text to nothing", "use --prompts realistic")
    out: list[int] = []
    while len(out) < n_tokens:
        out.extend(ids)
    return out[:n_tokens]


async def one_request(client: Any, cfg: BenchConfig, model: str, prompt: list[int] | str) -> RequestResult:
    """One streaming completion; records arrival times and per-chunk token counts."""
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": cfg.output_tokens,
        "min_tokens": cfg.output_tokens,
        "ignore_eos": True,
        "temperature": cfg.temperature,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    start = time.perf_counter()
    first: float | None = None
    last_t = start  # the time of the last token (read only once a first token came)
    tokens = 0
    prompt_tokens = 0
    gaps: list[float] = []
    done = False

    async def stream() -> RequestResult | None:
        nonlocal first, last_t, tokens, prompt_tokens, done
        async with client.stream(
            "POST", f"{cfg.url}/v1/completions", json=body, headers=auth_headers(cfg), timeout=cfg.request_timeout_s
        ) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")[:200]
                return RequestResult(False, start, time.perf_counter(), error=f"HTTP {resp.status_code}: {text}")
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    break
                now = time.perf_counter()
                chunk = json.loads(payload)
                if not isinstance(chunk, dict):
                    raise ValueError(f"a stream chunk is not a JSON object: {payload[:60]!r}")
                usage = chunk.get("usage") or {}
                if not isinstance(usage, dict):
                    raise ValueError("a stream chunk's usage is not an object")
                if "prompt_tokens" in usage:
                    prompt_tokens = _count(usage["prompt_tokens"], "prompt_tokens", None)
                new_total = usage.get("completion_tokens")
                if new_total is None:  # server without continuous usage: count text-bearing chunks
                    choices = chunk.get("choices") or []
                    has_text = isinstance(choices, list) and any(isinstance(c, dict) and c.get("text") for c in choices)
                    new_total = tokens + (1 if has_text else 0)
                # bounded by what was asked for: a server claiming more (or a non-number) is broken, and
                # believing it would grow the per-token list without end
                new_total = _count(new_total, "completion_tokens", cfg.output_tokens)
                n_new = new_total - tokens
                if n_new <= 0:
                    continue
                if first is None:
                    first = now
                    if n_new > 1:
                        gaps.extend([0.0] * (n_new - 1))
                else:
                    gaps.extend([(now - last_t) / n_new] * n_new)
                last_t = now
                tokens = new_total
        return None

    try:  # one deadline for the whole request: a server that drips bytes never holds a level forever
        failed = await asyncio.wait_for(stream(), cfg.request_timeout_s)
    except asyncio.TimeoutError:
        return RequestResult(False, start, time.perf_counter(),
                             error=f"no complete response within {cfg.request_timeout_s:g} s")
    except Exception as e:
        return RequestResult(False, start, time.perf_counter(), error=f"{type(e).__name__}: {e}"[:200])
    if failed is not None:
        return failed
    end = time.perf_counter()
    if not done:  # vLLM ends every stream with `data: [DONE]`: anything else is a broken or foreign server
        return RequestResult(False, start, end, error="the stream ended without `data: [DONE]` (not an OpenAI "
                             f"completion stream; {tokens} tokens seen)")
    if tokens == 0:
        return RequestResult(False, start, end, error="the stream carried no tokens")
    return RequestResult(True, start, end, prompt_tokens, tokens, first, tuple(gaps))


def _count(v: Any, name: str, limit: int | None) -> int:
    """A token count from a stream chunk: an integer >= 0 (and <= limit). ValueError otherwise."""
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or (limit is not None and v > limit):
        bound = f" (at most {limit} were requested)" if limit is not None else ""
        raise ValueError(f"the server reported {name} = {str(v)[:30]}{bound}")
    return v


async def run_level(
    client: Any,
    cfg: BenchConfig,
    model: str,
    concurrency: int,
    prompts: Sequence[list[int] | str],
    read_snapshot: Callable[[], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> LevelResult:
    """Run one concurrency level, bounded by cfg.requests and/or cfg.duration_s."""
    results: list[RequestResult] = []
    issued = 0
    deadline = None if cfg.duration_s is None else time.perf_counter() + cfg.duration_s

    def may_issue() -> bool:
        if should_stop and should_stop():
            return False
        if cfg.requests is not None and issued >= cfg.requests:
            return False
        if deadline is not None and time.perf_counter() >= deadline:
            return False
        return True

    inflight: dict[int, float] = {}  # request number -> start, while it runs

    async def worker(wid: int) -> None:
        nonlocal issued
        while may_issue():
            i = issued
            issued += 1
            inflight[i] = time.perf_counter()
            results.append(await one_request(client, cfg, model, prompts[i % len(prompts)]))
            inflight.pop(i, None)

    before = await read_snapshot() if read_snapshot else None
    try:  # the level's own deadline: its duration (or its share of requests) plus one request's timeout
        await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(concurrency))), level_deadline_s(cfg, concurrency))
    except asyncio.TimeoutError:
        now = time.perf_counter()
        results.extend(RequestResult(False, t, now, error="cut off at the level's deadline") for t in inflight.values())
    after = await read_snapshot() if read_snapshot else None
    server = None
    if before is not None and after is not None:
        from spark_tui.core.observe.metrics import window_stats

        server = window_stats([before, after])
    return summarise_level(concurrency, results, server, None if server is None else server.window_s)


def level_deadline_s(cfg: BenchConfig, concurrency: int) -> float:
    """How long one level may take in all: its duration plus one request's timeout (a request started just
    before the end may finish), or, bounded by requests, each worker's share of requests at full timeout."""
    if cfg.duration_s is not None:
        return cfg.duration_s + cfg.request_timeout_s
    return math.ceil((cfg.requests or 1) / concurrency) * cfg.request_timeout_s


async def run_bench(
    cfg: BenchConfig,
    read_snapshot: Callable[[Any], Any] | None = None,
    on_level: Callable[[LevelResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> BenchResult:
    """All levels in order. `read_snapshot(client)` is an async callable returning a metrics Snapshot
    (clocked with time.perf_counter()), or None when /metrics cannot be read."""
    import httpx

    limits = httpx.Limits(max_connections=max(cfg.concurrency) + 4, max_keepalive_connections=max(cfg.concurrency) + 4)
    async with httpx.AsyncClient(timeout=cfg.request_timeout_s, limits=limits) as client:
        model = await _bounded(_discover_model(client, cfg), "listing the served models")  # checks --model too
        version = None
        try:
            r = await asyncio.wait_for(client.get(f"{cfg.url}/version", headers=auth_headers(cfg)), SETUP_TIMEOUT_S)
            if r.status_code == 200:
                version = r.json().get("version")
                version = version if isinstance(version, str) else None
        except Exception:
            pass
        if cfg.prompts == "synthetic":
            ids = await _bounded(synthetic_prompt_ids(client, cfg, model, cfg.prompt_tokens), "tokenizing the prompt")
            # vary the first token per request so prefix caching cannot serve whole prompts from cache
            prompts: list[list[int] | str] = [[ids[(i * 7) % len(ids)]] + ids[1:] for i in range(64)]
        else:
            prompts = list(REALISTIC_PROMPTS)
        res = BenchResult(
            url=cfg.url,
            model=model,
            config={k: v for k, v in asdict(cfg).items() if k != "api_key"},
            server_version=version,
            started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        for _ in range(cfg.warmup_requests):
            await one_request(client, cfg, model, prompts[0])
        rc = (lambda: read_snapshot(client)) if read_snapshot else None
        for c in cfg.concurrency:
            if should_stop and should_stop():
                break
            lv = await run_level(client, cfg, model, c, prompts, rc, should_stop)
            res.levels.append(lv)
            if on_level:
                on_level(lv)
        return res


SCRAPE_TIMEOUT_S = 10.0  # one whole /metrics read (a real one takes milliseconds)
SCRAPE_MAX_BYTES = 32 * 1024**2  # a real vLLM /metrics is well under 1 MiB


async def read_server_snapshot(client, url: str, headers: dict[str, str] | None = None):
    """One /metrics scrape through the project's metrics parser, clocked with perf_counter (the clock the
    load generator times requests with); None when /metrics cannot be read, within SCRAPE_TIMEOUT_S and
    SCRAPE_MAX_BYTES (a server that drips or floods bytes cannot stall or exhaust the bench)."""
    import asyncio
    import time

    from spark_tui.core.observe.metrics import parse_metrics

    async def fetch() -> str | None:
        async with client.stream("GET", f"{url}/metrics", headers=headers or {}) as r:
            if r.status_code != 200:
                return None
            body = bytearray()
            async for chunk in r.aiter_bytes():
                body += chunk
                if len(body) > SCRAPE_MAX_BYTES:
                    return None
            return body.decode("utf-8", "replace")

    try:
        text = await asyncio.wait_for(fetch(), SCRAPE_TIMEOUT_S)
        if text is None:
            return None
        return parse_metrics(text, t=time.perf_counter(), wall=time.time(), histograms=())
    except Exception:  # unreachable, slow, an HTTP error, or not Prometheus text: the level runs without server figures
        return None


async def _bounded(coro: Any, what: str) -> Any:
    from spark_tui.errors import VllmError

    try:
        return await asyncio.wait_for(coro, SETUP_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise VllmError(f"the server did not finish {what} within {SETUP_TIMEOUT_S:g} s",
                        "is it overloaded or not a vLLM server? check with `spark-tui monitor --url URL --once`") from None


# -------------------------------------------------------------------------------------------- render


def _fmt(v: float | None, spec: str = ".1f", scale: float = 1.0) -> str:
    return "n/a" if v is None else format(v * scale, spec)


def render_table(res: BenchResult) -> str:
    head = (
        f"{'conc':>4} {'req':>5} {'err':>3} {'out tok/s':>10} {'per user':>9} {'req/s':>6} "
        f"{'TTFT p50/p95/p99 ms':>21} {'ITL p50/p95/p99 ms':>20} {'server tok/s':>12} {'check':>6} {'accept':>7} {'len':>5}"
    )
    lines = [f"model {res.model} at {res.url}" + (f" (vLLM {res.server_version})" if res.server_version else ""), head]
    for lv in res.levels:
        ttft = "/".join(_fmt(x, ".0f", 1000) for x in (lv.ttft_s.p50, lv.ttft_s.p95, lv.ttft_s.p99))
        itl = "/".join(_fmt(x, ".1f", 1000) for x in (lv.itl_s.p50, lv.itl_s.p95, lv.itl_s.p99))
        check = "n/a" if lv.self_check_ok is None else ("ok" if lv.self_check_ok else "OFF")
        acc = "n/a" if lv.acceptance_rate is None else f"{lv.acceptance_rate:.1%}"
        lines.append(
            f"{lv.concurrency:>4} {lv.requests:>5} {lv.errors:>3} {lv.output_tok_s:>10.1f} "
            f"{_fmt(lv.per_user_tok_s):>9} {lv.request_per_s:>6.2f} {ttft:>21} {itl:>20} "
            f"{_fmt(lv.server_gen_tok_s):>12} {check:>6} {acc:>7} {_fmt(lv.mean_acceptance_length, '.2f'):>5}"
        )
        for e in lv.first_errors:
            lines.append(f"      error: {e}")
    return "\n".join(lines)


def render_plot(res: BenchResult, width: int = 50, reference: dict[int, tuple[float, str]] | None = None) -> str:
    """A terminal bar plot of aggregate output tok/s per concurrency level, with reference figures."""
    if not res.levels:
        return "(no levels measured)"
    ref = reference or {}
    top = max([lv.output_tok_s for lv in res.levels] + [v for v, _ in ref.values()] + [1e-9])
    lines = ["aggregate output tok/s"]
    for lv in res.levels:
        n = int(round(lv.output_tok_s / top * width))
        lines.append(f"c={lv.concurrency:<4} {'█' * n}{' ' * (width - n)} {lv.output_tok_s:8.1f}")
        if lv.concurrency in ref:
            v, src = ref[lv.concurrency]
            m = int(round(v / top * width))
            lines.append(f"  ref  {'░' * m}{' ' * (width - m)} {v:8.1f}  ({src})")
    return "\n".join(lines)
