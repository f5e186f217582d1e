"""The monitor command's pure parts: formatting, URL handling, import hygiene, errors without a server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spark_tui.commands.monitor import format_stats, metrics_url, report
from spark_tui.core.hardware.live import format_gpu
from spark_tui.core.observe.metrics import snapshots_from, window_stats
from spark_tui.errors import UsageError
from tests.support.vllm_server import free_port

DATA = Path(__file__).resolve().parents[1] / "data" / "metrics"
ROOT = Path(__file__).resolve().parents[2]


def stats(model: str, window: bool):
    texts = [(0.0, (DATA / f"{model}-0-fresh.txt").read_text()), (2.0, (DATA / f"{model}-1-after.txt").read_text())]
    snaps = snapshots_from(texts if window else texts[1:])
    return window_stats(snaps), snaps[-1]


def test_format_without_spec_decode_says_na():
    st, _ = stats("qwen3-moe", window=True)
    line = format_stats(st)
    assert line.startswith("gen 64.0 tok/s, prompt ")
    assert "MTP n/a" in line and "KV 0.0%" in line


def test_format_spec_decode_cumulative():
    st, _ = stats("qwen35-mtp-accept", window=False)
    line = format_stats(st)
    assert line.startswith("since start: gen 128 tok")
    assert "MTP accept 100.0% len 2.00 pos [1.00]" in line


def test_report_json_fields():
    st, snap = stats("qwen35-mtp", window=False)
    d = json.loads(json.dumps(report(st, snap, "http://x/metrics", None)))
    assert d["schema_version"] == 1 and d["cumulative"] is True and d["generation_tok_s"] is None
    assert d["spec_decode"]["acceptance_rate"] == 0.0
    assert d["spec_decode"]["per_position_acceptance"] == [0.0]
    assert d["gpu"] is None


def test_gpu_line_is_honest_without_gpu():
    assert format_gpu({"status": "no_nvml", "message": "", "gpus": []}) == "GPU: no GPU (no_nvml)"
    assert "n/a" in format_gpu({"status": "unavailable", "message": "GPU probe not available", "gpus": []})
    g = {"status": "ok", "message": "", "mem_available_bytes": 100 * 2**30, "gpus": [
        {"index": 0, "name": "NVIDIA GB10", "utilization_pct": 87.0, "memory_used_bytes": None,
         "memory_total_bytes": None, "unified_memory": True, "temperature_c": 61.0, "power_draw_w": None}]}
    assert format_gpu(g) == "GPU0 87% unified, MemAvailable 100.0 GiB 61C"


def test_metrics_url():
    assert metrics_url("http://h:8000") == "http://h:8000/metrics"
    assert metrics_url("http://h:8000/metrics/") == "http://h:8000/metrics"
    with pytest.raises(UsageError):
        metrics_url("h:8000")


@pytest.mark.parametrize("given,base", [
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
    ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000"),  # the OpenAI base URL clients are set up with
    ("https://h.example/v1/", "https://h.example"),
    ("http://h:8000/metrics", "http://h:8000"),
])
def test_server_url_normalises(given, base):
    from spark_tui.core.observe.metrics import server_url

    assert server_url(given) == base


@pytest.mark.parametrize("bad", ["h:8000", "notaurl", "ftp://h:21", "http://", "http://h:port", "http://h:99999"])
def test_server_url_rejects(bad):
    from spark_tui.core.observe.metrics import server_url

    with pytest.raises(UsageError) as e:
        server_url(bad)
    assert "--url" in e.value.message and "http://127.0.0.1:8000" in e.value.hint


@pytest.mark.parametrize("cmd", ["monitor", "bench"])
def test_bad_url_is_a_usage_error_for_monitor_and_bench(cmd):
    r = subprocess.run([sys.executable, "-m", "spark_tui", cmd, "--url", "localhost:8000", "--no-gpu" if cmd == "monitor"
                        else "--no-save"], capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)},
                       timeout=60)
    assert r.returncode == 2, r.stderr
    assert "is not an http(s) URL" in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr


def test_import_is_light():
    code = ("import sys, spark_tui.commands.monitor, spark_tui.core.observe.metrics\n"
            "bad = [m for m in ('httpx', 'torch', 'vllm', 'textual', 'prometheus_client') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})


def test_unreachable_server_exits_6_with_hint():
    port = free_port()  # closed again: nothing listens there
    r = subprocess.run([sys.executable, "-m", "spark_tui", "monitor", "--url", f"http://127.0.0.1:{port}",
                        "--once", "--json", "--no-gpu"], capture_output=True, text=True, cwd=ROOT,
                       env={"PYTHONPATH": str(ROOT)}, timeout=60)
    assert r.returncode == 6
    assert "cannot read" in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args,what", [
    (["--interval", "nan"], "--interval"), (["--interval", "inf"], "--interval"), (["--window", "nan"], "--window"),
    (["--interval", "0"], "--interval"), (["--count", "-1"], "--count"),
])
def test_bad_loop_options_are_refused_before_any_request(args, what):
    import argparse

    from spark_tui.commands import monitor

    p = argparse.ArgumentParser()
    monitor.add_parser(p)
    # nothing listens on port 9 (discard) here: an option error must come before any connection attempt
    with pytest.raises(UsageError, match=what):
        monitor.run(p.parse_args(["--url", "http://127.0.0.1:9", "--no-gpu", *args]))


def _metrics_server(body: bytes):
    """A real HTTP server on 127.0.0.1 answering every GET with `body`."""
    import http.server
    import threading

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def garbage_metrics_server():
    """/metrics that is not Prometheus text (as a proxy or web page would answer)."""
    yield from _metrics_server(b"vllm:foo{bad\n<html>\xff\x00 not metrics</html>\n")


@pytest.fixture
def recorded_metrics_server():
    """/metrics as recorded from the CPU vLLM serving `qwen35-mtp-accept` (tests/data/metrics/README.md)."""
    yield from _metrics_server((ROOT / "tests/data/metrics/qwen35-mtp-accept-1-after.txt").read_bytes())


def test_a_model_the_server_does_not_serve_is_a_usage_error(recorded_metrics_server):
    from spark_tui.commands.monitor import Scraper

    s = Scraper(recorded_metrics_server, model="not-served", timeout_s=5)
    try:
        with pytest.raises(UsageError, match="'not-served' is not served") as e:
            s.scrape()
        assert "qwen35-mtp-accept" in e.value.hint
        s.model = "qwen35-mtp-accept"
        assert s.scrape().counter("vllm:generation_tokens") == 128
    finally:
        s.close()


def test_non_prometheus_reply_is_a_vllm_error_not_a_traceback(garbage_metrics_server):
    from spark_tui.commands.monitor import Scraper
    from spark_tui.errors import VllmError

    s = Scraper(garbage_metrics_server, timeout_s=5)
    try:
        with pytest.raises(VllmError, match="is not Prometheus metrics text") as e:
            s.scrape()
    finally:
        s.close()
    assert "\x00" not in e.value.message and "point --url" in e.value.hint


def test_bench_snapshot_of_a_non_prometheus_reply_is_none(garbage_metrics_server):
    import asyncio

    import httpx

    from spark_tui.core.observe.bench import read_server_snapshot

    async def go():
        async with httpx.AsyncClient(timeout=5) as c:
            return await read_server_snapshot(c, garbage_metrics_server)

    assert asyncio.run(go()) is None


def test_url_with_credentials_is_refused_without_echoing_them():
    import pytest

    from spark_tui.core.observe.metrics import server_url
    from spark_tui.errors import UsageError

    with pytest.raises(UsageError) as e:
        server_url("http://admin:s3cr3t-pw@127.0.0.1:8000")
    assert "s3cr3t-pw" not in str(e.value) and "credentials" in e.value.message
