"""vLLM `/metrics` (Prometheus text format) -> snapshots -> windowed statistics; and the one bounded HTTP read of it.

Parsing uses prometheus_client's own parser (`text_string_to_metric_families`), never regexes. A scrape with a
malformed line (a truncated last line, a pasted `$ curl ...`) is not thrown away: the lines the parser refuses are
skipped and counted (`Snapshot.skipped_lines`) and the rest is parsed. `MetricsScraper` (the only I/O here, shared
by `spark-tui monitor` and the TUI dashboard) reads at most `MAX_SCRAPE_BYTES` per scrape under one deadline. A
Snapshot holds every `vllm:` counter, gauge and histogram, summed over the label sets of one model
(engines of a data-parallel server, `finished_reason` of request_success, ...). Gauges that are fractions
(`*_perc`) are averaged over engines instead of summed. The spec-decode per-position counter is kept per
position.

Statistics (`window_stats`) follow the PromQL vLLM documents (v1/spec_decode/metrics.py, v1/metrics/
loggers.py): rates are counter increases over the window divided by its length; a counter that goes down
between two consecutive snapshots is a server restart, and counts from zero again (as Prometheus'
`increase()` does); quantiles come from histogram bucket increases, interpolated like
`histogram_quantile`. A family the server does not export (no speculative decoding, no prefix cache)
gives None, which the CLI shows as "n/a" and JSON as null: never 0.

Metric names (vLLM 0.32 `v1/metrics/loggers.py`, `v1/spec_decode/metrics.py`, read from the installed
wheel; older names from earlier vLLM source):
  - KV-cache use: `vllm:kv_cache_usage_perc` (0-1); before 0.9.2 `vllm:gpu_cache_usage_perc`.
  - Inter-token latency: `vllm:inter_token_latency_seconds`; older `vllm:time_per_output_token_seconds`.
  - Prefix cache: `vllm:prefix_cache_queries/hits`; older `vllm:gpu_prefix_cache_queries/hits`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# counters (family names, without the `_total` sample suffix)
GENERATION_TOKENS = "vllm:generation_tokens"
PROMPT_TOKENS = "vllm:prompt_tokens"
REQUEST_SUCCESS = "vllm:request_success"
PREEMPTIONS = "vllm:num_preemptions"
PREFIX_QUERIES = ("vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries")
PREFIX_HITS = ("vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits")
SPEC_DRAFTS = "vllm:spec_decode_num_drafts"
SPEC_DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens"
SPEC_ACCEPTED = "vllm:spec_decode_num_accepted_tokens"
SPEC_PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos"
# gauges
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
# histograms
TTFT = ("vllm:time_to_first_token_seconds",)
ITL = ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")


@dataclass(frozen=True)
class Histogram:
    """Cumulative buckets as (upper bound `le`, cumulative count), sorted, ending with +Inf."""

    buckets: tuple[tuple[float, float], ...]
    count: float
    sum: float


@dataclass(frozen=True)
class Snapshot:
    """One scrape. `t` is a monotonic clock reading (seconds) used for rates; `wall` is Unix time."""

    t: float
    wall: float
    counters: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)
    spec_per_pos: tuple[float, ...] | None = None  # accepted tokens at draft position 0..k-1; None: absent
    model_names: tuple[str, ...] = ()
    skipped_lines: int = 0  # lines (or samples) of the scrape that could not be parsed and were left out
    truncated: bool = False  # the body was longer than the scraper reads; only its start was parsed

    def counter(self, *names: str) -> float | None:
        return next((self.counters[n] for n in names if n in self.counters), None)

    def gauge(self, *names: str) -> float | None:
        return next((self.gauges[n] for n in names if n in self.gauges), None)

    def histogram(self, *names: str) -> Histogram | None:
        return next((self.histograms[n] for n in names if n in self.histograms), None)

    def scrape_note(self) -> str:
        """What to tell the user about a scrape that was not read whole ("" when it was)."""
        parts = []
        if self.skipped_lines:
            parts.append(f"{self.skipped_lines} malformed /metrics line{'s' if self.skipped_lines != 1 else ''} "
                         "skipped")
        if self.truncated:
            parts.append(f"/metrics cut at {MAX_SCRAPE_BYTES // 2**20} MiB")
        return f" ({'; '.join(parts)})" if parts else ""


def server_url(url: str) -> str:
    """A vLLM server's base URL from what a user passes as --url: `http(s)://host[:port]`, a trailing `/`,
    `/metrics` or `/v1` (the OpenAI base URL clients are configured with) removed. UsageError otherwise.
    The one check behind `monitor --url` and `bench --url`."""
    from urllib.parse import urlsplit

    from spark_tui.errors import UsageError

    u = url.strip().rstrip("/")
    for tail in ("/metrics", "/v1"):
        if u.endswith(tail):
            u = u[: -len(tail)].rstrip("/")
    try:
        parts = urlsplit(u)
        if parts.username is not None or parts.password is not None:  # never echo them back
            raise UsageError("--url carries credentials (user:password@); they would end up in messages and results",
                             "drop them from the URL: vLLM takes its API key as a bearer token, from the variable "
                             "named by --api-key-env (default VLLM_API_KEY)")
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number or out of range
    except ValueError:
        ok = False
    if not ok:
        raise UsageError(f"--url {url!r} is not an http(s) URL of a server", "pass e.g. --url http://127.0.0.1:8000")
    return u


def select_families(text: str, histograms: Collection[str] | None) -> str:
    """Drop non-vLLM families and the histograms not in `histograms` (None: keep all) before parsing.

    Only `# TYPE` lines are looked at (a family's samples follow its TYPE line in the exposition format);
    the samples themselves are still parsed by prometheus_client. Histogram buckets are most of a vLLM
    scrape, so this keeps a 1 Hz monitor cheap (bench/monitor_cost.py)."""
    out: list[str] = []
    skip = False
    for line in text.split("\n"):
        if line.startswith("# TYPE "):
            parts = line.split()
            name = parts[2] if len(parts) > 2 else ""
            kind = parts[3] if len(parts) > 3 else ""
            skip = (
                not name.startswith("vllm:")
                # the 0.0.4 text format exports each counter's and histogram's creation time as a gauge
                or (kind == "gauge" and name.endswith("_created"))
                or (histograms is not None and kind == "histogram" and name not in histograms)
            )
        elif line.startswith("# HELP "):
            continue  # documentation only
        if not skip:
            out.append(line)
    return "\n".join(out)


def parse_metrics(text: str, t: float, wall: float, model: str | None = None,
                  histograms: Collection[str] | None = TTFT + ITL) -> Snapshot:
    """Parse a `/metrics` body. With `model`, only samples labelled `model_name=model` count; without,
    every vLLM sample counts (a server serves one model; its engines are summed). Histograms other than
    `histograms` (default: the TTFT and inter-token latency ones the statistics use) are skipped;
    pass None to keep every histogram."""
    text = select_families(text, histograms)
    families, skipped = _families(text)

    counters: dict[str, float] = {}
    gauges: dict[str, list[float]] = {}
    hist_buckets: dict[str, dict[float, float]] = {}
    hist_count: dict[str, float] = {}
    hist_sum: dict[str, float] = {}
    per_pos: dict[int, float] = {}
    models: set[str] = set()
    for fam in families:
        if not fam.name.startswith("vllm:"):
            continue
        for s in fam.samples:
            mn = s.labels.get("model_name")
            if mn is not None:
                models.add(mn)
            if model is not None and mn is not None and mn != model:
                continue
            try:
                v = float(s.value)
                if fam.type == "counter":
                    if not s.name.endswith("_total"):
                        continue  # `_created` timestamps
                    if fam.name == SPEC_PER_POS:
                        pos = int(s.labels.get("position", "0"))
                        if not 0 <= pos < MAX_SPEC_POSITIONS:
                            raise ValueError(f"position {pos}")
                        per_pos[pos] = per_pos.get(pos, 0.0) + v
                    else:
                        counters[fam.name] = counters.get(fam.name, 0.0) + v
                elif fam.type == "gauge":
                    gauges.setdefault(fam.name, []).append(v)
                elif fam.type == "histogram":
                    if s.name.endswith("_bucket"):
                        le = float(s.labels["le"])
                        b = hist_buckets.setdefault(fam.name, {})
                        b[le] = b.get(le, 0.0) + v
                    elif s.name.endswith("_count"):
                        hist_count[fam.name] = hist_count.get(fam.name, 0.0) + v
                    elif s.name.endswith("_sum"):
                        hist_sum[fam.name] = hist_sum.get(fam.name, 0.0) + v
            except (ValueError, KeyError, TypeError):  # a sample without `le`, a position that is not a number
                skipped += 1
    g = {n: (sum(vs) / len(vs) if n.endswith("_perc") else sum(vs)) for n, vs in gauges.items()}
    hists = {
        n: Histogram(tuple(sorted(b.items())), hist_count.get(n, 0.0), hist_sum.get(n, 0.0))
        for n, b in hist_buckets.items()
    }
    pp = tuple(per_pos.get(i, 0.0) for i in range(max(per_pos) + 1)) if per_pos else None
    return Snapshot(t=t, wall=wall, counters=counters, gauges=g, histograms=hists, spec_per_pos=pp,
                    model_names=tuple(sorted(models)), skipped_lines=skipped)


MAX_SPEC_POSITIONS = 64  # draft positions kept (vLLM drafts at most a few dozen tokens per step)
_PARSE_ERRORS = (ValueError, KeyError, IndexError, TypeError)


def _families(text: str) -> tuple[list, int]:
    """prometheus_client's families of `text`, and how many lines it could not parse. The whole text is parsed
    at once; only when that fails is each line tried alone, the refused ones left out, and the rest parsed."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        return list(text_string_to_metric_families(text)), 0
    except _PARSE_ERRORS:
        pass
    kept: list[str] = []
    skipped = 0
    for line in text.split("\n"):
        if line.strip():
            try:
                list(text_string_to_metric_families(line + "\n"))
            except _PARSE_ERRORS:
                skipped += 1
                continue
        kept.append(line)
    if skipped and not any(ln.strip() and not ln.startswith("#") for ln in kept):
        raise ValueError(f"none of its {skipped} lines is a Prometheus sample")
    try:
        return list(text_string_to_metric_families("\n".join(kept) + "\n")), skipped
    except _PARSE_ERRORS as e:  # every line parses alone but not together (e.g. a family's TYPE given twice)
        raise ValueError(f"{e} ({skipped} other lines skipped)") from None


# ---- increases over a window ------------------------------------------------------------------------


def counter_increase(values: Sequence[float | None]) -> float | None:
    """Increase of a counter over consecutive readings; a drop is a restart (counts from 0 again).
    None when the counter is absent from the last reading or from every reading."""
    present = [v for v in values if v is not None]
    if not present or values[-1] is None:
        return None
    total = 0.0
    prev: float | None = None
    for v in values:
        if v is None:
            prev = None  # family vanished (server down): restart the chain at the next reading
            continue
        if prev is not None:
            total += v - prev if v >= prev else v
        prev = v
    return total


def counter_reset_seen(values: Sequence[float | None]) -> bool:
    prev = None
    for v in values:
        if v is not None and prev is not None and v < prev:
            return True
        if v is not None:
            prev = v
    return False


def histogram_increase(hists: Sequence[Histogram | None]) -> Histogram | None:
    """Bucket-wise increase across consecutive snapshots (a drop of the count is a restart)."""
    if not hists or hists[-1] is None:
        return None
    les = [le for le, _ in hists[-1].buckets]
    acc = dict.fromkeys(les, 0.0)
    count = total = 0.0
    prev: Histogram | None = None
    for h in hists:
        if h is None:
            prev = None
            continue
        if prev is not None:
            cur = dict(h.buckets)
            if h.count < prev.count:  # restart: the new histogram is all increase
                base: dict[float, float] = {}
                dc, ds = h.count, h.sum
            else:
                base = dict(prev.buckets)
                dc, ds = h.count - prev.count, h.sum - prev.sum
            for le in les:
                acc[le] += max(0.0, cur.get(le, 0.0) - base.get(le, 0.0))
            count += dc
            total += ds
        prev = h
    return Histogram(tuple((le, acc[le]) for le in les), count, total)


def histogram_quantile(q: float, h: Histogram | None) -> float | None:
    """The q-quantile (0 <= q <= 1) from cumulative buckets, like Prometheus `histogram_quantile`:
    linear interpolation inside the bucket holding rank q*count, the lowest bucket starting at 0, and the
    highest finite bound returned when the rank falls in the +Inf bucket. None with no observations."""
    if h is None or not h.buckets or not 0.0 <= q <= 1.0:
        return None
    les = [le for le, _ in h.buckets]
    # cumulative counts must not decrease (they can after a partial scrape): enforce monotonic
    cum: list[float] = []
    m = 0.0
    for _, c in h.buckets:
        m = max(m, c)
        cum.append(m)
    if not math.isinf(les[-1]):
        return None  # Prometheus needs the +Inf bucket
    total = cum[-1]
    if total <= 0:
        return None
    if len(les) < 2:
        return None
    rank = q * total
    i = next(j for j, c in enumerate(cum) if c >= rank)
    if math.isinf(les[i]):
        return les[-2]
    if i == 0 and les[0] <= 0:
        return les[0]
    lower = 0.0 if i == 0 else les[i - 1]
    below = 0.0 if i == 0 else cum[i - 1]
    in_bucket = cum[i] - below
    if in_bucket <= 0:
        return les[i]
    return lower + (les[i] - lower) * (rank - below) / in_bucket


# ---- statistics ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecStats:
    num_drafts: float
    draft_tokens: float
    accepted_tokens: float
    acceptance_rate: float | None  # accepted / draft tokens; None with no drafts
    mean_acceptance_length: float | None  # 1 + accepted / drafts (counts the bonus token)
    per_position: tuple[float | None, ...]  # accepted at position i / drafts

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_drafts": self.num_drafts,
            "draft_tokens": self.draft_tokens,
            "accepted_tokens": self.accepted_tokens,
            "acceptance_rate": self.acceptance_rate,
            "mean_acceptance_length": self.mean_acceptance_length,
            "per_position_acceptance": list(self.per_position),
        }


@dataclass(frozen=True)
class Stats:
    """Figures over a window of snapshots (`cumulative`: since server start, from one snapshot)."""

    cumulative: bool
    window_s: float | None
    generation_tokens: float | None
    prompt_tokens: float | None
    generation_tok_s: float | None
    prompt_tok_s: float | None
    requests_completed: float | None
    requests_running: float | None
    requests_waiting: float | None
    kv_cache_usage: float | None  # 0-1
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    itl_p50_s: float | None
    itl_p95_s: float | None
    preemptions: float | None
    prefix_cache_queries: float | None
    prefix_cache_hits: float | None
    prefix_cache_hit_rate: float | None
    spec: SpecStats | None  # None: the server exports no spec-decode counters
    counter_reset: bool  # a counter went down inside the window (server restarted)
    model_names: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "cumulative": self.cumulative,
            "window_s": self.window_s,
            "model_names": list(self.model_names),
            "generation_tokens": self.generation_tokens,
            "prompt_tokens": self.prompt_tokens,
            "generation_tok_s": self.generation_tok_s,
            "prompt_tok_s": self.prompt_tok_s,
            "requests_completed": self.requests_completed,
            "requests_running": self.requests_running,
            "requests_waiting": self.requests_waiting,
            "kv_cache_usage": self.kv_cache_usage,
            "ttft_p50_s": self.ttft_p50_s,
            "ttft_p95_s": self.ttft_p95_s,
            "itl_p50_s": self.itl_p50_s,
            "itl_p95_s": self.itl_p95_s,
            "preemptions": self.preemptions,
            "prefix_cache_queries": self.prefix_cache_queries,
            "prefix_cache_hits": self.prefix_cache_hits,
            "prefix_cache_hit_rate": self.prefix_cache_hit_rate,
            "spec_decode": None if self.spec is None else self.spec.to_dict(),
            "counter_reset": self.counter_reset,
        }


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def _spec_stats(drafts: float | None, draft_tokens: float | None, accepted: float | None,
                per_pos: Sequence[float] | None) -> SpecStats | None:
    if drafts is None or draft_tokens is None or accepted is None:
        return None
    al = _ratio(accepted, drafts)
    return SpecStats(
        num_drafts=drafts,
        draft_tokens=draft_tokens,
        accepted_tokens=accepted,
        acceptance_rate=_ratio(accepted, draft_tokens),
        mean_acceptance_length=None if al is None else 1.0 + al,
        per_position=tuple(_ratio(p, drafts) for p in (per_pos or ())),
    )


def window_stats(snaps: Sequence[Snapshot]) -> Stats:
    """Statistics over a window: increases from the first to the last snapshot (through every snapshot in
    between, so restarts are caught), rates over last.t - first.t, gauges from the last snapshot.
    One snapshot gives cumulative figures since server start (no rates)."""
    if not snaps:
        raise ValueError("window_stats needs at least one snapshot")
    last = snaps[-1]
    cumulative = len(snaps) == 1
    if cumulative:
        def inc(*names: str) -> float | None:
            return last.counter(*names)

        def hinc(names: tuple[str, ...]) -> Histogram | None:
            return last.histogram(*names)

        per_pos = last.spec_per_pos
        reset = False
        window = None
    else:
        def inc(*names: str) -> float | None:
            return counter_increase([s.counter(*names) for s in snaps])

        def hinc(names: tuple[str, ...]) -> Histogram | None:
            return histogram_increase([s.histogram(*names) for s in snaps])

        per_pos = None
        if last.spec_per_pos is not None:
            k = len(last.spec_per_pos)
            per_pos = tuple(
                counter_increase([
                    (s.spec_per_pos[i] if s.spec_per_pos is not None and i < len(s.spec_per_pos) else None)
                    for s in snaps
                ]) or 0.0
                for i in range(k)
            )
        names = [GENERATION_TOKENS, PROMPT_TOKENS, REQUEST_SUCCESS, SPEC_DRAFTS]
        reset = any(counter_reset_seen([s.counter(n) for s in snaps]) for n in names)
        window = last.t - snaps[0].t
    gen = inc(GENERATION_TOKENS)
    prompt = inc(PROMPT_TOKENS)
    ttft = hinc(TTFT)
    itl = hinc(ITL)
    pq = inc(*PREFIX_QUERIES)
    ph = inc(*PREFIX_HITS)
    return Stats(
        cumulative=cumulative,
        window_s=window,
        generation_tokens=gen,
        prompt_tokens=prompt,
        generation_tok_s=gen / window if window is not None and window > 0 and gen is not None else None,
        prompt_tok_s=prompt / window if window is not None and window > 0 and prompt is not None else None,
        requests_completed=inc(REQUEST_SUCCESS),
        requests_running=last.gauge(RUNNING),
        requests_waiting=last.gauge(WAITING),
        kv_cache_usage=last.gauge(*KV_USAGE),
        ttft_p50_s=histogram_quantile(0.5, ttft),
        ttft_p95_s=histogram_quantile(0.95, ttft),
        itl_p50_s=histogram_quantile(0.5, itl),
        itl_p95_s=histogram_quantile(0.95, itl),
        preemptions=inc(PREEMPTIONS),
        prefix_cache_queries=pq,
        prefix_cache_hits=ph,
        prefix_cache_hit_rate=_ratio(ph, pq),
        spec=_spec_stats(inc(SPEC_DRAFTS), inc(SPEC_DRAFT_TOKENS), inc(SPEC_ACCEPTED), per_pos),
        counter_reset=reset,
        model_names=last.model_names,
    )


class Window:
    """A sliding window of snapshots spanning at most `seconds` (plus the one just before, so the window
    is always covered), for the live monitor."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.snaps: list[Snapshot] = []

    def add(self, s: Snapshot) -> None:
        self.snaps.append(s)
        while len(self.snaps) > 2 and s.t - self.snaps[1].t >= self.seconds:
            self.snaps.pop(0)

    def stats(self) -> Stats | None:
        return window_stats(self.snaps) if len(self.snaps) >= 2 else None


def snapshots_from(texts: Iterable[tuple[float, str]], model: str | None = None) -> list[Snapshot]:
    """Parse (monotonic time, text) pairs; wall time is taken equal to t (recorded data, tests)."""
    return [parse_metrics(text, t=t, wall=t, model=model) for t, text in texts]


# ---- the bounded scrape (the only I/O in this module) --------------------------------------------------------

MAX_SCRAPE_BYTES = 16 * 2**20  # a vLLM /metrics body is ~60-80 KiB (tests/data/metrics); 16 MiB is far beyond
SCRAPE_DEADLINE_S = 5.0


class MetricsScraper:
    """One keep-alive HTTP client for repeated scrapes of a vLLM server's `/metrics` (cheap at 1 Hz), each bounded:
    at most `max_bytes` of body are read (a longer one is cut: its start is parsed, `Snapshot.truncated` is set),
    and the whole read must end within `deadline_s` (a server that drips a byte at a time cannot hold the monitor;
    a server that stalls completely is cut by the same value as read timeout, so a scrape never takes more than
    twice `deadline_s`). Errors are `VllmError` (unreachable, HTTP error, not Prometheus text, no `vllm:` metrics)
    or `UsageError` (a `model` the server does not serve). `monitor` and the TUI dashboard share it."""

    def __init__(self, url: str, model: str | None = None, timeout_s: float = SCRAPE_DEADLINE_S,
                 max_bytes: int = MAX_SCRAPE_BYTES) -> None:
        import httpx

        self.url = server_url(url) + "/metrics"
        self.model = model
        self.deadline_s = timeout_s
        self.max_bytes = max_bytes
        self._httpx = httpx
        self.client = httpx.Client(timeout=timeout_s)

    def fetch(self) -> tuple[str, bool]:
        """The body as text (at most `max_bytes` of it) and whether it was cut."""
        import time

        from spark_tui.errors import VllmError

        httpx = self._httpx
        deadline = time.monotonic() + self.deadline_s
        buf = bytearray()
        truncated = False
        try:
            with self.client.stream("GET", self.url) as r:
                if r.status_code != 200:
                    raise VllmError(f"{self.url} answered HTTP {r.status_code}",
                                    "point --url at a vLLM server (it serves Prometheus metrics at /metrics)")
                for chunk in r.iter_bytes():  # decoded (gzip) bytes: the cap counts what is parsed
                    room = self.max_bytes - len(buf)
                    buf += chunk[:room]
                    if len(chunk) > room:
                        truncated = True
                        break
                    if time.monotonic() > deadline:
                        raise VllmError(f"{self.url} did not finish its reply within {self.deadline_s:g} s "
                                        f"({len(buf):,} bytes so far)",
                                        "the server is overloaded or this is not a vLLM server; check --url")
        except httpx.HTTPError as e:
            raise VllmError(f"cannot read {self.url}: {e.__class__.__name__}: {e}",
                            "is the server running? start it with `spark-tui launch`, or pass --url") from None
        return buf.decode("utf-8", errors="replace"), truncated

    def scrape(self) -> Snapshot:
        import time

        from spark_tui.errors import UsageError, VllmError

        text, truncated = self.fetch()
        try:
            snap = parse_metrics(text, t=time.monotonic(), wall=time.time(), model=self.model)
        except ValueError as e:  # lines that parse alone but not together
            why = "".join(c if c.isprintable() else "?" for c in str(e)[:80])  # binary replies stay off the terminal
            raise VllmError(f"{self.url} is not Prometheus metrics text ({why})",
                            "point --url at a vLLM OpenAI-compatible server") from None
        if truncated:
            snap = Snapshot(**{**snap.__dict__, "truncated": True})
        if self.model is not None and snap.model_names and self.model not in snap.model_names:
            # else every figure would read n/a, as if the server exported nothing
            raise UsageError(f"--model {self.model!r} is not served at {self.url}",
                             f"served here: {', '.join(snap.model_names)}; drop --model to watch all of them")
        if not snap.counters and not snap.gauges:
            if snap.skipped_lines:
                raise VllmError(f"{self.url} is not Prometheus metrics text ({snap.skipped_lines} lines could not "
                                "be parsed)", "point --url at a vLLM OpenAI-compatible server")
            raise VllmError(f"{self.url} has no vllm: metrics", "point --url at a vLLM OpenAI-compatible server")
        return snap

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "MetricsScraper":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
