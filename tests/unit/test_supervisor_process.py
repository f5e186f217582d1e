"""Supervisor mechanics with small real child processes (python sleep loops, a tiny HTTP server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from spark_tui.core.runtime import supervisor as sv
from spark_tui.errors import VllmError

ROOT = Path(__file__).resolve().parents[2]

# a "server" that prints, forks a grandchild into its own group, and sleeps (bounded: 120 s)
CHILD = textwrap.dedent("""
    import subprocess, sys, time
    print("GPU KV cache size: 1,234 tokens, Maximum concurrency for 512 tokens per request: 2.41x", flush=True)
    print("Using 'marlin' NvFp4 MoE backend out of potential backends: ['marlin'].", flush=True)
    g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    print(f"grandchild {g.pid}", flush=True)
    for i in range(1200):
        time.sleep(0.1)
""")

STUBBORN = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('stubborn', flush=True)\n" \
           "for i in range(1200): time.sleep(0.1)\n"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_TUI_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _wait(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _group_members(pgid):
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass
    return out


def _sup(code, **kw):
    return sv.Supervisor([sys.executable, "-c", code], host="127.0.0.1", port=1, model="m", **kw)


def test_lines_log_state_file_and_clean_stop_of_the_whole_group():
    s = _sup(CHILD, grace_s=5)
    seen = []
    s.subscribe(seen.append)
    rec = s.start()
    assert _wait(lambda: any(isinstance(e, sv.LogLine) and e.text.startswith("grandchild") for e in seen))
    assert json.loads(rec.path().read_text())["pgid"] == rec.pgid == rec.pid
    assert len(_group_members(rec.pgid)) == 2  # server + grandchild
    assert s.watchdog is not None and s.watchdog.poll() is None
    summ = s.summary()
    assert summ.kv_cache_tokens == 1234 and summ.moe_backend == "marlin"
    assert any(isinstance(e, sv.PhaseChanged) for e in seen)
    assert any(isinstance(e, sv.LogEvent) and type(e.event).__name__ == "KvCacheSize" for e in seen)
    assert sv.list_servers()[0].pid == rec.pid
    assert s.stop() == "clean"
    assert _group_members(rec.pgid) == []
    assert not rec.path().exists() and sv.list_servers() == []
    assert s.watchdog.poll() is not None  # the watchdog ends with the group
    assert _wait(lambda: any(isinstance(e, sv.Exited) and e.stopped_by_us for e in seen))
    log = Path(rec.log_path).read_text()
    assert "GPU KV cache size" in log and "exited with" in log


def test_sigkill_after_grace_when_sigterm_is_ignored():
    s = _sup(STUBBORN, grace_s=1)
    seen = []
    s.subscribe(seen.append)
    rec = s.start()
    assert _wait(lambda: any(isinstance(e, sv.LogLine) and e.text == "stubborn" for e in seen))
    t = time.monotonic()
    assert s.stop() == "killed"
    assert 0.9 < time.monotonic() - t < 8
    assert _group_members(rec.pgid) == []


def test_log_rotation(tmp_path):
    log = sv.RotatingLog(tmp_path / "x.log", max_bytes=100, backups=2)
    for i in range(30):
        log.write(f"line {i:03d} ..........\n".encode())
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["x.log", "x.log.1", "x.log.2"]
    assert "line 029" in (tmp_path / "x.log").read_text()


# a parent process (standing in for spark-tui) that starts a supervised child and prints its pgid
PARENT = textwrap.dedent("""
    import sys, time
    from spark_tui.core.runtime import supervisor as sv
    detach = sys.argv[1] == "detach"
    s = sv.Supervisor([sys.executable, "-c", sys.argv[2]], host="127.0.0.1", port=1, model="m",
                      detach=detach, grace_s=3)
    if not detach:
        sv.install_signal_handlers(s)
    rec = s.start()
    print(rec.pgid, flush=True)
    if detach:
        sys.exit(0)
    for i in range(1200):
        time.sleep(0.1)
""")


def _parent(mode, home):
    env = {**os.environ, "SPARK_TUI_HOME": str(home), "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-c", PARENT, mode, CHILD], stdout=subprocess.PIPE, text=True, env=env,
                         start_new_session=True)
    pgid = int(p.stdout.readline())
    assert _wait(lambda: len(_group_members(pgid)) == 2)
    return p, pgid


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_no_orphans_when_the_parent_dies(sig, home):
    p, pgid = _parent("attached", home)
    os.kill(p.pid, sig)
    p.wait(timeout=20)
    assert _wait(lambda: _group_members(pgid) == [], timeout=15), f"survivors after {sig!r}: {_group_members(pgid)}"
    if sig != signal.SIGKILL:
        assert p.returncode == 128 + sig  # our handler stopped the group, then exited
    assert _wait(lambda: sv.list_servers() == [])


def test_detached_server_outlives_its_parent_and_stop_ends_it(home):
    p, pgid = _parent("detach", home)
    p.wait(timeout=20)
    time.sleep(2 * sv.WATCHDOG_POLL_S + 0.5)  # no watchdog may act on a detached server
    assert len(_group_members(pgid)) == 2
    recs = sv.find_servers()
    assert [r.pgid for r in recs] == [pgid] and recs[0].detached and recs[0].watchdog_pid is None
    env = {**os.environ, "SPARK_TUI_HOME": str(home), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "spark_tui", "stop", str(recs[0].pid)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "stopped" in out.stdout
    assert _group_members(pgid) == []
    assert sv.list_servers() == []


# a tiny OpenAI-ish server: /health and /v1/models after a short delay
FAKE_SERVER = textwrap.dedent("""
    import http.server, json, sys, time
    port, model, delay = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    print("Starting to load model", flush=True)
    time.sleep(delay)
    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_GET(self):
            if self.path == "/health":
                body = b""
            elif self.path == "/v1/models":
                body = json.dumps({"data": [{"id": model}]}).encode()
            else:
                self.send_response(404); self.end_headers(); return
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
    srv = http.server.HTTPServer(("127.0.0.1", port), H)
    srv.timeout = 0.5
    end = time.time() + 120
    while time.time() < end:
        srv.handle_request()
""")


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ready_when_health_and_models_answer():
    port = _free_port()
    s = sv.Supervisor([sys.executable, "-c", FAKE_SERVER, str(port), "tiny", "0.5"], host="127.0.0.1", port=port,
                      model="/x/tiny", served_model_name="tiny", grace_s=3)
    seen = []
    s.subscribe(seen.append)
    s.start()
    try:
        r = s.wait_ready(30, poll_s=0.2)
        assert r.models == ("tiny",) and r.url == f"http://127.0.0.1:{port}" and r.seconds >= 0.4
        assert any(isinstance(e, sv.Ready) for e in seen)
        with pytest.raises(VllmError) as e:
            sv.check_port_free("127.0.0.1", port)
        assert "already in use" in e.value.message
    finally:
        s.stop()


def test_startup_timeout_stops_the_group_with_a_diagnosis():
    port = _free_port()
    s = sv.Supervisor([sys.executable, "-c", FAKE_SERVER, str(port), "tiny", "60"], host="127.0.0.1", port=port,
                      model="tiny", grace_s=2)
    rec = s.start()
    with pytest.raises(VllmError) as e:
        s.wait_ready(2, poll_s=0.2, diagnose=lambda lines: "diagnosis: " + (
            "saw the load line" if "Starting to load model" in lines else "nothing"))
    assert "did not become ready within 2 s" in e.value.message and "saw the load line" in e.value.message
    assert _group_members(rec.pgid) == []


def test_early_exit_reports_the_code_and_last_lines():
    s = _sup("import sys; print('ValueError: Quantization method specified in the model config', flush=True); "
             "sys.exit(3)")
    s.start()
    with pytest.raises(VllmError) as e:
        s.wait_ready(20, poll_s=0.1)
    assert "exited with code 3" in e.value.message and "Quantization method" in e.value.message


def test_launch_diagnosis_uses_the_logs_helper():
    from spark_tui.core.runtime.launch import diagnosis_summary

    s = _sup("import sys; print('(APIServer pid=1) ERROR 11-23 10:00:00 [core.py:1] ValueError: Quantization method "
             "specified in the model config (modelopt_fp4) does not match the quantization method specified in the "
             "`quantization` argument (fp8).', flush=True); sys.exit(1)")
    s.start()
    with pytest.raises(VllmError) as e:
        s.wait_ready(20, poll_s=0.1, diagnose=diagnosis_summary)
    assert "fix:" in e.value.message, e.value.message
