"""The tiny synthetic Qwen3.6 checkpoint (BF16, with its MTP head) served by the real CPU vLLM.

Same code path as the full-scale checkpoint the lead serves on the H100, at tiny dimensions. vLLM
refuses to start when a checkpoint tensor has no parameter or a parameter gets no tensor, so a
start plus a completion proves the names and shapes; the log is also checked for silent skips.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.vllm_server import mtp_config

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("synth_checkpoint", REPO / "bench" / "synth_checkpoint.py")
sc = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("synth_checkpoint", sc)
_spec.loader.exec_module(sc)

SILENT_SKIPS = ("Attempted to load weight", "skip loading", "not found in params_dict", "were not initialized")


@pytest.fixture(scope="module")
def synth_tiny_bf16(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth-bf16")
    sc.build_checkpoint(out, "bf16", "tiny", workers=1)
    return out


def _complete(url: str, model: str, body: dict) -> dict:
    r = httpx.post(f"{url}/v1/completions", json={"model": model, **body}, timeout=120)
    assert r.status_code == 200, r.text[:2000]
    return r.json()


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    vals = [float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(name + "{")]
    return sum(vals)


@pytest.mark.vllm
def test_language_model_only_with_mtp_serves(vllm_server_factory, synth_tiny_bf16):
    h = vllm_server_factory(synth_tiny_bf16, mtp_config(1), ("--language-model-only",))
    out = _complete(h.url, str(synth_tiny_bf16), {"prompt": "def main(argv):\n    parser =", "max_tokens": 16,
                                                  "temperature": 0, "return_token_ids": True})
    # random weights: the text may decode to nothing (special tokens, split UTF-8); the ids may not
    ids = out["choices"][0]["token_ids"]
    assert out["usage"]["completion_tokens"] == 16 and len(ids) == 16
    vocab = json.loads((synth_tiny_bf16 / "config.json").read_text())["text_config"]["vocab_size"]
    assert all(0 <= i < vocab for i in ids)
    assert _metric(h.url, "vllm:spec_decode_num_draft_tokens_total") > 0  # the MTP head drafted
    log = h.log_path.read_text(errors="replace")
    assert "Resolved architecture: Qwen3_5MoeForConditionalGeneration" in log
    assert "Resolved architecture: Qwen3_5MoeMTP" in log
    assert not [ln for ln in log.splitlines() if any(s in ln for s in SILENT_SKIPS)]


@pytest.mark.vllm
def test_multimodal_layout_loads_the_vision_tower_too(vllm_server_factory, synth_tiny_bf16):
    # without --language-model-only vLLM builds the vision tower and the processor from our files
    h = vllm_server_factory(synth_tiny_bf16)
    r = httpx.post(f"{h.url}/v1/chat/completions", timeout=120, json={
        "model": str(synth_tiny_bf16), "max_tokens": 8, "temperature": 0,
        "messages": [{"role": "user", "content": "hello there, how are you"}]})
    assert r.status_code == 200, r.text[:2000]
    assert r.json()["usage"]["completion_tokens"] == 8
    log = h.log_path.read_text(errors="replace")
    assert not [ln for ln in log.splitlines() if any(s in ln for s in SILENT_SKIPS)]
    cfg = json.loads((synth_tiny_bf16 / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen3_5MoeForConditionalGeneration"]
