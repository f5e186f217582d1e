"""Scrapes as users get them: a malformed line is skipped and counted, not fatal; every scrape is bounded in bytes
and in time (real HTTP servers on 127.0.0.1; bodies are the real CPU vLLM 0.32 scrapes of tests/data/metrics)."""

from __future__ import annotations

import http.server
import itertools
import json
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from spark_tui.core.observe.metrics import MetricsScraper, parse_metrics, window_stats
from spark_tui.errors import VllmError

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "metrics"
REAL = (DATA / "qwen35-mtp-accept-1-after.txt").read_text()


def _serve(handler_body):
    """A real HTTP server on 127.0.0.1 whose GET handler is `handler_body(handler)`."""

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            try:
                handler_body(self)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


@pytest.fixture
def server():
    servers = []

    def start(handler_body):
        srv, url = _serve(handler_body)
        servers.append(srv)
        return url

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _fixed(body: bytes):
    def handle(h):
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    return handle


# --- parsing what is valid ---------------------------------------------------------------------------------------

def test_truncated_last_line_is_skipped_not_fatal():
    whole = parse_metrics(REAL, 0, 0)
    cut = REAL[: REAL.rindex("vllm:generation_tokens_total")] + "vllm:generation_tokens_total{engine=\"0\",mod"
    snap = parse_metrics(cut, 0, 0)
    assert snap.skipped_lines == 1
    assert snap.counter("vllm:generation_tokens") is None  # the cut sample is gone, nothing else
    assert snap.counter("vllm:prompt_tokens") == whole.counter("vllm:prompt_tokens")
    assert snap.gauges and all(whole.gauges[k] == v for k, v in snap.gauges.items())  # those before the cut


def test_pasted_curl_line_is_skipped_and_the_rest_is_identical():
    pasted = "$ curl -s http://127.0.0.1:8000/metrics\n" + REAL
    snap = parse_metrics(pasted, 0, 0)
    whole = parse_metrics(REAL, 0, 0)
    assert snap.skipped_lines == 1 and whole.skipped_lines == 0
    assert window_stats([snap]) == window_stats([whole])
    assert " (1 malformed /metrics line skipped)" == snap.scrape_note() and whole.scrape_note() == ""


def test_a_body_with_no_prometheus_line_is_still_refused():
    with pytest.raises(ValueError, match="none of its 2 lines"):
        parse_metrics("<html>\n<body>502 Bad Gateway</body>\n", 0, 0)


def test_bad_samples_inside_valid_syntax_are_counted():
    lab = 'engine="0",model_name="m"'  # the family as the CPU vLLM 0.32 exports it (tests/data/metrics)
    text = ("# TYPE vllm:spec_decode_num_accepted_tokens_per_pos_total counter\n"
            f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{lab},position="zero"}} 3.0\n'
            f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{lab},position="999999999"}} 3.0\n'
            f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{lab},position="1"}} 5.0\n')
    snap = parse_metrics(text, 0, 0)
    assert snap.skipped_lines == 2 and snap.spec_per_pos == (0.0, 5.0)  # no billion-entry tuple


# --- bounded reads from a real server ----------------------------------------------------------------------------

def test_scraper_reads_a_scrape_with_a_malformed_line(server):
    url = server(_fixed(("$ curl -s http://127.0.0.1:8000/metrics\n" + REAL).encode()))
    with MetricsScraper(url, timeout_s=5) as s:
        snap = s.scrape()
    assert snap.skipped_lines == 1 and snap.counter("vllm:generation_tokens") == 128


def test_huge_body_is_cut_at_the_byte_limit(server):
    def endless(h):  # a valid scrape followed by an endless stream of valid-looking samples, no Content-Length
        h.send_response(200)
        h.end_headers()
        h.wfile.write(REAL.encode())
        line = b'vllm:num_requests_waiting{engine="9",model_name="x"} 0.0\n'
        for _ in itertools.count():
            h.wfile.write(line * 1024)

    url = server(endless)
    t0 = time.monotonic()
    with MetricsScraper(url, timeout_s=10, max_bytes=256 * 1024) as s:
        snap = s.scrape()
    assert snap.truncated and "cut at 16 MiB" in snap.scrape_note()
    assert snap.counter("vllm:generation_tokens") == 128  # the real part, at the start, was read
    assert time.monotonic() - t0 < 10


def test_dripping_server_cannot_hold_a_scrape_past_its_deadline(server):
    def drip(h):
        h.send_response(200)
        h.end_headers()
        for ch in itertools.cycle(REAL.encode()):
            h.wfile.write(bytes([ch]))
            h.wfile.flush()
            time.sleep(0.2)

    url = server(drip)
    t0 = time.monotonic()
    with MetricsScraper(url, timeout_s=1.0) as s, pytest.raises(VllmError, match="did not finish its reply within 1 s"):
        s.scrape()
    assert time.monotonic() - t0 < 2.0


def test_stalled_server_is_cut_by_the_read_timeout(server):
    def stall(h):
        h.send_response(200)
        h.end_headers()
        h.wfile.write(b"# TYPE vllm:x counter\n")
        h.wfile.flush()
        time.sleep(30)

    url = server(stall)
    t0 = time.monotonic()
    with MetricsScraper(url, timeout_s=1.0) as s, pytest.raises(VllmError, match="cannot read .*ReadTimeout"):
        s.scrape()
    assert time.monotonic() - t0 < 2 * 1.0 + 0.5


def _with_line_after_generation_tokens(extra: str) -> str:
    """REAL with `extra` inserted right after its generation-token sample (inside a family the monitor reads)."""
    i = REAL.index("\n", REAL.rindex("vllm:generation_tokens_total")) + 1
    return REAL[:i] + extra + "\n" + REAL[i:]


def test_monitor_once_reports_the_skipped_line(server):
    url = server(_fixed(_with_line_after_generation_tokens('vllm:generation_tokens_total{engine="0",model_n')
                        .encode()))
    r = subprocess.run([sys.executable, "-m", "spark_tui", "monitor", "--url", url, "--once", "--no-gpu"],
                       capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "(1 malformed /metrics line skipped)" in r.stdout
    r = subprocess.run([sys.executable, "-m", "spark_tui", "monitor", "--url", url, "--once", "--no-gpu", "--json"],
                       capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, timeout=60)
    doc = json.loads(r.stdout)
    assert doc["skipped_lines"] == 1 and doc["truncated"] is False and doc["generation_tokens"] == 128


def test_launch_stats_line_from_two_real_scrapes(server):
    # `spark-tui launch`'s foreground line goes through this module's scraper: the recorded fresh and after scrapes of
    # the CPU vLLM (tests/data/metrics/README.md) give the tokens generated in between as a rate
    from spark_tui.commands.launch import _Stats

    bodies = [(DATA / "qwen3-moe-0-fresh.txt").read_bytes(), (DATA / "qwen3-moe-1-after.txt").read_bytes()]

    def handle(h):
        if bodies:
            _fixed(bodies.pop(0))(h)
        else:  # then the server goes away
            h.send_response(503)
            h.end_headers()

    stats = _Stats(server(handle))
    try:
        first = stats.line()
        assert first == "running 0  waiting 0  KV cache 0.0%  total generated 0"
        stats.prev = replace(stats.prev, t=stats.prev.t - 2.0)  # as if the first scrape was 2 s earlier
        second = stats.line()
        assert second is not None and second.startswith("running 0  waiting 0  KV cache 0.0%  gen ")
        gen = float(second.split("  gen ")[1].split(" tok/s")[0])
        assert 128 / 2.5 < gen <= 128 / 2.0 and second.endswith("total generated 128")
        assert stats.line() is None  # the server has nothing more to say: no line, no crash
    finally:
        stats.close()
