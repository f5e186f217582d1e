"""Record real /metrics scrapes from the CPU vLLM for tests/data/metrics/ (how those files were made).

    PYTHONPATH=. python -m tests.support.capture_metrics tests/data/metrics

For each tiny model: start `vllm serve` (served model name = the model's directory name), scrape once
before any request (`<name>-0-fresh.txt`), send 4 completions (temperature 0, max_tokens 32, ignore_eos,
one at a time) and scrape again (`<name>-1-after.txt`). The MTP models run with
`--speculative-config '{"method":"mtp","num_speculative_tokens":1}'` (so their scrapes hold spec-decode
counters); Qwen3-MoE runs without (so it has none).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.tiny_models import tiny_model
from tests.support.vllm_server import mtp_config, start_server, stop_server

PROMPTS = ["def parse_args(argv):", "class Config:\n    def __init__(self", "import os\nimport sys\n",
           "for i in range(10):"]


def scrape(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        return r.read().decode()


def complete(url: str, model: str, prompt: str) -> dict:
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": 32, "temperature": 0,
                       "ignore_eos": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


def capture(name: str, out: Path) -> None:
    spec = mtp_config(1) if name.startswith("qwen35") else None
    h = start_server(tiny_model(name), spec, ("--served-model-name", name))
    try:
        (out / f"{name}-0-fresh.txt").write_text(scrape(h.url))
        for p in PROMPTS:
            complete(h.url, name, p)
        time.sleep(1.0)  # let the engine's stats reach the API process
        (out / f"{name}-1-after.txt").write_text(scrape(h.url))
    finally:
        stop_server(h)


def main(argv: list[str]) -> int:
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name in argv[2:] or ["qwen3-moe", "qwen35-mtp", "qwen35-mtp-accept"]:
        print(f"capturing {name}", file=sys.stderr, flush=True)
        capture(name, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
