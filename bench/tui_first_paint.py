"""First paint of the TUI: wall time from `python` process start to the first screen drawn.

Each run starts a fresh interpreter (imports included) that opens the app headless with a recorded probe
(tests/data/probes/gb10, so the Device screen has a real card and the planner runs in its worker) and
reports when the Device screen has been composed and refreshed (App `Ready` event, then one more
refresh). The parent times from just before it spawns the process to the marker line. Prints each run and
the median. Target: under 1 s on the 2-core dev machine.

    python bench/tui_first_paint.py [--runs 7] [--probe gb10|live]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys
from spark_tui.core.hardware.probe import ProbeResult
from spark_tui.ui.app import SparkApp

probe = None if sys.argv[1] == "live" else ProbeResult.load(sys.argv[1])

class Timed(SparkApp):
    def on_ready(self) -> None:
        self.call_after_refresh(self._first_paint)

    def _first_paint(self) -> None:
        import resource

        assert type(self.screen).__name__ == "DeviceScreen"
        r = resource.getrusage(resource.RUSAGE_SELF)
        print(f"PAINTED {r.ru_utime + r.ru_stime:.3f}", flush=True)
        self.exit()

Timed(probe=probe, live_probe=probe is None).run(headless=True, size=(80, 24))
"""


def one_run(probe_arg: str) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", CHILD, probe_arg], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, cwd=ROOT)
    assert p.stdout is not None
    for line in p.stdout:
        if line.startswith("PAINTED"):
            dt = time.perf_counter() - t0
            cpu = float(line.split()[1])
            break
    else:
        raise SystemExit(f"the app never painted:\n{p.stderr.read() if p.stderr else ''}")
    p.wait(timeout=30)
    return dt, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--probe", default="gb10", help="a recorded probe id under tests/data/probes, or 'live'")
    a = ap.parse_args()
    arg = "live" if a.probe == "live" else str(ROOT / "tests" / "data" / "probes" / a.probe / "probe.json")
    one_run(arg)  # warm the OS page cache and .pyc files; not counted
    runs = [one_run(arg) for _ in range(a.runs)]
    for i, (t, cpu) in enumerate(runs, 1):
        print(f"run {i}: wall {t * 1000:.0f} ms, CPU {cpu * 1000:.0f} ms")
    times = [t for t, _ in runs]
    med = statistics.median(times)
    load = os.getloadavg()[0]
    print(f"first paint (process start -> Device screen drawn, probe {a.probe}, {os.cpu_count()} CPUs, load "
          f"{load:.1f}): median wall {med * 1000:.0f} ms over {a.runs} runs (min {min(times) * 1000:.0f}, max "
          f"{max(times) * 1000:.0f}); median CPU of the app process {statistics.median(c for _, c in runs) * 1000:.0f} ms")
    return 0 if med < 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
