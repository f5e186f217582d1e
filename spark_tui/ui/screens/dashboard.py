"""Dashboard: live tok/s sparklines, MTP acceptance (rate, mean length, per position), KV-cache use,
running/waiting, TTFT/ITL p50/p95 and the GPU state, from a vLLM server's /metrics (the monitor's core:
spark_tui.core.observe.metrics window statistics over its bounded MetricsScraper)."""

from __future__ import annotations

import time
from collections import deque

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Sparkline, Static

from spark_tui.ui.messages import MetricsSample
from spark_tui.ui.screens.base import StepScreen

HISTORY = 120  # samples kept for the sparklines
WINDOW_S = 10.0  # rates over the last 10 s (as `spark-tui monitor`)


def bar(frac: float | None, width: int = 20) -> str:
    if frac is None:
        return "n/a"
    frac = min(max(frac, 0.0), 1.0)
    n = round(frac * width)
    return "█" * n + "░" * (width - n)


def _f(v: float | None, fmt: str = "{:.1f}", unit: str = "") -> str:
    return "n/a" if v is None else fmt.format(v) + unit


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 1000:.0f} ms"


def stats_lines(s) -> dict[str, str]:
    """The dashboard's text blocks for one metrics.Stats (pure: tested without a terminal)."""
    out = {
        "gen": f"generation {_f(s.generation_tok_s, unit=' tok/s')}",
        "prompt": f"prompt {_f(s.prompt_tok_s, unit=' tok/s')}",
        "load": (f"running {_f(s.requests_running, '{:.0f}')}  waiting {_f(s.requests_waiting, '{:.0f}')}  "
                 f"preemptions {_f(s.preemptions, '{:.0f}')}\n"
                 f"KV cache {bar(s.kv_cache_usage)} {_f(None if s.kv_cache_usage is None else 100 * s.kv_cache_usage, unit='%')}"),
        "latency": (f"TTFT p50 {_ms(s.ttft_p50_s)}  p95 {_ms(s.ttft_p95_s)}\n"
                    f"ITL  p50 {_ms(s.itl_p50_s)}  p95 {_ms(s.itl_p95_s)}"),
    }
    sp = s.spec
    if sp is None:
        out["mtp"] = "MTP: this server exports no speculative-decoding counters (MTP off)"
    else:
        rate = None if sp.acceptance_rate is None else 100 * sp.acceptance_rate
        lines = [f"MTP acceptance {_f(rate, unit='%')}  mean length {_f(sp.mean_acceptance_length, '{:.2f}')}"
                 f"  ({sp.num_drafts:.0f} drafts)"]
        for i, p in enumerate(sp.per_position):
            lines.append(f"  pos {i} {bar(p, 16)} {_f(None if p is None else 100 * p, '{:.0f}', '%')}")
        out["mtp"] = "\n".join(lines)
    if s.counter_reset:
        out["load"] += "\n(the server restarted inside the window)"
    return out


class DashboardScreen(StepScreen):
    MODE = "dashboard"
    BINDINGS = [("u", "edit_url", "Server URL"), ("c", "clear", "Clear history")]

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="dash-body"):
            yield Input(placeholder="vLLM URL, e.g. http://127.0.0.1:8000 (Enter)", id="dash-url", compact=True)
            yield Static("", id="dash-status")
            with Horizontal(classes="spark-row"):
                yield Static("generation n/a", id="dash-gen", classes="spark-label")
                yield Sparkline([], id="spark-gen")
            with Horizontal(classes="spark-row"):
                yield Static("prompt n/a", id="dash-prompt", classes="spark-label")
                yield Sparkline([], id="spark-prompt")
            with Horizontal(id="dash-grid"):
                with Vertical(classes="dash-col"):
                    yield Static("running n/a  waiting n/a\nKV cache n/a", id="dash-load", classes="panel")
                    yield Static("TTFT n/a\nITL n/a", id="dash-latency", classes="panel")
                with Vertical(classes="dash-col"):
                    yield Static("MTP acceptance n/a", id="dash-mtp", classes="panel")
                    yield Static("GPU: n/a", id="dash-gpu", classes="panel")

    def on_mount(self) -> None:
        self.gen_hist: deque[float] = deque(maxlen=HISTORY)
        self.prompt_hist: deque[float] = deque(maxlen=HISTORY)
        self.samples = 0
        if not self.app.live_probe:
            self.query_one("#dash-gpu", Static).update("GPU: recorded probe, no live GPU state")
        self.watch(self.app, "server_url", self._url_changed, init=True)

    def _url_changed(self, url: str | None) -> None:
        self.query_one("#dash-url", Input).value = url or ""
        if not url:
            self.workers.cancel_group(self, "scrape")
            self.query_one("#dash-status", Static).update(
                "No server to watch: launch one on Run (5), or give a URL (u), or start with "
                "`spark-tui --url http://host:port`.")
            return
        self.query_one("#dash-status", Static).update(f"watching {escape(url)}/metrics …")
        self.action_clear()
        self.scrape_loop(url)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "dash-url":
            return
        from spark_tui.core.observe.metrics import server_url
        from spark_tui.errors import UsageError

        raw = event.value.strip()
        if not raw:
            self.app.server_url = None
            return
        try:  # the check behind `monitor --url`: http(s) only, no user:password@ (never shown back)
            url = server_url(raw)
        except UsageError as e:
            if "credentials" in e.message:
                event.input.value = ""  # do not leave a password on the screen
            self.notify(f"{e.message}\n{e.hint}", title="URL", severity="error", markup=False)
            return
        self.app.server_url = url

    def action_edit_url(self) -> None:
        self.query_one("#dash-url", Input).focus()

    def action_clear(self) -> None:
        self.gen_hist.clear()
        self.prompt_hist.clear()
        self.query_one("#spark-gen", Sparkline).data = []
        self.query_one("#spark-prompt", Sparkline).data = []

    @work(thread=True, exclusive=True, group="scrape", exit_on_error=False)
    def scrape_loop(self, url: str, interval: float = 1.0) -> None:
        """Scrape every `interval` s; window statistics over WINDOW_S; GPU state every 2 s when live."""
        from textual.worker import get_current_worker

        from spark_tui.core.hardware.live import format_gpu, gpu_state
        from spark_tui.core.observe.metrics import MetricsScraper, Window
        from spark_tui.errors import SparkError

        w = get_current_worker()
        scraper = MetricsScraper(url)
        win = Window(WINDOW_S)
        gpu_line, gpu_at = "", 0.0
        try:
            while not w.is_cancelled:
                t0 = time.monotonic()
                if self.app.live_probe and t0 - gpu_at >= 2.0:
                    gpu_line, gpu_at = format_gpu(gpu_state()), t0
                try:
                    snap = scraper.scrape()
                    win.add(snap)
                    self.post_message(MetricsSample(win.stats(), gpu=gpu_line, note=snap.scrape_note()))
                except SparkError as e:
                    self.post_message(MetricsSample(None, error=e.message + (f" ({e.hint})" if e.hint else ""),
                                                    gpu=gpu_line))
                while time.monotonic() - t0 < interval and not w.is_cancelled:
                    time.sleep(0.05)
        finally:
            scraper.close()

    def on_metrics_sample(self, msg: MetricsSample) -> None:
        status = self.query_one("#dash-status", Static)
        url = self.app.server_url
        if msg.gpu:
            self.query_one("#dash-gpu", Static).update(escape(msg.gpu))
        if msg.error:
            status.update(f"[red]{escape(msg.error)}[/]")
            return
        if msg.stats is None:
            status.update(f"watching {escape(url or '')}/metrics: first scrape done, rates after the next one")
            return
        s = msg.stats
        self.samples += 1
        status.update(f"watching {escape(url or '')}/metrics  (rates over the last {s.window_s:.0f} s; "
                      f"model {escape(', '.join(s.model_names)) or 'n/a'}){escape(msg.note)}")
        self.gen_hist.append(s.generation_tok_s or 0.0)
        self.prompt_hist.append(s.prompt_tok_s or 0.0)
        self.query_one("#spark-gen", Sparkline).data = list(self.gen_hist)
        self.query_one("#spark-prompt", Sparkline).data = list(self.prompt_hist)
        t = stats_lines(s)
        self.query_one("#dash-gen", Static).update(t["gen"])
        self.query_one("#dash-prompt", Static).update(t["prompt"])
        self.query_one("#dash-load", Static).update(t["load"])
        self.query_one("#dash-latency", Static).update(t["latency"])
        self.query_one("#dash-mtp", Static).update(t["mtp"])
