"""The monitor against a real CPU vLLM 0.32 serving tiny generated models."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from spark_tui.commands.monitor import Scraper
from spark_tui.core.observe.metrics import parse_metrics, window_stats
from tests.support.vllm_server import mtp_config

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["def parse_args(argv):", "class Config:\n    def __init__(self", "import os\nimport sys\n",
           "for i in range(10):", "with open(path) as f:", "return sorted(items, key="]


def stream_completion(url: str, model: str, prompt: str, max_tokens: int) -> int:
    """One streaming completion; returns the completion tokens the server reports for it."""
    import httpx

    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    usage = None
    chunks = 0
    with httpx.Client(timeout=120) as c, c.stream("POST", url + "/v1/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            d = json.loads(line[len("data: "):])
            if d.get("usage"):
                usage = d["usage"]
            if d.get("choices"):
                chunks += 1
    assert usage is not None and chunks > 0
    return int(usage["completion_tokens"])


def load(url: str, model: str, n: int, max_tokens: int, concurrency: int) -> int:
    with ThreadPoolExecutor(concurrency) as ex:
        futs = [ex.submit(stream_completion, url, model, PROMPTS[i % len(PROMPTS)], max_tokens) for i in range(n)]
        return sum(f.result(timeout=180) for f in futs)


def raw_counter(text: str, sample: str) -> float:
    """Sum of one counter's samples, read line by line (independent of the code under test)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(sample + "{") or line.startswith(sample + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def scrape_text(url: str) -> str:
    import httpx

    return httpx.get(url + "/metrics", timeout=10).text


def monitor_cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spark_tui", "monitor", "--url", url, *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_generation_tok_s_matches_client(vllm_server_factory, tiny_qwen3_moe):
    h = vllm_server_factory(tiny_qwen3_moe)
    model = str(tiny_qwen3_moe)
    stream_completion(h.url, model, PROMPTS[0], 8)  # warm-up, outside the window
    scraper = Scraper(h.url)
    try:
        s0 = scraper.scrape()  # window opens right before the first request ...
        t0 = time.monotonic()
        client_tokens = load(h.url, model, n=12, max_tokens=96, concurrency=4)
        t1 = time.monotonic()
        s1 = scraper.scrape()  # ... and closes right after the last one finished
        st = window_stats([s0, s1])
        deadline = time.monotonic() + 2.0
        while st.generation_tokens < client_tokens and time.monotonic() < deadline:
            time.sleep(0.02)  # the API process may record the last iteration's stats a moment later
            s1 = scraper.scrape()
            st = window_stats([s0, s1])
    finally:
        scraper.close()
    assert client_tokens == 12 * 96
    assert st.generation_tokens == client_tokens  # the counter saw exactly the client's tokens
    client_rate = client_tokens / (t1 - t0)
    print(f"monitor {st.generation_tok_s:.1f} tok/s, client {client_rate:.1f} tok/s over {t1 - t0:.2f} s")
    assert st.generation_tok_s == pytest.approx(client_rate, rel=0.10), (st.generation_tok_s, client_rate)
    assert st.requests_completed == 12
    assert st.spec is None  # no speculative decoding on this server: n/a, not 0
    assert st.ttft_p50_s is not None and st.itl_p50_s is not None and st.itl_p50_s <= st.itl_p95_s


def test_always_accept_mtp(vllm_server_factory, tiny_qwen35_mtp_accept):
    h = vllm_server_factory(tiny_qwen35_mtp_accept, mtp_config(1))
    model = str(tiny_qwen35_mtp_accept)
    raw0 = scrape_text(h.url)
    load(h.url, model, n=4, max_tokens=48, concurrency=2)
    time.sleep(0.5)
    raw1 = scrape_text(h.url)
    st = window_stats([parse_metrics(raw0, 0.0, 0.0), parse_metrics(raw1, 1.0, 1.0)])
    drafted = raw_counter(raw1, "vllm:spec_decode_num_draft_tokens_total") - \
        raw_counter(raw0, "vllm:spec_decode_num_draft_tokens_total")
    accepted = raw_counter(raw1, "vllm:spec_decode_num_accepted_tokens_total") - \
        raw_counter(raw0, "vllm:spec_decode_num_accepted_tokens_total")
    drafts = raw_counter(raw1, "vllm:spec_decode_num_drafts_total") - raw_counter(raw0, "vllm:spec_decode_num_drafts_total")
    assert drafted > 0
    assert st.spec.acceptance_rate == pytest.approx(accepted / drafted)
    assert st.spec.acceptance_rate > 0.5
    assert st.spec.mean_acceptance_length == pytest.approx(1 + accepted / drafts)
    assert len(st.spec.per_position) == 1 and st.spec.per_position[0] == pytest.approx(accepted / drafts)

    # the CLI: one scrape, cumulative since server start, equals the raw counters of a scrape just after
    r = monitor_cli(h.url, "--once", "--json", "--no-gpu")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    raw2 = scrape_text(h.url)
    assert d["cumulative"] is True and d["generation_tok_s"] is None
    sd = d["spec_decode"]
    assert sd["draft_tokens"] == raw_counter(raw2, "vllm:spec_decode_num_draft_tokens_total")
    assert sd["accepted_tokens"] == raw_counter(raw2, "vllm:spec_decode_num_accepted_tokens_total")
    assert sd["acceptance_rate"] == pytest.approx(sd["accepted_tokens"] / sd["draft_tokens"])
    assert sd["acceptance_rate"] > 0.5
    assert d["generation_tokens"] == raw_counter(raw2, "vllm:generation_tokens_total")


def test_random_mtp_accepts_almost_nothing_and_live_loop(vllm_server_factory, tiny_qwen35_mtp):
    h = vllm_server_factory(tiny_qwen35_mtp, mtp_config(1))
    model = str(tiny_qwen35_mtp)
    load(h.url, model, n=4, max_tokens=48, concurrency=2)
    time.sleep(0.5)
    r = monitor_cli(h.url, "--once", "--json", "--no-gpu")
    assert r.returncode == 0, r.stderr
    sd = json.loads(r.stdout)["spec_decode"]
    assert sd["draft_tokens"] >= 4 * 40
    assert sd["acceptance_rate"] < 0.05

    # the live loop: two reports at 0.5 s, JSON lines with windowed rates
    r = monitor_cli(h.url, "--interval", "0.5", "--count", "2", "--json", "--no-gpu")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 2
    for d in lines:
        assert d["cumulative"] is False and d["window_s"] > 0
        assert d["generation_tok_s"] == 0.0  # idle server: a real zero rate
        assert d["spec_decode"]["acceptance_rate"] is None  # no drafts in the window: n/a
    # human output, with the GPU line: this machine has no GPU and must say so (or that the probe is absent)
    r = monitor_cli(h.url, "--once")
    assert r.returncode == 0, r.stderr
    assert "MTP accept" in r.stdout
    assert any(x in r.stdout for x in ("GPU: no GPU (", "GPU: n/a (", "GPU0 ")), r.stdout
