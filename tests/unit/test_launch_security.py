"""Issue #14 items 1, 4 and 7, with real processes: `launch` on a non-loopback address needs an API key that
reaches vLLM only through its environment; `stop` never signals a process whose pid was reused; the port
check and the readiness probe work in the host's address family (`--host ::1`)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from spark_tui.core.runtime import supervisor as sv
from spark_tui.errors import UsageError, VllmError
from tests.support.fake_vllm import tiny_model, write_fake_vllm

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-test-" + "7f3a9c" * 6


def _free_port(family=socket.AF_INET, host="127.0.0.1") -> int:
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def env(tmp_path):
    fake = write_fake_vllm(tmp_path / "vllm")
    e = {k: v for k, v in os.environ.items() if k != "VLLM_API_KEY"}
    e.update(SPARK_TUI_HOME=str(tmp_path / "home"), SPARK_TUI_VLLM=str(fake), PYTHONPATH=str(ROOT),
             FAKE_VLLM_REPORT=str(tmp_path / "report.json"))
    return e


def launch(tmp_path, env, *extra: str, host: str = "0.0.0.0", port: int | None = None) -> subprocess.CompletedProcess:
    model = tiny_model(tmp_path / "tiny")
    port = port or _free_port()
    return subprocess.run([sys.executable, "-m", "spark_tui", "launch", "--device", "cpu-test", "--model-path",
                           str(model), "--host", host, "--port", str(port), "--detach", "--startup-timeout", "60",
                           *extra], env=env, capture_output=True, text=True, timeout=120)


def stop_all(env) -> None:
    subprocess.run([sys.executable, "-m", "spark_tui", "stop", "--all", "--grace", "5"], env=env, capture_output=True,
                   text=True, timeout=60)


# ------------------------------------------------------------------------------------------------ item 1
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10"])
def test_a_public_bind_without_an_api_key_is_refused_before_anything_starts(tmp_path, env, host):
    p = launch(tmp_path, env, host=host)
    assert p.returncode == 2, p.stdout + p.stderr
    assert f"refusing to serve on {host} without an API key" in p.stderr and "VLLM_API_KEY" in p.stderr
    assert not (tmp_path / "report.json").exists()  # the fake vLLM never ran


def test_the_key_from_the_environment_reaches_vllm_only_through_its_environment(tmp_path, env):
    env["VLLM_API_KEY"] = SECRET
    try:
        p = launch(tmp_path, env)
        assert p.returncode == 0, p.stdout + p.stderr
        rep = json.loads((tmp_path / "report.json").read_text())
        assert rep["key_sha256"] == hashlib.sha256(SECRET.encode()).hexdigest()
        assert not any(SECRET in a for a in rep["argv"])
        assert SECRET not in " ".join(psutil.Process(rep["pid"]).cmdline())  # what `ps` shows
        assert SECRET not in p.stdout + p.stderr
        home = Path(env["SPARK_TUI_HOME"])
        for f in home.rglob("*"):
            if f.is_file():
                assert SECRET not in f.read_text(errors="replace"), f  # state file, log
    finally:
        stop_all(env)


def test_the_key_from_a_0600_file(tmp_path, env):
    key_file = tmp_path / "vllm-api-key.env"
    key_file.write_text(f"VLLM_API_KEY={SECRET}\n")
    key_file.chmod(0o644)
    p = launch(tmp_path, env, "--api-key-file", str(key_file))
    assert p.returncode == 2 and "chmod 600" in p.stderr and SECRET not in p.stderr
    key_file.chmod(0o600)
    try:
        p = launch(tmp_path, env, "--api-key-file", str(key_file))
        assert p.returncode == 0, p.stdout + p.stderr
        rep = json.loads((tmp_path / "report.json").read_text())
        assert rep["key_sha256"] == hashlib.sha256(SECRET.encode()).hexdigest()
        assert not any(SECRET in a for a in rep["argv"])
    finally:
        stop_all(env)


def test_api_key_env_names_another_variable(tmp_path, env):
    env["MY_KEY"] = SECRET
    try:
        p = launch(tmp_path, env, "--api-key-env", "MY_KEY")
        assert p.returncode == 0, p.stdout + p.stderr
        assert json.loads((tmp_path / "report.json").read_text())["key_sha256"] == \
            hashlib.sha256(SECRET.encode()).hexdigest()
    finally:
        stop_all(env)
    p = launch(tmp_path, env, "--api-key-env", SECRET)  # the key itself by mistake: refused, not echoed
    assert p.returncode == 2 and SECRET not in p.stderr


def test_loopback_needs_no_key(tmp_path, env):
    try:
        p = launch(tmp_path, env, host="127.0.0.1")
        assert p.returncode == 0, p.stdout + p.stderr
        assert json.loads((tmp_path / "report.json").read_text())["key_sha256"] is None
    finally:
        stop_all(env)


# ------------------------------------------------------------------------------------------------ item 7
@pytest.mark.skipif(not _ipv6(), reason="no IPv6 loopback on this machine")
def test_port_check_in_the_hosts_address_family():
    port = _free_port(socket.AF_INET6, "::1")
    sv.check_port_free("::1", port)  # was: "port in use" (an IPv4 socket cannot bind ::1)
    sv.check_port_free("[::1]", port)
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", port))
        s.listen()
        with pytest.raises(VllmError, match="already in use"):
            sv.check_port_free("::1", port)
    port4 = _free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port4))
        s.listen()
        with pytest.raises(VllmError, match="already in use"):
            sv.check_port_free("127.0.0.1", port4)
    with pytest.raises(UsageError, match="does not resolve"):
        sv.check_port_free("no-such-host.invalid", 8000)


def test_urls_in_the_hosts_address_family():
    assert sv.http_url("::1", 8000) == "http://[::1]:8000"
    assert sv.http_url("::", 8000) == "http://[::1]:8000"
    assert sv.http_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert sv.http_url("10.0.0.5", 80) == "http://10.0.0.5:80"
    assert sv.http_url("localhost", 1) == "http://localhost:1"


@pytest.mark.skipif(not _ipv6(), reason="no IPv6 loopback on this machine")
def test_launch_on_ipv6_loopback_becomes_ready(tmp_path, env):
    try:
        p = launch(tmp_path, env, host="::1", port=_free_port(socket.AF_INET6, "::1"))
        assert p.returncode == 0, p.stdout + p.stderr
        assert "ready in" in p.stdout and "at http://[::1]:" in p.stdout
    finally:
        stop_all(env)


# ------------------------------------------------------------------------------------------------ item 4
def _unrelated_session_leader() -> subprocess.Popen:
    """A process that is not a vLLM server, in its own session (pgid = pid), as a reused pid would be."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)


def _record(home: Path, pid: int, **kw) -> Path:
    d = dict(pid=pid, pgid=pid, host="127.0.0.1", port=8000, model="m", served_model_name=None,
             log_path=str(home / "x.log"), argv=("/usr/bin/vllm", "serve", "m"), started_at=time.time() - 3600,
             detached=True)
    d.update(kw)
    p = home / "state" / "servers" / f"{pid}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(d))
    return p


@pytest.mark.parametrize("fields", [
    {},  # a record as spark-tui wrote them before this check: only started_at, an hour before this process
    {"create_time": time.time() - 3600, "instance": "0" * 32},  # another start time
    {"instance": "0" * 32},  # a record written before create_time: the start time is far from started_at
    {"started_at": None},  # right start time (filled below), but another command line and no marker
])
def test_stop_all_never_signals_a_process_whose_pid_was_reused(tmp_path, fields):
    home = tmp_path / "home"
    victim = _unrelated_session_leader()
    try:
        if fields.get("started_at", 0) is None:
            ct = psutil.Process(victim.pid).create_time()
            fields = {"started_at": ct, "create_time": ct, "instance": "0" * 32}
        rec = _record(home, victim.pid, **fields)
        env = {**os.environ, "SPARK_TUI_HOME": str(home), "PYTHONPATH": str(ROOT)}
        for argv in (["stop", "--all", "--grace", "1"], ["stop", str(victim.pid), "--grace", "1"], ["stop"]):
            p = subprocess.run([sys.executable, "-m", "spark_tui", *argv], env=env, capture_output=True, text=True,
                               timeout=60)
            assert "Traceback" not in p.stderr
            time.sleep(0.3)
            assert victim.poll() is None, f"{argv}: the unrelated process was killed"
        assert not rec.exists()  # the stale record is gone
    finally:
        victim.kill()
        victim.wait()


def test_the_recorded_server_itself_passes_the_check_and_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_TUI_HOME", str(tmp_path / "home"))
    s = sv.Supervisor([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"], host="127.0.0.1",
                      port=1, model="m", detach=True, grace_s=2)
    rec = s.start()
    try:
        assert rec.create_time is not None and rec.instance
        assert sv.identity_problem(rec) is None
        assert [r.pid for r in sv.list_servers()] == [rec.pid]
        assert sv.stop_server(rec, 5) in ("clean", "killed")  # signalled: the check let it through
        assert sv.stop_server(rec, 5) == "gone"
    finally:
        if s.alive():
            os.killpg(rec.pgid, signal.SIGKILL)


def test_a_script_server_passes_on_its_command_line_alone(tmp_path, monkeypatch):
    # `vllm` is a #! script: the kernel runs [python, /path/vllm, serve, ...]; a record without the environment
    # marker (written before it existed) must still be recognised by start time and command line
    monkeypatch.setenv("SPARK_TUI_HOME", str(tmp_path / "home"))
    script = tmp_path / "server"
    script.write_text(f"#!{sys.executable}\nimport time\nprint('up', flush=True)\ntime.sleep(60)\n")
    script.chmod(0o755)
    s = sv.Supervisor([str(script), "serve", "m"], host="127.0.0.1", port=1, model="m", detach=True, grace_s=2)
    rec = s.start()
    try:
        old = sv.ServerRecord(**{**rec.__dict__, "instance": None})
        assert sv.identity_problem(old) is None
        other = sv.ServerRecord(**{**rec.__dict__, "instance": None, "argv": ("/usr/bin/vllm", "serve", "m")})
        assert "now runs" in sv.identity_problem(other)
    finally:
        os.killpg(rec.pgid, signal.SIGKILL)
