"""The launch sequence, written once: preflight -> start the supervisor -> wait until ready -> verify against the plan.

`spark-tui launch`, the TUI's Run step and `spark-tui tune` (each candidate) start a plan's server through `launch()`;
`spark-tui ablate`, whose variants are not plans, waits on each of its servers through `wait_ready()`. The callers
differ only in what they do with each step's result: print it, post it to the screen, or keep it in a result file.
`launch()` reports the steps to `on_step` as they happen (`PreflightDone`, `Started`, `GuardWatching`); the
supervisor's own events (log lines, startup phases, Ready, Exited) reach whoever subscribed to it.

Whatever fails, the server this sequence started is stopped before the error propagates. When the memory guard is
what stopped it, the error is `GuardStopped` (a VllmError, exit 6) carrying the guard's diagnosis.
"""

from __future__ import annotations

import time

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spark_tui.errors import VllmError

if TYPE_CHECKING:
    from spark_tui.core.catalog.checkpoint import CheckpointReport
    from spark_tui.core.hardware.memguard import GuardEvent, GuardThresholds, GuardWatcher
    from spark_tui.core.planning.plan import Plan
    from spark_tui.core.runtime.supervisor import Ready, ServerRecord, Supervisor, Verification

GUARD_HINT = ("the memory guard stopped vLLM before the host ran out of memory: lower the plan's memory "
              "(gpu-memory-utilization / KV cache) and relaunch")


class GuardStopped(VllmError):
    """The memory guard stopped the server (its message is the guard's diagnosis)."""


# ------------------------------------------------------------------------------------------------ steps
@dataclass(frozen=True)
class Preflight:
    """What the checks before a start found: the memory note (unified memory), the checkpoint report or why there is
    none (not in the HF cache yet: vLLM downloads it while starting)."""

    memory_note: str | None
    checkpoint: CheckpointReport | None
    checkpoint_note: str | None

    def lines(self) -> list[str]:
        out = []
        if self.memory_note:
            out.append(f"memory: {self.memory_note}")
        if self.checkpoint_note:
            out.append(f"checkpoint: {self.checkpoint_note}")
        rep = self.checkpoint
        if rep is not None:
            out.append(f"checkpoint: {rep.path} complete, {rep.quant.format}, MTP {'yes' if rep.has_mtp else 'no'}")
            out += [f"  warning: {w}" for w in rep.warnings]
        return out


LOG_SETTLE_S = 10.0  # at most this long after ready for the log reader to reach the KV-cache line


@dataclass(frozen=True)
class PreflightDone:
    preflight: Preflight


@dataclass(frozen=True)
class Started:
    record: ServerRecord


@dataclass(frozen=True)
class GuardWatching:
    """The memory guard runs next to the server with these thresholds."""

    thresholds: GuardThresholds


LaunchStep = PreflightDone | Started | GuardWatching


@dataclass(frozen=True)
class Launched:
    """A server that is up and was checked against its plan. `watcher` is the memory guard still watching it (None
    when it runs without one)."""

    record: ServerRecord
    ready: Ready
    verification: Verification
    preflight: Preflight | None
    watcher: GuardWatcher | None


def preflight(plan: Plan, sup: Supervisor) -> Preflight:
    """Refuse, before anything starts, what would make the start fail: the port taken (VllmError), too little free
    memory on unified memory (VllmError), a checkpoint vLLM cannot load (DownloadError)."""
    from spark_tui.core.runtime import supervisor as sv

    sv.check_port_free(sup.host, sup.port)
    memory_note = sv.check_memory(plan)
    report, checkpoint_note = sv.check_checkpoint(plan)
    return Preflight(memory_note, report, checkpoint_note)


def default_guard(plan: Plan) -> GuardThresholds | None:
    """The memory guard's default for a plan: on with the default thresholds on unified memory (GB10), else off."""
    from spark_tui.core.hardware import memguard

    return memguard.GuardThresholds() if memguard.default_enabled(plan.device.unified_memory) else None


def guard_stopped(watcher: GuardWatcher | None) -> GuardStopped | None:
    """The error to raise when the memory guard stopped the server, else None."""
    if watcher is not None and watcher.tripped is not None:
        return GuardStopped(watcher.tripped.text, GUARD_HINT)
    return None


def wait_ready(sup: Supervisor, timeout_s: float, *, watcher: GuardWatcher | None = None,
               diagnose: Callable[[list[str]], str | None] | None = None) -> Ready:
    """Supervisor.wait_ready, and on failure the server stopped (vLLM exited, or it was not ready in time) and the
    memory guard's diagnosis preferred when the guard is what stopped it."""
    try:
        return sup.wait_ready(timeout_s, diagnose=diagnose)
    except VllmError:
        if sup.alive():
            sup.stop()
        err = guard_stopped(watcher)
        if err is not None:
            raise err from None
        raise


# ------------------------------------------------------------------------------------------------ the sequence
def launch(plan: Plan, sup: Supervisor, *, startup_timeout_s: float, checks: bool = True,
           guard: GuardThresholds | None = None, on_guard: Callable[[GuardEvent], object] | None = None,
           on_step: Callable[[LaunchStep], object] | None = None,
           diagnose: Callable[[list[str]], str | None] | None = None) -> Launched:
    """Start `sup` (a Supervisor for `plan`, not started: supervisor_for_plan) and return once it serves the plan's
    model, checked against the plan: preflight (unless `checks` is False) -> start -> the memory guard (when `guard`
    is given) -> ready within `startup_timeout_s` -> vLLM's log compared with the plan's predictions.

    Any error (also KeyboardInterrupt) stops the server before it propagates."""
    pre = None
    if checks:
        pre = preflight(plan, sup)
        if on_step is not None:
            on_step(PreflightDone(pre))
    watcher = None
    try:
        record = sup.start()
        if on_step is not None:
            on_step(Started(record))
        if guard is not None:
            from spark_tui.core.hardware import memguard

            watcher = memguard.watch_supervisor(sup, guard, on_event=on_guard)
            if on_step is not None:
                on_step(GuardWatching(guard))
        ready = wait_ready(sup, startup_timeout_s, watcher=watcher, diagnose=diagnose)
        from spark_tui.core.runtime.supervisor import verify_against_plan

        # vLLM logs its KV-cache size before it answers /health, but the thread that reads its output can lag behind
        # on a loaded machine: give it a moment so the check against the plan sees the line
        settle = time.monotonic() + LOG_SETTLE_S
        while sup.summary().kv_cache_tokens is None and time.monotonic() < settle and sup.alive():
            time.sleep(0.05)

        return Launched(record, ready, verify_against_plan(plan, sup.summary()), pre, watcher)
    except BaseException:
        if sup.alive():
            sup.stop()
        raise


def diagnosis_summary(lines: list[str]) -> str | None:
    """The diagnosis of a server's log (spark_tui.core.runtime.diagnose), errors and warnings, cause and fix each, for
    an error message; None when it names nothing."""
    from spark_tui.core.runtime.diagnose import diagnose_text

    _, diags, _ = diagnose_text("\n".join(lines) + "\n")
    shown = [d for d in diags if d.severity in ("error", "warning")][:3]
    if not shown:
        return None
    return "\n".join(f"{d.severity}: {d.cause}\n  fix: {d.fix}" for d in shown)
