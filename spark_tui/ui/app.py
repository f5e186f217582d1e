"""The spark-tui Textual app: a thin layer over spark_tui.core, one screen per deployment step.

State lives here as reactive attributes (probe, target device, checkpoint, overrides, plan, server URL);
screens bind to them with `self.watch(self.app, ...)` (attributes down) and post messages up. Everything
slow runs in workers; one Worker.StateChanged handler turns worker failures into notifications. The vLLM
process is owned by the core Supervisor; the app keeps the handle so quitting can ask what to do with it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.reactive import var
from textual.worker import Worker, WorkerState

from spark_tui.core.hardware.probe import ProbeResult
from spark_tui.ui.messages import CheckpointChosen, OverridesChanged, ProbeUpdated, TargetDeviceChosen
from spark_tui.ui.screens.base import STEPS

if TYPE_CHECKING:
    from spark_tui.core.planning.plan import Plan
    from spark_tui.core.runtime.supervisor import ServerRecord, Supervisor
    from spark_tui.errors import SparkError

PROBE_REFRESH_S = 2.0


def _screen_factory(mode: str):
    """Import a step's screen module on first visit (keeps the first paint fast)."""

    def make():
        import importlib

        mod = importlib.import_module(f"spark_tui.ui.screens.{mode}")
        return getattr(mod, f"{mode.capitalize()}Screen")()

    return make


class SparkApp(App):
    CSS_PATH = str(Path(__file__).with_name("app.tcss"))  # absolute: subclasses elsewhere find it too
    TITLE = "spark-tui"
    DEFAULT_MODE = "device"
    MODES = {mode: _screen_factory(mode) for mode, _, _ in STEPS}
    BINDINGS = [
        *[Binding(key, f"switch_mode('{mode}')", label, tooltip=f"go to the {label} screen")
          for mode, key, label in STEPS],
        Binding("q", "request_quit", "Quit", tooltip="quit (asks first while a server runs)"),
        Binding("ctrl+c", "request_quit", "Quit", show=False, priority=True),
    ]

    # attributes down: screens watch these
    probe: var[ProbeResult | None] = var(None, always_update=True)
    target_device: var[str | None] = var(None)  # device profile id the plan is for
    checkpoint_id: var[str | None] = var(None)
    overrides: var[dict] = var(dict, always_update=True)
    plan: var[Plan | None] = var(None, always_update=True)
    plan_error: var[str] = var("")
    server_url: var[str | None] = var(None)  # what the Dashboard scrapes
    server_state: var[str] = var("none")  # none | starting | ready | failed | stopped

    def __init__(self, url: str | None = None, probe: ProbeResult | None = None, *,
                 live_probe: bool | None = None, probe_refresh_s: float = PROBE_REFRESH_S) -> None:
        super().__init__()
        self._initial_probe = probe
        self.live_probe = probe is None if live_probe is None else live_probe
        self.probe_refresh_s = probe_refresh_s
        if url:  # as `monitor --url`: http(s) only, credentials refused (and never echoed): UsageError
            from spark_tui.core.observe.metrics import server_url

            url = server_url(url)
        self.set_reactive(SparkApp.server_url, url or None)
        self.supervisor: Supervisor | None = None  # while one is ours
        self.kept_server: ServerRecord | None = None  # the server the user chose to keep running on quit
        self.first_paint_at: float | None = None
        self._plan_gen = 0  # bumped by each replan: only the newest plan is shown (and launched)

    # ------------------------------------------------------------------ lifecycle
    def on_mount(self) -> None:
        self.call_after_refresh(self._painted)
        if self._initial_probe is not None:
            self.probe = self._initial_probe
            self.call_after_refresh(self.replan)  # plan after the first paint
        if self.live_probe:
            self.probe_loop()

    def _painted(self) -> None:
        self.first_paint_at = time.perf_counter()

    @work(thread=True, exclusive=True, group="probe", exit_on_error=False)
    def probe_loop(self) -> None:
        """Take a probe now and every `probe_refresh_s` (live utilisation, power, temperature)."""
        from textual.worker import get_current_worker

        from spark_tui.core.hardware.probe import take_probe

        w = get_current_worker()
        while not w.is_cancelled:
            self.post_message(ProbeUpdated(take_probe()))
            end = time.monotonic() + self.probe_refresh_s
            while time.monotonic() < end and not w.is_cancelled:
                time.sleep(0.1)

    def on_probe_updated(self, msg: ProbeUpdated) -> None:
        first = self.probe is None
        self.probe = msg.probe
        if first:  # plan for this machine once; live refreshes do not re-plan under the user's feet
            self.replan()

    # ------------------------------------------------------------------ choices -> plan
    def on_target_device_chosen(self, msg: TargetDeviceChosen) -> None:
        self.target_device = msg.device_id

    def on_checkpoint_chosen(self, msg: CheckpointChosen) -> None:
        self.checkpoint_id = msg.checkpoint_id

    def on_overrides_changed(self, msg: OverridesChanged) -> None:
        self.overrides = dict(msg.overrides)

    def watch_target_device(self) -> None:
        self.replan()

    def watch_checkpoint_id(self) -> None:
        self.replan()

    def watch_overrides(self) -> None:
        self.replan()

    def replan(self) -> None:
        """Plan for the chosen device profile, else for the GPU probed here (as `spark-tui plan` does)."""
        if self.target_device is None and (self.probe is None or not self.probe.ok):
            return
        self._plan_gen += 1
        self.run_planner(self.target_device, self.checkpoint_id, dict(self.overrides), self._plan_gen)

    @work(thread=True, exclusive=True, group="plan", exit_on_error=False)
    def run_planner(self, device: str | None, checkpoint: str | None, overrides: dict, gen: int = 0) -> None:
        from spark_tui.errors import SparkError
        from spark_tui.ui.support import build_plan

        try:
            plan = build_plan(device, checkpoint, overrides, self.probe)
        except SparkError as e:
            self.call_from_thread(self._plan_failed, e, gen)
            return
        self.call_from_thread(self._plan_ready, plan, gen)

    def _current(self, gen: int) -> bool:
        """A thread worker cannot be stopped once it runs: a plan for older choices that finishes after the
        newer one must not replace it (the Run step would launch the wrong plan)."""
        return gen == self._plan_gen

    def _plan_ready(self, plan: Plan, gen: int = 0) -> None:
        if not self._current(gen):
            return
        self.plan_error = ""
        self.plan = plan

    def _plan_failed(self, e: SparkError, gen: int = 0) -> None:
        if not self._current(gen):
            return
        self.plan_error = f"{e.message}" + (f"\nfix: {e.hint}" if e.hint else "")
        self.plan = None
        self.notify(self.plan_error, title="No plan", severity="error", timeout=8, markup=False)

    # ------------------------------------------------------------------ failures of any worker
    @on(Worker.StateChanged)
    def worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        err = event.worker.error
        from spark_tui.errors import SparkError

        if isinstance(err, SparkError):
            text = err.message + (f"\nfix: {err.hint}" if err.hint else "")
        else:
            text = f"{type(err).__name__}: {err}"
        self.notify(text, title=f"{event.worker.name or event.worker.group} failed", severity="error", timeout=10,
                    markup=False)

    # ------------------------------------------------------------------ quitting
    def server_alive(self) -> bool:
        sup = self.supervisor
        return sup is not None and sup.alive()

    def action_request_quit(self) -> None:
        sup = self.supervisor
        if sup is None or not sup.alive():
            self.exit()
            return
        from spark_tui.ui.modals import QuitModal

        def decided(choice: str | None) -> None:
            if choice == "stop":
                self.stop_server_then_exit(sup)
            elif choice == "keep":
                self.kept_server = sup.release()  # the watchdog stands down; stop it later
                self.exit()

        self.push_screen(QuitModal(sup.record), decided)

    @work(thread=True, exclusive=True, group="server", exit_on_error=False)
    def stop_server_then_exit(self, sup: Supervisor) -> None:
        self.call_from_thread(self.notify, "stopping vLLM…", timeout=30)
        sup.stop()
        self.call_from_thread(self.exit)
