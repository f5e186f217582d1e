"""`spark-tui launch` end to end in seconds: SPARK_TUI_VLLM points at a small real program that replays the
real CPU vLLM 0.32 startup log recorded by the logs helper (tests/data/logs/cpu-0.32.0-startup-shutdown.log)
and answers /health and /v1/models. The real-vLLM runs are in tests/e2e/test_launch_cpu.py."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil

from tests.support.runtime_ckpt import tensor, write_safetensors

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "tests" / "data" / "logs" / "cpu-0.32.0-startup-shutdown.log"

FAKE_VLLM = textwrap.dedent('''
    import http.server, json, sys, time
    args = sys.argv[1:]
    assert args[0] == "serve", args
    port = int(args[args.index("--port") + 1])
    name = args[args.index("--served-model-name") + 1]
    lines = open(LOG_PATH).read().splitlines()
    ready_at = next(i for i, l in enumerate(lines) if "Application startup complete" in l)
    for l in lines[: ready_at + 1]:
        print(l, flush=True)
        time.sleep(0.002)
    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_GET(self):
            body = {"/health": b"", "/v1/models": json.dumps({"data": [{"id": name}]}).encode()}.get(self.path)
            if body is None:
                self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers(); return
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
    srv = http.server.HTTPServer(("127.0.0.1", port), H)
    srv.timeout = 0.2
    end = time.time() + 120
    while time.time() < end:
        srv.handle_request()
''')

# the config.json of the monitor helper's tiny Qwen3-MoE (tests/support/gen_tiny_models.py)
CONFIG = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "dtype": "bfloat16", "head_dim": 32,
          "hidden_size": 128, "intermediate_size": 256, "max_position_embeddings": 2048, "moe_intermediate_size": 64,
          "num_attention_heads": 4, "num_experts_per_tok": 2, "num_hidden_layers": 2, "num_key_value_heads": 2,
          "num_local_experts": 8, "vocab_size": 4096, "rms_norm_eps": 1e-06, "tie_word_embeddings": False}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_launch_foreground_ctrl_c_stops_the_server(tmp_path):
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(CONFIG))
    write_safetensors(model / "model.safetensors", {"model.embed_tokens.weight": tensor("BF16", [4096, 128])})
    fake = tmp_path / "vllm"
    fake.write_text(f"#!{sys.executable}\nLOG_PATH = {str(LOG)!r}\n" + FAKE_VLLM)
    fake.chmod(0o755)
    port = _port()
    env = {**os.environ, "SPARK_TUI_HOME": str(tmp_path / "home"), "SPARK_TUI_VLLM": str(fake),
           "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-m", "spark_tui", "launch", "--device", "cpu-test", "--model-path",
                          str(model), "--port", str(port), "--stats-interval", "0.5"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    q: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [q.put(ln.rstrip("\n")) for ln in p.stdout] + [q.put(None)], daemon=True).start()
    lines: list[str] = []
    pid = None
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            ln = q.get(timeout=60)
            assert ln is not None, "\n".join(lines)
            lines.append(ln)
            if ln.startswith("vLLM starting: pid "):
                pid = int(ln.split()[3].rstrip(","))
            if ln.startswith("MISMATCH:"):
                break
        out = "\n".join(lines)
        # phases from the recorded real log, in order, then readiness and the plan check
        order = [out.index(s) for s in ("ok vLLM starting", "ok configuration resolved", "ok loading weights",
                                        "ok KV cache allocated", "ok server ready", "ready in")]
        assert order == sorted(order), out
        assert "KV cache: 6,528 tokens, plan predicted 32,768 (-80.1%)" in out  # the recorded run's 16M vs ours
        assert "MISMATCH: KV cache is 6,528 tokens, the plan predicted 32,768 (-80.1%)" in out
        assert "MoE backend: CPU (plan: auto)" in out
        assert pid is not None and psutil.pid_exists(pid)
        os.kill(p.pid, signal.SIGINT)  # Ctrl-C
        p.wait(timeout=40)
        rest_lines = []
        while (ln := q.get(timeout=10)) is not None:
            rest_lines.append(ln)
        rest = "\n".join(rest_lines)
        assert p.returncode == 0, rest
        assert "running " not in out + rest  # no stats line without vLLM metrics (/metrics is 404 here)
        assert "vLLM stopped (clean)" in rest, (p.returncode, rest)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert not list((tmp_path / "home" / "state" / "servers").glob("*.json"))
    finally:
        for x in filter(None, (pid, p.pid)):
            try:
                os.killpg(x, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
