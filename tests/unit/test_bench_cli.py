"""`spark-tui bench` argument handling that needs no server: --api-key-env is a variable NAME, and what was
passed there is never echoed (it may be the key itself)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench(*args: str, **env: str) -> subprocess.CompletedProcess:
    e = {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", ""), **env}
    # port 9 (discard) on loopback: nothing listens, and argument errors must come before any request
    return subprocess.run([sys.executable, "-m", "spark_tui", "bench", "--url", "http://127.0.0.1:9", "--no-save",
                           "--requests", "1", "--concurrency", "1", *args], capture_output=True, text=True, cwd=ROOT,
                          env=e, timeout=60)


def test_a_key_passed_as_the_variable_name_is_refused_and_not_echoed():
    secret = "sk-live-7f3a9c2b1e"
    r = _bench("--api-key-env", secret)
    assert r.returncode == 2, r.stderr
    assert "not the key itself" in r.stderr and "hint:" in r.stderr
    assert secret not in r.stderr + r.stdout


def test_an_unset_named_variable_is_refused_without_naming_it():
    r = _bench("--api-key-env", "MY_BENCH_KEY_UNSET")
    assert r.returncode == 2, r.stderr
    assert "is not set" in r.stderr and "MY_BENCH_KEY_UNSET" not in r.stderr


def test_default_variable_unset_means_no_key_and_the_run_proceeds():
    r = _bench()  # VLLM_API_KEY unset: a server without a key; fails only at the (unreachable) server
    assert r.returncode == 6, r.stderr
    assert "cannot list models" in r.stderr and "Traceback" not in r.stderr


def test_a_set_key_is_never_printed_on_failure():
    secret = "sk-live-0123456789abcdef"
    r = _bench("--api-key-env", "MY_BENCH_KEY", MY_BENCH_KEY=secret)
    assert r.returncode == 6, r.stderr
    assert secret not in r.stderr + r.stdout


def _serve(routes: dict[str, bytes]):
    """A real HTTP server on 127.0.0.1 answering GET path -> body (200), anything else 404."""
    import http.server
    import threading

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = routes.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv



@pytest.mark.parametrize("models,expect", [
    (b'{"data": ["not-an-object"]}', "cannot list models"),
    (b'{"data": [{"no_id": 1}]}', "cannot list models"),
    (b'[1, 2]', "cannot list models"),
    (b'{"data": []}', "serves no model"),
])
def test_a_server_that_is_not_an_openai_model_list_is_exit_6(models, expect):
    srv = _serve({"/v1/models": models})
    try:
        r = subprocess.run([sys.executable, "-m", "spark_tui", "bench", "--url", f"http://127.0.0.1:{srv.server_address[1]}",
                            "--no-save", "--requests", "1", "--concurrency", "1"], capture_output=True, text=True,
                           cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")}, timeout=60)
    finally:
        srv.shutdown()
        srv.server_close()
    assert r.returncode == 6, r.stderr
    assert expect in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr


def test_an_unwritable_data_dir_warns_and_keeps_the_figures(tmp_path):
    from spark_tui.commands import bench

    blocker = tmp_path / "home"
    blocker.write_text("a file where the data dir should be\n")
    with pytest.raises(OSError):
        bench.save_result({"model": "m"}, blocker / "data" / "bench")
    # the CLI path: saving fails after the run, the figures still reach stdout. The load generator is replaced
    # by one returning an empty result: what is under test is only what happens after it.
    code = (
        "import sys, argparse\n"
        "from spark_tui.commands import bench\n"
        "import spark_tui.core.observe.bench as cb\n"
        "async def empty_run(cfg, read_snapshot, on_level):\n"
        "    return cb.BenchResult(url=cfg.url, model='m', config={})\n"
        "cb.run_bench = empty_run\n"
        "p = argparse.ArgumentParser(); bench.add_parser(p)\n"
        "sys.exit(bench.run(p.parse_args(['--url', 'http://127.0.0.1:9', '--json', '--requests', '1'])))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", ""), "SPARK_TUI_HOME": str(blocker)})
    assert "result not saved" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert json.loads(r.stdout)["model"] == "m" and "saved_to" not in json.loads(r.stdout)


def test_a_model_the_server_does_not_serve_is_exit_2_naming_the_served_ones():
    srv = _serve({"/v1/models": b'{"object": "list", "data": [{"id": "qwen3.6", "object": "model"}]}'})
    try:
        r = subprocess.run([sys.executable, "-m", "spark_tui", "bench", "--url", f"http://127.0.0.1:{srv.server_address[1]}",
                            "--model", "qwen3.5", "--no-save", "--requests", "1", "--concurrency", "1"],
                           capture_output=True, text=True, cwd=ROOT,
                           env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")}, timeout=60)
    finally:
        srv.shutdown()
        srv.server_close()
    assert r.returncode == 2, r.stderr
    assert "'qwen3.5' is not served" in r.stderr and "served here: qwen3.6" in r.stderr
