"""Median wall time of the CLI's fast paths (target: <= 0.25 s on a 2-core machine).

    python bench/cli_speed.py [--runs 15] [--exe spark-tui]

Runs each command in a fresh process (as a user would), discards one warm-up run, and prints the median,
min and max wall time, plus which heavy modules (torch, vllm, textual, huggingface_hub) each path
imported (from `-X importtime`) — there must be none.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from spark_tui.cli import _available  # noqa: E402 - the commands this tree has (find_spec: nothing imported)

COMMANDS = [
    ["--help"],
    *([name, "--help"] for name in _available()),  # every subcommand's --help
    ["plan", "--device", "dgx-spark", "--json"],
    ["plan", "--device", "rtx-pro-6000", "--json"],
    ["export", "--device", "dgx-spark", "--format", "bash"],
]
HEAVY = ("torch", "vllm", "textual", "huggingface_hub")
TARGET_S = 0.25


def heavy_imports(base: list[str], args: list[str]) -> list[str]:
    if base[0] != sys.executable:
        base = [sys.executable, "-m", "spark_tui"]
    r = subprocess.run([base[0], "-X", "importtime", *base[1:], *args], capture_output=True, text=True)
    mods = {line.split("|")[-1].strip().split(".")[0] for line in r.stderr.splitlines() if line.startswith("import time:")}
    return sorted(m for m in HEAVY if m in mods)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--exe", default=None, help="the spark-tui executable (default: the one on PATH, else python -m spark_tui)")
    a = ap.parse_args()
    exe = a.exe or shutil.which("spark-tui")
    base = [exe] if exe else [sys.executable, "-m", "spark_tui"]
    env = dict(os.environ)
    print(f"{' '.join(base)}  ({a.runs} runs each, after one warm-up; target median <= {TARGET_S} s)")
    worst = 0.0
    for args in COMMANDS:
        probe = subprocess.run([*base, *args], capture_output=True, text=True, env=env)
        if probe.returncode != 0:
            print(f"  {' '.join(args):48s} skipped: exit {probe.returncode}: {probe.stderr.strip()[:80]}")
            continue
        times = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            subprocess.run([*base, *args], capture_output=True, env=env)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        worst = max(worst, med)
        heavy = heavy_imports(base, args)
        print(f"  {' '.join(args):48s} median {med:.3f} s  min {min(times):.3f}  max {max(times):.3f}"
              f"  heavy imports: {', '.join(heavy) or 'none'}")
    print(f"slowest median {worst:.3f} s: {'within' if worst <= TARGET_S else 'OVER'} the {TARGET_S} s target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
