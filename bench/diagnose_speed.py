"""How fast `spark-tui diagnose` reads a large log (target: >= 200,000 lines/s, and linear in the log's length).

    python bench/diagnose_speed.py [--mb 100] [--runs 3] [--mix corpus|serving] [--keep PATH]

Builds a ~100 MB log out of the real logs in tests/data/logs (every line is one vLLM really printed), then times
the whole diagnosis as the command runs it (decode the bytes, `diagnose_text`) and prints lines/s and MB/s for the
best of `--runs` runs, plus the same for a tenth of the log: equal rates mean the cost is linear in its length.

- `--mix corpus` (default, the hard case): every corpus log end to end, repeated: startups, failures with their
  tracebacks, tqdm bars, stats and spec-decode lines. Most lines are ones the scanner must parse.
- `--mix serving` (what a 100 MB log usually is: a server that ran for days): the H200 run's startup, then the
  serving parts of the corpus (access-log, stats and spec-decode lines) repeated.

Wall time is what a user waits; CPU time (this process) is the code's cost on a machine shared with other work.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from spark_tui.core.runtime.diagnose import diagnose_text  # noqa: E402

LOGS = os.path.join(ROOT, "tests", "data", "logs")
TARGET_LINES_S = 200_000


# where a requested shutdown starts: everything after it is excused (and cheap), so the generated log keeps only
# what comes before it, as a long-running server's log would
SHUTDOWN_MARKS = (b"[shutdown] API server: shutdown triggered", b"Shutting down", b"=SIG", b"Received SIG",
                  b"KeyboardInterrupt")


def build_log(mb: float) -> bytes:
    """Every corpus log up to its shutdown (if any), end to end, repeated to `mb` MiB: startups, failures with
    their tracebacks, stats and spec-decode lines, access-log lines."""
    parts = []
    for name in sorted(os.listdir(LOGS)):
        if name.endswith(".log"):
            with open(os.path.join(LOGS, name), "rb") as f:
                data = f.read()
            cut = min((i for i in (data.find(m) for m in SHUTDOWN_MARKS) if i >= 0), default=-1)
            if cut >= 0:
                data = data[: data.rfind(b"\n", 0, cut) + 1]
            parts.append(data if data.endswith(b"\n") else data + b"\n")
    unit = b"".join(parts)
    reps = max(1, int(mb * 2**20 // len(unit)))
    return unit * reps


def build_serving_log(mb: float) -> bytes:
    """The H200 run's startup (up to its ready line), then every corpus line from a server that was serving (after
    its ready line and before a shutdown, or the whole of a serving excerpt), repeated to `mb` MiB."""
    def read(name: str) -> bytes:
        with open(os.path.join(LOGS, name), "rb") as f:
            return f.read()

    ready = b"Application startup complete."
    h200 = read("h200-0.26.0-serving-stats-shutdown.log")
    startup = h200[: h200.index(b"\n", h200.index(ready)) + 1]
    serving = []
    for name in sorted(os.listdir(LOGS)):
        if not name.endswith(".log"):
            continue
        data = read(name)
        if ready in data:
            data = data[data.index(b"\n", data.index(ready)) + 1:]
        elif b"throughput" not in data and b"metrics: " not in data:
            continue  # a startup or failure excerpt, no serving part
        cut = min((i for i in (data.find(m) for m in SHUTDOWN_MARKS) if i >= 0), default=-1)
        if cut >= 0:
            data = data[: data.rfind(b"\n", 0, cut) + 1]
        if b"throughput" in data or b"metrics: " in data or b"HTTP/1.1" in data:
            serving.append(data if data.endswith(b"\n") else data + b"\n")
    unit = b"".join(serving)
    return startup + unit * max(1, int((mb * 2**20 - len(startup)) // len(unit)))


def timed(data: bytes, runs: int) -> tuple[float, float, object]:
    """Best wall time and best CPU time (this process) of `runs` diagnoses: on a machine shared with other work the
    CPU time is the cost of the code, the wall time what a user waits."""
    best, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        result = diagnose_text(data.decode("utf-8", errors="replace"))
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best, best_cpu, result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=100.0, help="log size in MiB (default 100)")
    ap.add_argument("--runs", type=int, default=3, help="runs per size; the best is reported (default 3)")
    ap.add_argument("--mix", choices=("corpus", "serving"), default="corpus",
                    help="corpus: every corpus log (startups, failures); serving: a long-running server's log")
    ap.add_argument("--keep", help="also write the generated log to this path")
    args = ap.parse_args(argv)

    data = build_log(args.mb) if args.mix == "corpus" else build_serving_log(args.mb)
    print(f"mix: {args.mix}")
    if args.keep:
        with open(args.keep, "wb") as f:
            f.write(data)
    tenth = data[: len(data) // 10]
    tenth = tenth[: tenth.rfind(b"\n") + 1]
    rows = []
    for label, blob in (("1/10", tenth), ("full", data)):
        lines = blob.count(b"\n")
        secs, cpu, (summary, diags, _) = timed(blob, args.runs)
        rows.append((label, lines, secs, cpu))
        print(f"{label:>5}: {len(blob) / 2**20:7.1f} MiB, {lines:>10,} lines in {secs:6.2f} s wall "
              f"({cpu:6.2f} s CPU) = {lines / secs:>10,.0f} lines/s wall, {lines / cpu:>10,.0f} lines/s CPU, "
              f"{len(blob) / 2**20 / secs:6.1f} MiB/s; found: {', '.join(sorted({d.kind for d in diags})) or 'nothing'}")
    (_, l1, s1, c1), (_, l2, s2, c2) = rows
    rate, cpu_rate = l2 / s2, l2 / c2
    print(f"cost per line, full vs 1/10: {(c2 / l2) / (c1 / l1):.2f}x CPU (1.00 = linear)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    # the verdict uses CPU time: wall time on a shared machine also measures the other work
    print(f"{'OK' if cpu_rate >= TARGET_LINES_S else 'BELOW TARGET'}: {cpu_rate:,.0f} lines/s CPU, {rate:,.0f} lines/s "
          f"wall (target {TARGET_LINES_S:,}); {os.cpu_count()} CPU(s), load average {load:.1f}")
    return 0 if cpu_rate >= TARGET_LINES_S else 1


if __name__ == "__main__":
    sys.exit(main())
