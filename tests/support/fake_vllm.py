"""A small real program that stands in for `vllm` (SPARK_TUI_VLLM) where a real CPU vLLM would make a test take
minutes: it replays the startup log recorded from the real CPU vLLM 0.32.0
(tests/data/logs/cpu-0.32.0-startup-shutdown.log, see tests/data/logs/SOURCES.md) and serves what the
supervisor checks, on the --host and --port it is given (IPv4 or IPv6), with vLLM's API-key rule: when
VLLM_API_KEY is in its environment, /v1 paths need `Authorization: Bearer <key>` and /health does not
(vllm/entrypoints/serve/middleware/register.py, v0.32.0).

With FAKE_VLLM_REPORT set it writes what it received there as JSON: its argv and a SHA-256 of the key it
found in its environment (never the key), so tests can check the key arrived and only by the environment.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "tests" / "data" / "logs" / "cpu-0.32.0-startup-shutdown.log"

SCRIPT = r'''
import hashlib, http.server, json, os, signal, socket, sys, time
args = sys.argv[1:]
assert args[0] == "serve", args
def opt(name, default=None):
    return args[args.index(name) + 1] if name in args else default
host, port, name = opt("--host", "127.0.0.1"), int(opt("--port", "8000")), opt("--served-model-name", args[1])
key = os.environ.get("VLLM_API_KEY")
report = os.environ.get("FAKE_VLLM_REPORT")
if report:
    with open(report, "w") as f:
        json.dump({"argv": sys.argv, "key_sha256": hashlib.sha256(key.encode()).hexdigest() if key else None,
                   "pid": os.getpid()}, f)
lines = open(LOG_PATH).read().splitlines()
ready_at = next(i for i, l in enumerate(lines) if "Application startup complete" in l)
for l in lines[: ready_at + 1]:
    print(l, flush=True)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path.startswith("/v1") and key and self.headers.get("Authorization") != "Bearer " + key:
            self.send_response(401); self.send_header("Content-Length", "0"); self.end_headers(); return
        body = {"/health": b"", "/v1/models": json.dumps({"data": [{"id": name}]}).encode()}.get(self.path)
        if body is None:
            self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers(); return
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
class S(http.server.HTTPServer):
    address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
srv = S((host.strip("[]"), port), H)
srv.timeout = 0.2
end = time.time() + 120
while time.time() < end:
    srv.handle_request()
'''


def write_fake_vllm(path: Path) -> Path:
    """An executable fake `vllm` at path (run by this Python)."""
    path.write_text(f"#!{sys.executable}\nLOG_PATH = {str(LOG)!r}\n" + SCRIPT)
    path.chmod(0o755)
    return path


def tiny_model(d: Path) -> Path:
    """A model folder the cpu-test plan accepts: the tiny Qwen3-MoE config.json and one small shard."""
    import json

    from tests.support.runtime_ckpt import tensor, write_safetensors

    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "dtype": "bfloat16", "head_dim": 32,
        "hidden_size": 128, "intermediate_size": 256, "max_position_embeddings": 2048, "moe_intermediate_size": 64,
        "num_attention_heads": 4, "num_experts_per_tok": 2, "num_hidden_layers": 2, "num_key_value_heads": 2,
        "num_local_experts": 8, "vocab_size": 4096, "rms_norm_eps": 1e-06, "tie_word_embeddings": False}))
    write_safetensors(d / "model.safetensors", {"model.embed_tokens.weight": tensor("BF16", [4096, 128])})
    return d
