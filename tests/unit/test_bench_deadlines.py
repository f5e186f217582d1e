"""Issue #14 item 11: bench against bad servers on 127.0.0.1 (real HTTP, a small threaded server here): a
garbage completion stream counts as errors, a server that drips bytes cannot hold a level or a /metrics
scrape past its deadline, `--duration 0` is refused, and `tune` checks its arguments before launching
anything (and works with its default goal)."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from spark_tui.core.observe import bench as core_bench
from spark_tui.core.observe.bench import BenchConfig, run_bench

ROOT = Path(__file__).resolve().parents[2]
MODEL = "m"


class BadServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, completion: str) -> None:
        self.completion = completion  # what /v1/completions answers: a key of Handler.COMPLETIONS
        self.stop = threading.Event()
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: BadServer

    def log_message(self, *a) -> None:
        pass

    def _send(self, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drip(self) -> None:  # a byte every 50 ms, forever: every read is "in time", the response never ends
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        while not self.server.stop.is_set():
            try:
                self.wfile.write(b":")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.05)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._send(json.dumps({"data": [{"id": MODEL}]}).encode())
        elif self.path == "/metrics":
            if self.server.completion == "drip-metrics":
                self.close_connection = True
                self._drip()
            else:
                self._send(b"# nothing\n", "text/plain")
        else:
            self._send(b"{}")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/tokenize":
            self._send(json.dumps({"tokens": [1, 2, 3]}).encode())
            return
        kind = self.server.completion
        if kind == "drip":
            self.close_connection = True
            self._drip()
            return
        body = {
            "html": b"<html><body>Welcome to nginx!</body></html>\n",
            "no-done": b'data: {"choices":[{"text":"a"}],"usage":{"completion_tokens":1}}\n\n',
            "too-many": b'data: {"choices":[{"text":"a"}],"usage":{"completion_tokens":1000000}}\n\ndata: [DONE]\n\n',
            "not-object": b"data: [1, 2]\n\ndata: [DONE]\n\n",
            "bad-count": b'data: {"usage":{"completion_tokens":"lots"}}\n\ndata: [DONE]\n\n',
            "empty": b"data: [DONE]\n\n",
            "good": b'data: {"choices":[{"text":"a"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
                    b"data: [DONE]\n\n",
        }[kind]
        self._send(body, "text/event-stream")


@pytest.fixture
def bad_server():
    servers = []

    def start(kind: str) -> str:
        s = BadServer(kind)
        servers.append(s)
        threading.Thread(target=s.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{s.server_address[1]}"

    yield start
    for s in servers:
        s.stop.set()
        s.shutdown()
        s.server_close()


def bench(url: str, **kw) -> object:
    cfg = BenchConfig(url=url, concurrency=(1,), prompt_tokens=3, output_tokens=2, requests=kw.pop("requests", 2),
                      duration_s=kw.pop("duration_s", None), warmup_requests=0, **kw)
    # the test's own guard: before the fix a dripping server held the bench for ever
    return asyncio.run(asyncio.wait_for(run_bench(cfg), 30))


@pytest.mark.parametrize("kind", ["html", "no-done", "too-many", "not-object", "bad-count", "empty"])
def test_a_garbage_completion_stream_counts_as_errors(bad_server, kind):
    res = bench(bad_server(kind))
    lv = res.levels[0]
    assert lv.requests == 2 and lv.errors == 2, lv
    assert lv.output_tokens == 0 and lv.first_errors


def test_a_good_stream_still_counts(bad_server):
    lv = bench(bad_server("good")).levels[0]
    assert lv.requests == 2 and lv.errors == 0 and lv.output_tokens == 4


def test_a_dripping_server_cannot_hold_a_request_or_a_level(bad_server):
    url = bad_server("drip")
    t = time.monotonic()
    lv = bench(url, request_timeout_s=1.0).levels[0]
    assert time.monotonic() - t < 10
    assert lv.errors == lv.requests == 2
    assert "no complete response within 1 s" in lv.first_errors[0]
    t = time.monotonic()
    lv = bench(url, request_timeout_s=1.0, requests=None, duration_s=0.5).levels[0]  # bounded by duration
    assert time.monotonic() - t < 10 and lv.errors == lv.requests >= 1


def test_a_dripping_metrics_scrape_gives_up_at_its_deadline(bad_server, monkeypatch):
    import httpx

    monkeypatch.setattr(core_bench, "SCRAPE_TIMEOUT_S", 1.0)
    url = bad_server("drip-metrics")

    async def scrape():
        async with httpx.AsyncClient(timeout=300) as c:
            return await core_bench.read_server_snapshot(c, url)

    t = time.monotonic()
    assert asyncio.run(asyncio.wait_for(scrape(), 20)) is None
    assert time.monotonic() - t < 5


def cli(*argv: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHONPATH": str(ROOT), "SPARK_TUI_HOME": str(home), **env}
    return subprocess.run([sys.executable, "-m", "spark_tui", *argv], cwd=ROOT, env=e, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("argv", [("--duration", "0"), ("--duration", "nan"), ("--duration", "-5"),
                                  ("--requests", "0"), ("--prompt-tokens", "0"), ("--output-tokens", "-1")])
def test_bench_refuses_an_empty_or_endless_level(tmp_path, argv):
    p = cli("bench", "--url", "http://127.0.0.1:9", *argv, home=tmp_path)
    assert p.returncode == 2, p.stderr
    assert f"argument {argv[0]}" in p.stderr and "Traceback" not in p.stderr


def _tiny_model(tmp_path: Path) -> Path:
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "head_dim": 32, "hidden_size": 128,
        "max_position_embeddings": 2048, "moe_intermediate_size": 64, "num_attention_heads": 4,
        "num_experts_per_tok": 2, "num_hidden_layers": 2, "num_key_value_heads": 2, "num_local_experts": 8,
        "vocab_size": 4096}))
    return d


@pytest.mark.parametrize("argv,named", [
    (("--requests", "0"), "argument --requests"), (("--budget", "inf"), "argument --budget"),
    (("--startup-timeout", "0"), "argument --startup-timeout"), (("--output-tokens", "x"), "argument --output-tokens"),
    (("--set", "max-num-seqs=abc"), "--max-num-seqs"), (("--goal", "balanced"), "tune needs --goal latency"),
])
def test_tune_checks_its_arguments_before_launching_anything(tmp_path, argv, named):
    marker = tmp_path / "launched"
    fake = tmp_path / "vllm"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nsleep 30\n")
    fake.chmod(0o755)
    p = cli("tune", "--device", "cpu-test", "--model-path", str(_tiny_model(tmp_path)), *argv, home=tmp_path / "h",
            SPARK_TUI_VLLM=str(fake))
    assert p.returncode == 2 and named in p.stderr, p.stderr
    assert not marker.exists()


def test_tune_runs_with_its_default_goal(tmp_path):
    # no --goal: latency. With no vLLM to start, it gets as far as launching (exit 6), not to a usage error
    p = cli("tune", "--device", "cpu-test", "--model-path", str(_tiny_model(tmp_path)), "--mtp-values", "0",
            home=tmp_path / "h", SPARK_TUI_VLLM=str(tmp_path / "no-such-vllm"))
    assert p.returncode == 6, p.stderr
    assert "is not an executable" in p.stderr and "Traceback" not in p.stderr
