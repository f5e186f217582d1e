"""Memory guard for unified-memory hosts (DGX Spark, GB10): watch MemAvailable, swap and PSI while vLLM starts
and serves; warn at one threshold and stop vLLM cleanly, with a diagnosis, before the host stalls.

On GB10 the GPU allocates from the same RAM as the OS. When a start runs over, MemAvailable can fall by several
GiB per second and the host stops answering before the kernel's OOM killer acts (vllm-project/vllm #56824:
28.9 -> 23.8 -> 10.6 -> 6.3 GiB in 2-3 s steps; NVIDIA/dgx-spark-playbooks #97, eugr/spark-vllm-docker #321:
hard resets). The guard samples every `interval_s`:

- MemAvailable (/proc/meminfo), and where it will be `horizon_s` from now at the current rate of fall;
- swap used, against what it was when the guard started (growth = the host is paging out);
- pressure stall information (/proc/pressure/memory, Documentation/accounting/psi.rst): "some" = share of time
  at least one task waited for memory, "full" = all non-idle tasks did, over the last 10 s.

A sample is critical when MemAvailable is below the stop threshold or heading there within the horizon, when
PSI full avg10 reaches its stop level, or when swap grew by the stop amount. `sustain` critical samples in a row
stop vLLM (a single drop, such as the KV pool being allocated in one go, does not); MemAvailable below half the
stop threshold stops it at once. Anything above the warn thresholds is a warning, reported once per change.

Pure parts (`ProcReader` over any root directory, `MemoryGuard.observe`, the texts) are tested with a fake /proc;
`GuardWatcher` is the thread `spark-tui launch` and the TUI's Run screen run next to the supervisor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spark_tui.core.runtime.supervisor import Supervisor

GiB = 2**30
MiB = 2**20

STOP_GRACE_S = 5.0  # SIGTERM to the process group, SIGKILL after this: memory is running out, do not wait 15 s

SOURCES = (
    "vllm-project/vllm #56824 (GB10 start: MemAvailable 28.9 -> 23.8 -> 10.6 -> 6.3 GiB in 2-3 s steps, host collapse)",
    "NousResearch/hermes-agent #90713 (GB10 serving at MemAvailable ~4.9 GiB with PSI full avg300 0.00: low but not "
    "stalled; a MemAvailable-only alarm fires there, PSI tells them apart)",
    "Linux Documentation/accounting/psi.rst (some/full avg10)",
    "oomd.conf(5): systemd-oomd acts at memory pressure 60% for 30 s by default, too slow for a GB10 collapse",
)


class GuardUnavailable(Exception):
    """/proc/meminfo cannot be read: the guard cannot run here."""


@dataclass(frozen=True)
class MemSample:
    t: float  # monotonic seconds
    mem_total: int
    mem_available: int
    mem_free: int | None = None
    swap_total: int = 0
    swap_used: int = 0
    psi_some_avg10: float | None = None  # None: no /proc/pressure/memory (kernel without PSI)
    psi_full_avg10: float | None = None


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as {field: bytes} ("MemAvailable:  118566368 kB" -> 121411960832)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        try:
            v = int(parts[0])
        except ValueError:
            continue
        out[name.strip()] = v * 1024 if len(parts) > 1 and parts[1] == "kB" else v
    return out


def parse_psi(text: str) -> tuple[float | None, float | None]:
    """(some avg10, full avg10) from /proc/pressure/memory."""
    some = full = None
    for line in text.splitlines():
        kind, *fields = line.split()
        vals = dict(f.split("=", 1) for f in fields if "=" in f)
        try:
            avg10 = float(vals["avg10"])
        except (KeyError, ValueError):
            continue
        if kind == "some":
            some = avg10
        elif kind == "full":
            full = avg10
    return some, full


class ProcReader:
    """Reads a MemSample from a /proc tree (`root`), so tests can point it at a directory of their own."""

    def __init__(self, root: str | Path = "/proc", clock: Callable[[], float] = time.monotonic) -> None:
        self.root = Path(root)
        self.clock = clock

    def read(self) -> MemSample:
        try:
            mi = parse_meminfo((self.root / "meminfo").read_text())
        except OSError as e:
            raise GuardUnavailable(f"cannot read {self.root / 'meminfo'}: {e.strerror or e}") from None
        if "MemAvailable" not in mi or "MemTotal" not in mi:
            raise GuardUnavailable(f"{self.root / 'meminfo'} has no MemTotal/MemAvailable")
        try:
            some, full = parse_psi((self.root / "pressure" / "memory").read_text())
        except OSError:  # no PSI in this kernel (or disabled with psi=0)
            some = full = None
        swap_total = mi.get("SwapTotal", 0)
        return MemSample(t=self.clock(), mem_total=mi["MemTotal"], mem_available=mi["MemAvailable"],
                         mem_free=mi.get("MemFree"), swap_total=swap_total,
                         swap_used=max(swap_total - mi.get("SwapFree", swap_total), 0),
                         psi_some_avg10=some, psi_full_avg10=full)


@dataclass(frozen=True)
class GuardThresholds:
    warn_available_bytes: int = 4 * GiB
    stop_available_bytes: int = 2 * GiB
    warn_psi_some: float = 10.0  # % of the last 10 s
    stop_psi_full: float = 30.0
    warn_swap_growth_bytes: int = 512 * MiB
    stop_swap_growth_bytes: int = 2 * GiB
    horizon_s: float = 2.0  # project MemAvailable this far ahead at the current rate of fall
    sustain: int = 2  # critical samples in a row before stopping
    interval_s: float = 0.5

    def check(self) -> None:
        from spark_tui.errors import UsageError

        if self.stop_available_bytes <= 0 or self.warn_available_bytes <= 0:
            raise UsageError("memory guard thresholds must be positive", "e.g. --mem-guard-warn 4 --mem-guard-stop 2")
        if self.stop_available_bytes >= self.warn_available_bytes:
            raise UsageError(
                f"--mem-guard-stop {self.stop_available_bytes / GiB:g} GiB must be below --mem-guard-warn "
                f"{self.warn_available_bytes / GiB:g} GiB", "the guard warns first, then stops: e.g. warn 4, stop 2")
        if not 0 < self.stop_psi_full <= 100 or not 0 < self.warn_psi_some <= 100:
            raise UsageError("PSI thresholds are percentages (0-100]", "e.g. --mem-guard-psi-stop 30")
        if not 0.05 <= self.interval_s <= 10:
            raise UsageError(f"--mem-guard-interval {self.interval_s:g} s is out of range", "use 0.05 to 10 seconds")
        if self.sustain < 1:
            raise UsageError("the guard needs at least one critical sample to stop", "sustain >= 1")


@dataclass(frozen=True)
class Verdict:
    level: str  # "ok" | "warn" | "stop"
    reasons: tuple[str, ...]
    sample: MemSample
    rate_bytes_s: float | None = None  # MemAvailable change per second (negative: falling)
    projected_available: int | None = None
    swap_growth: int = 0


def _g(b: float) -> str:
    return f"{b / GiB:.1f} GiB"


class MemoryGuard:
    """The decision, sample by sample. Pure: no clock, no I/O."""

    def __init__(self, thresholds: GuardThresholds | None = None) -> None:
        self.th = thresholds or GuardThresholds()
        self.baseline: MemSample | None = None
        self.prev: MemSample | None = None
        self.critical_run = 0
        self.min_available: int | None = None
        self.samples = 0

    def observe(self, s: MemSample) -> Verdict:
        th = self.th
        if self.baseline is None:
            self.baseline = s
        rate = proj = None
        if self.prev is not None and s.t > self.prev.t:
            rate = (s.mem_available - self.prev.mem_available) / (s.t - self.prev.t)
            if rate < 0:
                proj = int(s.mem_available + rate * th.horizon_s)
        self.prev = s
        self.samples += 1
        self.min_available = s.mem_available if self.min_available is None else min(self.min_available, s.mem_available)
        growth = max(s.swap_used - self.baseline.swap_used, 0)

        critical: list[str] = []
        if s.mem_available < th.stop_available_bytes:
            critical.append(f"MemAvailable {_g(s.mem_available)} < stop {_g(th.stop_available_bytes)}")
        elif proj is not None and rate is not None and proj < th.stop_available_bytes:
            critical.append(f"MemAvailable {_g(s.mem_available)} falling {_g(-rate)}/s: {_g(max(proj, 0))} in "
                            f"{th.horizon_s:g} s < stop {_g(th.stop_available_bytes)}")
        if s.psi_full_avg10 is not None and s.psi_full_avg10 >= th.stop_psi_full:
            critical.append(f"memory pressure full avg10 {s.psi_full_avg10:.1f}% >= {th.stop_psi_full:g}% "
                            "(every task stalled on memory)")
        if growth >= th.stop_swap_growth_bytes:
            critical.append(f"swap grew {_g(growth)} since start >= {_g(th.stop_swap_growth_bytes)}")
        self.critical_run = self.critical_run + 1 if critical else 0
        if critical and (self.critical_run >= th.sustain or s.mem_available < th.stop_available_bytes / 2):
            return Verdict("stop", tuple(critical), s, rate, proj, growth)

        warn: list[str] = list(critical)
        if not critical:
            if s.mem_available < th.warn_available_bytes:
                warn.append(f"MemAvailable {_g(s.mem_available)} < warn {_g(th.warn_available_bytes)}")
            if s.psi_some_avg10 is not None and s.psi_some_avg10 >= th.warn_psi_some:
                warn.append(f"memory pressure some avg10 {s.psi_some_avg10:.1f}% >= {th.warn_psi_some:g}%")
            if growth >= th.warn_swap_growth_bytes:
                warn.append(f"swap grew {_g(growth)} since start >= {_g(th.warn_swap_growth_bytes)}")
        return Verdict("warn" if warn else "ok", tuple(warn), s, rate, proj, growth)


# ---------------------------------------------------------------------------------------------- texts
def guard_description(enabled: bool, thresholds: GuardThresholds | None = None, *, unified: bool = True,
                      expected_available_after_start: int | None = None) -> list[str]:
    """What the plan shows about the guard (the lead calls this from the planner / plan render)."""
    th = thresholds or GuardThresholds()
    if not enabled:
        why = "unified memory: it is OFF by choice (--no-mem-guard)" if unified else \
            "off (discrete GPU memory: the OS keeps its RAM; turn it on with --mem-guard)"
        return [f"memory guard: {why}"]
    lines = [
        f"memory guard: on{' (unified memory: the GPU shares the host RAM)' if unified else ''}; during start and "
        f"while serving, every {th.interval_s:g} s:",
        f"  warn when MemAvailable < {_g(th.warn_available_bytes)}, memory pressure (PSI some avg10) >= "
        f"{th.warn_psi_some:g}%, or swap grows {_g(th.warn_swap_growth_bytes)}",
        f"  stop vLLM (SIGTERM to its process group, SIGKILL after {STOP_GRACE_S:g} s) after {th.sustain} samples in a "
        f"row with MemAvailable < {_g(th.stop_available_bytes)} or heading there within {th.horizon_s:g} s, PSI full "
        f"avg10 >= {th.stop_psi_full:g}%, or swap grown {_g(th.stop_swap_growth_bytes)}; at once below "
        f"{_g(th.stop_available_bytes / 2)}",
        "  change with spark-tui launch --mem-guard-warn GIB --mem-guard-stop GIB --mem-guard-psi-stop PCT, "
        "or --no-mem-guard",
    ]
    if expected_available_after_start is not None:
        note = ""
        if expected_available_after_start < th.warn_available_bytes:
            note = ": below the warn threshold, expect warnings (plan a lower utilization)"
        lines.append(f"  planned MemAvailable after start: {_g(expected_available_after_start)}{note}")
    return lines


def default_enabled(unified_memory: bool) -> bool:
    """On by default for unified-memory devices (GB10); off for discrete GPUs."""
    return bool(unified_memory)


def top_processes(n: int = 3) -> list[tuple[str, int, int]]:
    """The n processes holding the most resident memory: (name, pid, rss bytes). Empty without psutil."""
    try:
        import psutil
    except ImportError:
        return []
    procs = []
    for p in psutil.process_iter(["pid", "name", "memory_info"]):
        mi = p.info.get("memory_info")
        if mi is not None:
            procs.append((p.info.get("name") or "?", p.info["pid"], int(mi.rss)))
    return sorted(procs, key=lambda x: -x[2])[:n]


def diagnosis(v: Verdict, thresholds: GuardThresholds | None = None, *, phase: str | None = None,
              top: list[tuple[str, int, int]] | None = None, min_available: int | None = None) -> str:
    """Why the guard stopped vLLM, and what to do, in a few lines."""
    s = v.sample
    psi = ("n/a (no /proc/pressure/memory)" if s.psi_some_avg10 is None
           else f"some {s.psi_some_avg10:.1f}%, full {s.psi_full_avg10 or 0:.1f}% (avg10)")
    lines = [f"memory guard stopped vLLM{f' during {phase}' if phase else ''}: " + "; ".join(v.reasons),
             f"  MemAvailable {_g(s.mem_available)} of {_g(s.mem_total)}"
             + (f", lowest {_g(min_available)}" if min_available is not None else "")
             + (f", changing {v.rate_bytes_s / GiB:+.1f} GiB/s" if v.rate_bytes_s is not None else "")
             + f"; swap used {_g(s.swap_used)} (+{_g(v.swap_growth)} since start); pressure {psi}"]
    if top:
        lines.append("  largest processes: " + ", ".join(f"{name} (pid {pid}) {_g(rss)}" for name, pid, rss in top))
    lines.append("  cause: vLLM's budget (--gpu-memory-utilization x total, or weights + --kv-cache-memory-bytes + "
                 "overhead) plus everything else running needed more memory than the host had; on unified memory "
                 "the GPU and the OS share it")
    lines.append("  fix: plan a lower --gpu-memory-utilization / --kv-cache-memory-bytes (or fewer --max-num-seqs), "
                 "close other programs, drop the page cache (`sync; echo 3 | sudo tee /proc/sys/vm/drop_caches`), "
                 "then re-plan from a fresh probe")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- the thread
@dataclass(frozen=True)
class GuardEvent:
    """What the watcher reports: a warning (once per change of reasons), a stop (with the diagnosis), or that it
    could not run (`unavailable`)."""

    kind: str  # "warn" | "stop" | "clear" | "unavailable"
    verdict: Verdict | None
    text: str


class GuardWatcher:
    """Samples `reader` every interval in a daemon thread; on a stop verdict calls `stop_action` once.

    `alive()` says whether the watched server still runs (the thread ends when it does not); `phase()` names the
    startup phase for the diagnosis. Events go to `on_event` (printing, or posting to the TUI)."""

    def __init__(self, thresholds: GuardThresholds, stop_action: Callable[[], Any], *,
                 on_event: Callable[[GuardEvent], object] | None = None, reader: ProcReader | None = None,
                 alive: Callable[[], bool] | None = None, phase: Callable[[], str | None] | None = None) -> None:
        thresholds.check()
        self.th = thresholds
        self.guard = MemoryGuard(thresholds)
        self.reader = reader or ProcReader()
        self.stop_action = stop_action
        self.on_event = on_event or (lambda ev: None)
        self.alive = alive or (lambda: True)
        self.phase = phase or (lambda: None)
        self.tripped: GuardEvent | None = None
        self.last: Verdict | None = None
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned: tuple[str, ...] = ()

    def start(self) -> "GuardWatcher":
        self._thread = threading.Thread(target=self._run, daemon=True, name="spark-tui-memguard")
        self._thread.start()
        return self

    def close(self, timeout: float = 2.0) -> None:
        self._halt.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def step(self) -> Verdict | None:
        """One sample and decision (the thread's body; tests call it directly)."""
        try:
            s = self.reader.read()
        except GuardUnavailable as e:
            self._emit(GuardEvent("unavailable", None, f"memory guard off: {e}"))
            self._halt.set()
            return None
        v = self.guard.observe(s)
        self.last = v
        if v.level == "stop" and self.tripped is None:
            text = diagnosis(v, self.th, phase=self._phase(), top=top_processes(), min_available=self.guard.min_available)
            self.tripped = GuardEvent("stop", v, text)
            self._emit(self.tripped)
            try:
                self.stop_action()
            finally:
                self._halt.set()
        elif v.level == "warn" and v.reasons != self._warned:
            self._warned = v.reasons
            self._emit(GuardEvent("warn", v, "memory guard warning: " + "; ".join(v.reasons)))
        elif v.level == "ok" and self._warned:
            self._warned = ()
            self._emit(GuardEvent("clear", v, f"memory guard: back to normal (MemAvailable {_g(s.mem_available)})"))
        return v

    def _phase(self) -> str | None:
        try:
            return self.phase()
        except Exception:  # noqa: BLE001 - a diagnosis detail must never hide the stop
            return None

    def _emit(self, ev: GuardEvent) -> None:
        try:
            self.on_event(ev)
        except Exception:  # noqa: BLE001 - a broken subscriber must not stop the guard
            pass

    def _run(self) -> None:
        while not self._halt.is_set():
            if not self.alive():
                return
            self.step()
            self._halt.wait(self.th.interval_s)


def watch_supervisor(sup: Supervisor, thresholds: GuardThresholds | None = None, *,
                     on_event: Callable[[GuardEvent], object] | None = None,
                     reader: ProcReader | None = None) -> GuardWatcher:
    """Start a guard next to a started spark_tui.core.runtime.supervisor.Supervisor: it stops the server's process group
    (grace STOP_GRACE_S) when memory runs out, names the startup phase in the diagnosis, and ends with the server."""

    def phase() -> str | None:
        for ph in sup.tracker.phases():
            if ph.status == "active":
                return ph.title.lower()
        return "serving" if any(ph.key == "ready" and ph.status == "done" for ph in sup.tracker.phases()) else None

    return GuardWatcher(thresholds or GuardThresholds(), lambda: sup.stop(grace_s=STOP_GRACE_S), on_event=on_event,
                        reader=reader, alive=sup.alive, phase=phase).start()


def thresholds_from_options(*, warn_gib: float | None = None, stop_gib: float | None = None,
                            psi_stop: float | None = None, interval_s: float | None = None) -> GuardThresholds:
    """GuardThresholds from CLI values (None = default), checked (UsageError, exit 2, when inconsistent)."""
    th = GuardThresholds()
    kw: dict[str, Any] = {}
    if warn_gib is not None:
        kw["warn_available_bytes"] = int(warn_gib * GiB)
    if stop_gib is not None:
        kw["stop_available_bytes"] = int(stop_gib * GiB)
    if psi_stop is not None:
        kw["stop_psi_full"] = float(psi_stop)
    if interval_s is not None:
        kw["interval_s"] = float(interval_s)
    th = replace(th, **kw)
    th.check()
    return th
