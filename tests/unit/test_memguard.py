"""The memory guard (spark_tui.core.hardware.memguard) with a fake /proc directory, a real child process group, and the
`launch` options. The run against the real CPU vLLM is tests/e2e/test_memguard_cpu.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from spark_tui.core.hardware import memguard as mg
from spark_tui.core.runtime import supervisor as sv
from spark_tui.errors import UsageError

GiB = 2**30
MiB = 2**20
ROOT = Path(__file__).resolve().parents[2]

# the real /proc/meminfo layout (kB), as the kernel prints it (Documentation/filesystems/proc.rst)
MEMINFO = """MemTotal:       {total} kB
MemFree:        {free} kB
MemAvailable:   {avail} kB
Buffers:          148892 kB
Cached:          7279416 kB
SwapCached:            0 kB
SwapTotal:       {swap_total} kB
SwapFree:        {swap_free} kB
Dirty:               352 kB
"""
PSI = "some avg10={some:.2f} avg60=0.00 avg300=0.00 total=12345\nfull avg10={full:.2f} avg60=0.00 avg300=0.00 total=678\n"


class FakeProc:
    """A /proc tree the guard reads: meminfo and pressure/memory, rewritten per sample; a settable clock."""

    def __init__(self, root: Path, psi: bool = True) -> None:
        self.root = root
        (root / "pressure").mkdir(parents=True, exist_ok=True)
        self.psi = psi
        self.t = 0.0

    def set(self, avail_gib: float, *, total_gib: float = 121.69, swap_used_gib: float = 0.0, swap_total_gib: float = 8.0,
            some: float = 0.0, full: float = 0.0, dt: float = 0.5) -> None:
        kb = lambda g: int(g * GiB / 1024)  # noqa: E731
        self._write("meminfo", MEMINFO.format(
            total=kb(total_gib), free=kb(avail_gib * 0.6), avail=kb(avail_gib), swap_total=kb(swap_total_gib),
            swap_free=kb(swap_total_gib - swap_used_gib)))
        if self.psi:
            self._write("pressure/memory", PSI.format(some=some, full=full))
        self.t += dt

    def _write(self, name: str, text: str) -> None:
        # whole files at once, as the kernel serves them: the watcher thread reads while the test writes
        tmp = self.root / f".{name.replace('/', '_')}.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.root / name)

    def reader(self) -> mg.ProcReader:
        return mg.ProcReader(self.root, clock=lambda: self.t)


@pytest.fixture
def proc(tmp_path) -> FakeProc:
    return FakeProc(tmp_path / "proc")


def test_parse_the_real_formats():
    mi = mg.parse_meminfo(MEMINFO.format(total=127600748, free=1000, avail=118566368, swap_total=0, swap_free=0))
    assert mi["MemTotal"] == 127600748 * 1024 and mi["MemAvailable"] == 118566368 * 1024
    assert mg.parse_psi(PSI.format(some=12.5, full=3.25)) == (12.5, 3.25)
    assert mg.parse_psi("") == (None, None)


def test_reader_on_this_machine():
    s = mg.ProcReader().read()  # the real /proc of the test machine
    assert 0 < s.mem_available <= s.mem_total and s.swap_used >= 0


def test_reader_without_psi_and_without_meminfo(tmp_path):
    p = FakeProc(tmp_path / "p", psi=False)
    p.set(50)
    s = p.reader().read()
    assert s.psi_some_avg10 is None and s.psi_full_avg10 is None and s.swap_used == 0
    with pytest.raises(mg.GuardUnavailable):
        mg.ProcReader(tmp_path / "nowhere").read()


def _run(guard: mg.MemoryGuard, proc: FakeProc, series, **kw) -> list[mg.Verdict]:
    out = []
    for item in series:
        a, extra = (item, {}) if not isinstance(item, tuple) else item
        proc.set(a, **{**kw, **extra})
        out.append(guard.observe(proc.reader().read()))
    return out


def test_steady_state_is_ok(proc):
    v = _run(mg.MemoryGuard(), proc, [40, 40, 39.9, 40])
    assert [x.level for x in v] == ["ok"] * 4


def test_warn_below_warn_threshold_then_stop_after_two_critical(proc):
    v = _run(mg.MemoryGuard(), proc, [4.5, 3.8, 3.7, 1.9, 1.85], dt=2)
    assert [x.level for x in v] == ["ok", "warn", "warn", "warn", "stop"]
    assert v[1].reasons == ("MemAvailable 3.8 GiB < warn 4.0 GiB",)
    assert v[-1].reasons[0] == "MemAvailable 1.8 GiB < stop 2.0 GiB"


def test_a_fast_fall_is_critical_before_the_threshold(proc):
    v = _run(mg.MemoryGuard(), proc, [6, 3.5, 2.5])  # -5 GiB/s: 2 s ahead is below zero
    assert [x.level for x in v] == ["ok", "warn", "stop"]
    assert "falling 5.0 GiB/s" in v[1].reasons[0]


def test_at_once_below_half_the_stop_threshold(proc):
    assert _run(mg.MemoryGuard(), proc, [20, 0.9])[-1].level == "stop"


def test_vllm_56824_collapse_is_stopped_before_the_bottom(proc):
    """The published GB10 collapse (vllm-project/vllm #56824, 2 s samples, GiB): the guard stops at the 14:02:21
    sample (6.27 GiB, falling 2.2 GiB/s), where that reporter's own guard stopped it too."""
    series = [(28.971, {"dt": 2}), (28.962, {"dt": 2}), (27.311, {"dt": 2}), (23.787, {"dt": 2}), (10.605, {"dt": 3}),
              (6.267, {"dt": 2})]
    v = _run(mg.MemoryGuard(mg.GuardThresholds(interval_s=2.0)), proc, series)
    assert [x.level for x in v] == ["ok", "ok", "ok", "ok", "warn", "stop"]
    assert "falling" in v[-1].reasons[0] and v[-1].rate_bytes_s < -2 * GiB


def test_one_big_step_is_not_a_stop(proc):
    """vLLM allocates the KV pool in one go: MemAvailable drops tens of GiB once, then stays."""
    v = _run(mg.MemoryGuard(), proc, [90, 90, 9, 9, 9, 9])
    assert [x.level for x in v] == ["ok", "ok", "warn", "ok", "ok", "ok"]


def test_psi_full_sustained_stops_some_warns(proc):
    g = mg.MemoryGuard()
    assert _run(g, proc, [(30, {"some": 15.0})])[0].level == "warn"
    v = _run(g, proc, [(30, {"some": 60, "full": 35}), (30, {"some": 70, "full": 40})])
    assert [x.level for x in v] == ["warn", "stop"] and "full avg10 40.0%" in v[-1].reasons[0]


def test_swap_growth_counts_from_the_start(proc):
    g = mg.MemoryGuard()
    v = _run(g, proc, [(30, {"swap_used_gib": 1.0}), (30, {"swap_used_gib": 1.6}), (30, {"swap_used_gib": 3.1}),
                       (30, {"swap_used_gib": 3.2})])
    assert [x.level for x in v] == ["ok", "warn", "warn", "stop"]
    assert v[-1].swap_growth == int(2.2 * GiB / 1024) * 1024 or v[-1].swap_growth > 2 * GiB


def test_thresholds_are_checked():
    with pytest.raises(UsageError, match="must be below"):
        mg.thresholds_from_options(warn_gib=2, stop_gib=3)
    with pytest.raises(UsageError):
        mg.thresholds_from_options(psi_stop=0)
    with pytest.raises(UsageError):
        mg.thresholds_from_options(interval_s=60)
    th = mg.thresholds_from_options(warn_gib=6, stop_gib=3, psi_stop=20, interval_s=1)
    assert (th.warn_available_bytes, th.stop_available_bytes, th.stop_psi_full, th.interval_s) == (6 * GiB, 3 * GiB, 20, 1)


def test_description_for_the_plan():
    on = mg.guard_description(True, expected_available_after_start=int(8.09 * GiB))
    assert on[0].startswith("memory guard: on (unified memory")
    assert "warn when MemAvailable < 4.0 GiB" in on[1] and "stop vLLM (SIGTERM to its process group" in on[2]
    assert on[-1] == "  planned MemAvailable after start: 8.1 GiB"
    low = mg.guard_description(True, expected_available_after_start=3 * GiB)
    assert "expect warnings" in low[-1]
    assert mg.guard_description(False, unified=False) == [
        "memory guard: off (discrete GPU memory: the OS keeps its RAM; turn it on with --mem-guard)"]
    assert mg.default_enabled(True) and not mg.default_enabled(False)


def test_diagnosis_names_cause_fix_and_numbers(proc):
    v = _run(mg.MemoryGuard(), proc, [(5, {"some": 22.0, "full": 4.0}), (1.7, {"some": 40.0, "full": 12.0}), 1.6])[-1]
    text = mg.diagnosis(v, phase="loading weights", top=[("python3", 42, 3 * GiB)], min_available=int(1.6 * GiB))
    first, *rest = text.splitlines()
    assert first.startswith("memory guard stopped vLLM during loading weights: MemAvailable 1.6 GiB < stop 2.0 GiB")
    assert "lowest 1.6 GiB" in rest[0] and "largest processes: python3 (pid 42) 3.0 GiB" in rest[1]
    assert any(ln.startswith("  fix: plan a lower --gpu-memory-utilization") and "drop_caches" in ln for ln in rest)


# a real process group standing in for the server: the guard must stop all of it
SERVER = textwrap.dedent("""
    import subprocess, sys, time
    g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    print(f"child {g.pid}", flush=True)
    for i in range(1200):
        time.sleep(0.1)
""")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_TUI_HOME", str(tmp_path / "home"))


def test_watcher_stops_the_server_group_and_reports(proc, home):
    sup = sv.Supervisor([sys.executable, "-c", SERVER], host="127.0.0.1", port=1, model="m")
    rec = sup.start()
    events: list[mg.GuardEvent] = []
    try:
        assert _wait(lambda: any(ln.startswith("child ") for ln in sup.tail), 10)
        proc.set(40)
        w = mg.watch_supervisor(sup, mg.GuardThresholds(interval_s=0.05), on_event=events.append,
                                reader=proc.reader())
        time.sleep(0.3)
        assert w.tripped is None and sup.alive()
        proc.set(3.0)  # warn
        assert _wait(lambda: any(e.kind == "warn" for e in events), 5)
        proc.set(0.5)  # below half the stop threshold: at once
        assert _wait(lambda: w.tripped is not None, 5)
        assert _wait(lambda: not sv.group_alive(rec.pgid), 15), "the guard left processes of the server behind"
        assert not sup.alive()
        stop = [e for e in events if e.kind == "stop"]
        assert len(stop) == 1 and stop[0].text.startswith("memory guard stopped vLLM")
        assert "MemAvailable 0.5 GiB" in stop[0].text
    finally:
        if sup.alive():
            sup.stop(grace_s=2)


def test_watcher_ends_with_the_server_and_when_proc_is_missing(tmp_path, home):
    sup = sv.Supervisor([sys.executable, "-c", "import time; time.sleep(0.3)"], host="127.0.0.1", port=1, model="m")
    sup.start()
    events: list[mg.GuardEvent] = []
    w = mg.watch_supervisor(sup, mg.GuardThresholds(interval_s=0.05), on_event=events.append,
                            reader=mg.ProcReader(tmp_path / "missing"))
    assert _wait(lambda: w._halt.is_set(), 20)
    assert [e.kind for e in events] == ["unavailable"] and "cannot read" in events[0].text
    assert _wait(lambda: not sup.alive(), 20)


def _wait(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spark_tui", *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, **(env or {})})


def test_launch_refuses_inconsistent_guard_thresholds(tmp_path):
    r = _cli("launch", "--device", "dgx-spark", "--mem-guard-warn", "2", "--mem-guard-stop", "3", "--no-preflight",
             env={"SPARK_TUI_HOME": str(tmp_path), "SPARK_TUI_VLLM": "/bin/false"})
    assert r.returncode == 2, r.stderr
    assert "--mem-guard-stop 3 GiB must be below --mem-guard-warn 2 GiB" in r.stderr


def test_launch_help_lists_the_guard():
    r = _cli("launch", "--help")
    assert r.returncode == 0
    for opt in ("--mem-guard", "--no-mem-guard", "--mem-guard-warn", "--mem-guard-stop", "--mem-guard-psi-stop"):
        assert opt in r.stdout


def test_top_processes_reads_this_machine():
    top = mg.top_processes(2)
    assert len(top) == 2 and top[0][2] >= top[1][2] > 0
    assert any(p.pid == top[0][1] for p in psutil.process_iter())


def test_launch_guard_stops_the_server_with_exit_6(tmp_path):
    """`spark-tui launch` with the guard on (real /proc), against the fake vLLM of test_supervisor_launch_cli: a
    stop threshold above this machine's MemAvailable stops the server at once, with the diagnosis, exit 6."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import json

    from test_supervisor_launch_cli import CONFIG, FAKE_VLLM, LOG, _port

    from tests.support.runtime_ckpt import tensor, write_safetensors

    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(CONFIG))
    write_safetensors(model / "model.safetensors", {"model.embed_tokens.weight": tensor("BF16", [4096, 128])})
    fake = tmp_path / "vllm"
    fake.write_text(f"#!{sys.executable}\nLOG_PATH = {str(LOG)!r}\n" + FAKE_VLLM)
    fake.chmod(0o755)
    huge = psutil.virtual_memory().total / GiB * 4  # MemAvailable is always below this
    env = {**os.environ, "SPARK_TUI_HOME": str(tmp_path / "home"), "SPARK_TUI_VLLM": str(fake), "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "spark_tui", "launch", "--device", "cpu-test", "--model-path", str(model),
                        "--port", str(_port()), "--mem-guard-warn", f"{huge + 1:.0f}", "--mem-guard-stop", f"{huge:.0f}",
                        "--mem-guard-interval", "0.1"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 6, r.stdout + r.stderr
    assert "memory guard: on (unified memory" in r.stdout  # cpu-test plans are unified: on by default
    assert "memory guard stopped vLLM" in r.stderr and "fix: plan a lower --gpu-memory-utilization" in r.stderr
    assert "hint: the memory guard stopped vLLM before the host ran out of memory" in r.stderr
    pid = int(next(ln for ln in r.stdout.splitlines() if ln.startswith("vLLM starting: pid ")).split()[3].rstrip(","))
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not list((tmp_path / "home" / "state" / "servers").glob("*.json"))


def test_launch_no_mem_guard_turns_it_off(tmp_path):
    r = _cli("launch", "--device", "dgx-spark", "--no-mem-guard", "--mem-guard-warn", "2", "--mem-guard-stop", "3",
             "--no-preflight", env={"SPARK_TUI_HOME": str(tmp_path), "SPARK_TUI_VLLM": "/bin/false"})
    # thresholds are not even checked when the guard is off; vLLM (/bin/false) fails to start: exit 6, no guard
    assert r.returncode == 6 and "memory guard" not in r.stdout + r.stderr
