"""Issue #14 in the TUI: a server launched from the app is not orphaned when the app is SIGKILLed (item 3) and
is released only when the user keeps it; a non-loopback bind needs an API key as `launch` does (item 1);
`--url` and the Dashboard's URL field refuse credentials and non-http URLs without showing them (item 6);
Escape leaves an input field so the digit keys switch steps again (item 12).

The app runs headless (App.run_test); the server is the fake vLLM (tests/support/fake_vllm.py), a real
process replaying a recorded real vLLM startup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from textual.widgets import Input, Static

from spark_tui.errors import UsageError
from spark_tui.ui.app import SparkApp
from tests.support.fake_vllm import tiny_model, write_fake_vllm
from tests.ui.conftest import load_probe, plain

ROOT = Path(__file__).resolve().parents[2]

# the app in its own process: plan for cpu-test, launch on Run (5, l), print the server's pid once ready;
# then either wait to be killed ("wait") or quit and keep the server ("keep")
APP = textwrap.dedent("""
    import asyncio, sys, time
    from spark_tui.ui.app import SparkApp
    from tests.ui.conftest import load_probe

    model, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    async def until(pilot, cond, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            await pilot.pause(0.1)
            if cond():
                return True
        return False

    async def main():
        app = SparkApp(probe=load_probe("gb10"), live_probe=False)
        async with app.run_test(size=(120, 40)) as pilot:
            app.overrides = {"model_path": model, "set_flags": [f"--port={port}"]}
            app.target_device = "cpu-test"
            # the probe's own plan may come first: wait for the one for cpu-test
            assert await until(pilot, lambda: app.plan is not None and app.plan.device.id == "cpu-test", 90), \
                app.plan_error
            await pilot.press("5", "l")
            if not await until(pilot, lambda: app.server_state == "ready", 120):
                from textual.widgets import Static

                status = app.screen.query_one("#run-status", Static).content
                raise SystemExit(f"not ready: {app.server_state}: {status}")
            print(app.supervisor.proc.pid, flush=True)
            if mode == "keep":
                await pilot.press("q")
                await pilot.pause(0.3)
                await pilot.press("k")
                await until(pilot, lambda: not app.is_running, 10)
                print("kept", app.kept_server.pid, flush=True)
                return
            while True:
                await pilot.pause(0.5)

    asyncio.run(main())
""")


def _gone(pid: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.1)
    return False


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _app_process(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARK_TUI_HOME": str(tmp_path / "home"),
           "SPARK_TUI_VLLM": str(write_fake_vllm(tmp_path / "vllm"))}
    env.pop("VLLM_API_KEY", None)
    p = subprocess.Popen([sys.executable, "-c", APP, str(tiny_model(tmp_path / "tiny")), str(_free_port()), mode],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    line = p.stdout.readline()
    if not line.strip().isdigit():
        p.kill()
        raise AssertionError(f"the app did not report a server: {line!r}\n{p.stderr.read()[-3000:]}")
    return p, int(line)


def test_a_server_launched_from_the_tui_dies_with_a_sigkilled_app(tmp_path):
    p, pid = _app_process(tmp_path, "wait")
    try:
        assert psutil.pid_exists(pid)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        assert _gone(pid, 15), "the server outlived the SIGKILLed app"
    finally:
        for x in (pid, p.pid):
            try:
                os.killpg(x, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def test_keep_on_quit_releases_the_server_and_stop_ends_it(tmp_path):
    p, pid = _app_process(tmp_path, "keep")
    try:
        assert p.stdout.readline().split() == ["kept", str(pid)]
        p.wait(timeout=20)
        time.sleep(1.5)  # longer than the watchdog's poll: a watchdog still on duty would have stopped it
        assert psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        from spark_tui.core.runtime.supervisor import ServerRecord

        rec = ServerRecord.load(tmp_path / "home" / "state" / "servers" / f"{pid}.json")
        assert rec.detached and rec.watchdog_pid is None
        env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARK_TUI_HOME": str(tmp_path / "home")}
        r = subprocess.run([sys.executable, "-m", "spark_tui", "stop", str(pid)], env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and "stopped" in r.stdout, r.stderr
        assert _gone(pid, 15)
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


async def _until(pilot, cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        await pilot.pause(0.1)
        if cond():
            return True
    return False


async def test_the_tui_refuses_a_public_bind_without_an_api_key(tmp_path, monkeypatch):
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    monkeypatch.setenv("SPARK_TUI_VLLM", str(write_fake_vllm(tmp_path / "vllm")))
    monkeypatch.setenv("FAKE_VLLM_REPORT", str(tmp_path / "report.json"))
    app = SparkApp(probe=load_probe("gb10"), live_probe=False)
    async with app.run_test(size=(120, 40)) as pilot:
        app.overrides = {"model_path": str(tiny_model(tmp_path / "tiny")),
                         "set_flags": [f"--port={_free_port()}", "--host=0.0.0.0"]}
        app.target_device = "cpu-test"
        assert await _until(pilot, lambda: app.plan is not None and app.plan.device.id == "cpu-test"
                            and app.plan.host == "0.0.0.0", 60), app.plan_error
        await pilot.press("5", "l")
        assert await _until(pilot, lambda: app.server_state == "failed", 20), app.server_state
        status = plain(app.screen.query_one("#run-status", Static))
        assert "refusing to serve on 0.0.0.0 without an API key" in status and "VLLM_API_KEY" in status
        assert not app.server_alive()
    assert not (tmp_path / "report.json").exists()


@pytest.mark.parametrize("url", ["http://admin:hunter2@127.0.0.1:8000", "file:///etc/passwd", "ftp://host/x",
                                 "http://127.0.0.1:99999", "javascript:alert(1)"])
def test_url_with_credentials_or_not_http_is_refused_by_the_app(url):
    with pytest.raises(UsageError) as ei:
        SparkApp(url=url, probe=load_probe("gb10"), live_probe=False)
    assert "hunter2" not in str(ei.value)


def test_spark_tui_url_with_credentials_exits_2_without_showing_them(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARK_TUI_HOME": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "spark_tui", "--url", "http://admin:hunter2@127.0.0.1:8000"], env=env,
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and "credentials" in p.stderr and "hunter2" not in p.stdout + p.stderr


@pytest.mark.parametrize("url", ["http://admin:hunter2@127.0.0.1:8000", "file:///etc/passwd"])
async def test_dashboard_url_field_refuses_credentials_and_file_urls(url):
    app = SparkApp(probe=load_probe("gb10"), live_probe=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6", "u")
        box = app.screen.query_one("#dash-url", Input)
        box.value = url
        await pilot.press("enter")
        await pilot.pause()
        assert app.server_url is None
        shown = plain(app.screen.query_one("#dash-status", Static)) + " ".join(
            str(n.message) for n in app._notifications)
        assert "hunter2" not in shown
        assert box.value == "" or "hunter2" not in box.value


async def test_dashboard_url_field_normalises_a_good_url():
    app = SparkApp(probe=load_probe("gb10"), live_probe=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6", "u")
        app.screen.query_one("#dash-url", Input).value = "http://127.0.0.1:9/v1/"
        await pilot.press("enter")
        await pilot.pause()
        assert app.server_url == "http://127.0.0.1:9"
        app.workers.cancel_all()


@pytest.mark.parametrize("step,field_key,field_id", [("6", "u", "#dash-url"), ("5", "slash", "#run-search"),
                                                     ("7", None, "#export-path")])
async def test_escape_leaves_an_input_so_digits_switch_steps_again(step, field_key, field_id):
    app = SparkApp(probe=load_probe("gb10"), live_probe=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press(step)
        await pilot.pause()
        box = app.screen.query_one(field_id, Input)
        if field_key:
            await pilot.press(field_key)
        else:
            box.focus()
        await pilot.pause()
        assert app.focused is box
        await pilot.press("2")  # typed into the field
        assert app.current_mode != "model"
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.focused, Input)
        await pilot.press("2")
        await pilot.pause()
        assert app.current_mode == "model"
        app.workers.cancel_all()


async def test_a_plan_for_older_choices_never_replaces_the_newer_one():
    # found by the tests above on a loaded machine: the probe's plan, started first and finished last,
    # replaced the cpu-test plan, and the Run step launched the wrong one
    app = SparkApp(probe=load_probe("gb10"), live_probe=False)
    async with app.run_test(size=(120, 40)) as pilot:
        app.target_device = "rtx-5090"
        assert await _until(pilot, lambda: app.plan is not None and app.plan.device.id == "rtx-5090", 30)
        newest = app.plan
        stale_gen = app._plan_gen - 1
        from spark_tui.ui.support import build_plan

        old = build_plan(None, None, {}, app.probe)  # what the earlier replan (for the probe) computed
        app._plan_ready(old, stale_gen)
        app._plan_failed(type("E", (), {"message": "stale", "hint": ""})(), stale_gen)
        assert app.plan is newest and app.plan_error == ""
