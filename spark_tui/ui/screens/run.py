"""Run: launch / stop / restart the planned server; startup phases as a checklist filled in from the log;
the log itself (scrollable, searchable); a failure shown with its diagnosis and a one-key fix.

The process belongs to spark_tui.core.runtime.supervisor.Supervisor, started keepable: its watchdog stops it if the
app dies in any way (SIGKILL included), and a server the user keeps on quit is released to outlive the app.
This screen subscribes to its events.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Log, Static

from spark_tui.ui.messages import (GuardAlert, LaunchFailed, LaunchStepDone, LaunchVerified, ServerEvent,
                                   ServerStopped)
from spark_tui.ui.screens.base import StepScreen

if TYPE_CHECKING:
    from spark_tui.core.planning.plan import Plan
    from spark_tui.core.runtime.diagnose import Diagnosis

LOG_KEEP = 5000
STARTUP_TIMEOUT_S = 1800.0
MARK = {"done": "[green]✓[/]", "active": "[yellow]▶[/]", "pending": "[dim]·[/]", "failed": "[red]✗[/]"}


def phases_markup(phases) -> str:
    """The checklist for a sequence of vllm_log.PhaseState (pure)."""
    out = []
    for ph in phases:
        prog = f" {ph.progress * 100:.0f}%" if ph.progress is not None and ph.status == "active" else ""
        detail = f" [dim]({escape(ph.detail)})[/]" if ph.detail else ""
        out.append(f"{MARK.get(ph.status, ph.status)} {escape(ph.title)}{prog}{detail}")
    return "\n".join(out)


def fix_to_set(arg: dict) -> str:
    """A diagnosis fix_arg ({"flag", "value"}: None removes, "" a bare switch) as a planner --set item (pure)."""
    value = arg.get("value")
    if value is None:
        return f"{arg['flag']}="
    return arg["flag"] if value == "" else f"{arg['flag']}={value}"


class RunScreen(StepScreen):
    MODE = "run"
    BINDINGS = [
        ("l", "launch", "Launch"),
        ("s", "stop", "Stop"),
        ("r", "restart", "Restart"),
        ("f", "apply_fix", "Apply fix"),
        ("slash", "search", "Search log"),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="run-top"):
            with Vertical(id="run-left"):
                yield Static("", id="run-status")
                yield Static("", id="run-phases")
            yield Static("", id="run-diagnosis")
        yield Input(placeholder="search the log (Enter; empty shows all)", id="run-search", compact=True)
        yield Log(id="run-log", max_lines=LOG_KEEP)

    def on_mount(self) -> None:
        self.lines: deque[str] = deque(maxlen=LOG_KEEP)
        self.search_text = ""
        self.diagnoses: list[Diagnosis] = []
        self.fix: Diagnosis | None = None
        self.watch(self.app, "plan", self._plan_changed, init=True)
        self.query_one("#run-search", Input).display = False
        self._diag("")

    # ------------------------------------------------------------------ status
    def _plan_changed(self, plan: Plan | None) -> None:
        if self.app.server_alive():
            return
        if plan is not None and getattr(self, "_relaunch_after_plan", False):
            self._relaunch_after_plan = False
            self.action_launch()
            return
        st = self.query_one("#run-status", Static)
        if plan is None:
            st.update("No plan yet: choose a device (1) and a checkpoint (2); the plan (3) is what runs here.")
        else:
            st.update(f"Ready to launch [b]{escape(plan.model)}[/b] on {escape(plan.device.name)} at "
                      f"{escape(plan.host)}:{plan.port} (l).")

    # ------------------------------------------------------------------ actions
    def action_launch(self) -> None:
        plan = self.app.plan
        if plan is None:
            self.notify("There is no plan to launch yet.", title="Launch", severity="warning")
            return
        if self.app.server_alive():
            self.notify("A server is already running; r restarts it.", title="Launch", severity="warning")
            return
        self.lines.clear()
        self.query_one("#run-log", Log).clear()
        self.diagnoses, self.fix = [], None
        self._diag("")
        self.query_one("#run-status", Static).update(f"starting vLLM for {escape(plan.model)} …")
        self.app.server_state = "starting"
        self.launch(plan)

    def action_stop(self) -> None:
        if not self.app.server_alive():
            self.notify("No server is running.", title="Stop")
            return
        self.query_one("#run-status", Static).update("stopping …")
        self.stop_server()

    def action_restart(self) -> None:
        if self.app.server_alive():
            self.stop_server(then_launch=True)
        else:
            self.action_launch()

    def action_apply_fix(self) -> None:
        if self.fix is None:
            self.notify("No fix to apply.", title="Fix")
            return
        sets = [fix_to_set(a) for a in self.fix.fix_args]
        ov = dict(self.app.overrides)
        fixed = {x.partition("=")[0] for x in sets}
        ov["set_flags"] = [x for x in ov.get("set_flags", []) if x.partition("=")[0] not in fixed] + sets
        self.notify("applied: " + " ".join(sets) + "; relaunching with the new plan", title="Fix", markup=False)
        self.fix = None
        self._relaunch_after_plan = True
        self.app.overrides = ov

    def on_screen_resume(self) -> None:
        self._plan_changed(self.app.plan)

    def action_search(self) -> None:
        box = self.query_one("#run-search", Input)
        box.display = True
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "run-search":
            return
        self.search_text = event.value.strip().lower()
        log = self.query_one("#run-log", Log)
        log.clear()
        log.write_lines([ln for ln in self.lines if self._match(ln)])
        if not self.search_text:
            event.input.display = False
        log.focus()

    def _match(self, line: str) -> bool:
        return not self.search_text or self.search_text in line.lower()

    # ------------------------------------------------------------------ workers (the supervisor blocks)
    @work(thread=True, exclusive=True, group="server", exit_on_error=False)
    def launch(self, plan: Plan) -> None:
        """The launch sequence of `spark-tui launch` (spark_tui.core.runtime.launch), each step posted here."""
        from spark_tui.core.runtime import launch as ls
        from spark_tui.core.runtime import supervisor as sv
        from spark_tui.core.runtime.diagnose import diagnose_lines
        from spark_tui.core.runtime.vllm_log import Event
        from spark_tui.errors import SparkError

        events: list[Event] = []

        def on_event(ev: sv.SupervisorEvent) -> None:
            if isinstance(ev, sv.LogEvent):
                events.append(ev.event)
            self.post_message(ServerEvent(ev))

        def on_step(step: ls.LaunchStep) -> None:
            if isinstance(step, ls.Started):
                self.app.supervisor = sup  # the app asks what to do with it on quit
            self.post_message(LaunchStepDone(step))

        sup = None
        try:
            # keepable: a watchdog stops the server if the app dies (even SIGKILL), as for `spark-tui launch`;
            # quitting with "keep" releases it (Supervisor.release). A non-loopback --host needs VLLM_API_KEY.
            sup = sv.supervisor_for_plan(plan, keepable=True)
            sup.subscribe(on_event)
            up = ls.launch(plan, sup, startup_timeout_s=STARTUP_TIMEOUT_S, guard=ls.default_guard(plan),
                           on_guard=lambda ev: self.post_message(GuardAlert(ev)), on_step=on_step)
            self.post_message(LaunchVerified(up.ready, up.verification))
        except SparkError as e:  # launch() stopped the server; the log says why
            diags = diagnose_lines(list(sup.parser.lines), events) if sup is not None else []
            self.post_message(LaunchFailed(e.message, e.hint, diags))

    @work(thread=True, exclusive=True, group="server-stop", exit_on_error=False)
    def stop_server(self, then_launch: bool = False) -> None:
        sup = self.app.supervisor
        how = sup.stop() if sup is not None else "gone"
        self.post_message(ServerStopped(how, then_launch))

    # ------------------------------------------------------------------ messages from the workers
    def on_server_event(self, msg: ServerEvent) -> None:
        from spark_tui.core.runtime import supervisor as sv

        ev = msg.event
        if isinstance(ev, sv.LogLine):
            self._log(ev.text)
        elif isinstance(ev, sv.PhaseChanged):
            self.query_one("#run-phases", Static).update(phases_markup(ev.phases))
        elif isinstance(ev, sv.Ready):
            self.app.server_state = "ready"
            self.app.server_url = ev.url
            self.query_one("#run-status", Static).update(
                f"[green]ready[/] in {ev.seconds:.0f} s at {escape(ev.url)} (models: {escape(', '.join(ev.models))}); "
                "the Dashboard (6) watches it.")
        elif isinstance(ev, sv.Exited):
            if self.app.server_state in ("ready", "starting") and not ev.stopped_by_us:
                self.app.server_state = "failed"
                self.query_one("#run-status", Static).update(f"[red]vLLM exited with code {ev.returncode}[/]")

    def on_launch_step_done(self, msg: LaunchStepDone) -> None:
        from spark_tui.core.runtime import launch as ls

        if isinstance(msg.step, ls.PreflightDone):  # the checks' notes go to the log, as `launch` prints them
            for line in msg.step.preflight.lines():
                self._log(f"[spark-tui] {line}")

    def on_launch_verified(self, msg: LaunchVerified) -> None:
        lines = msg.verification.lines()
        if lines:
            self._diag("[b]vs plan[/b]\n" + escape("\n".join(lines)))

    def on_launch_failed(self, msg: LaunchFailed) -> None:
        self.app.server_state = "failed"
        self.query_one("#run-status", Static).update(f"[red]{escape(msg.message)}[/]\n{escape(msg.hint)}")
        self._show_diagnoses(msg.diagnoses)

    def on_guard_alert(self, msg: GuardAlert) -> None:
        ev = msg.event
        if ev.kind == "warn":
            self.notify(ev.text, title="Memory", severity="warning", markup=False)
        elif ev.kind == "stop":
            self.app.server_state = "failed"
            self.query_one("#run-status", Static).update(f"[red]{escape(ev.text.splitlines()[0])}[/]")
            self._diag("[b red]memory guard[/]\n" + escape(ev.text))
        elif ev.kind == "unavailable":
            self.notify(ev.text, title="Memory", markup=False)

    def on_server_stopped(self, msg: ServerStopped) -> None:
        self.app.server_state = "stopped"
        self.query_one("#run-status", Static).update(f"vLLM stopped ({msg.how}).")
        if msg.then_launch:
            self.action_launch()

    def _log(self, line: str) -> None:
        self.lines.append(line)
        if self._match(line):
            self.query_one("#run-log", Log).write_line(line)

    def _diag(self, text: str) -> None:
        box = self.query_one("#run-diagnosis", Static)
        box.update(text)
        box.display = bool(text)

    def _show_diagnoses(self, diags: list[Diagnosis]) -> None:
        errors = [d for d in diags if d.severity == "error"]
        self.diagnoses = diags
        self.fix = next((d for d in errors if d.fix_args), None)
        if not errors:
            return
        d = errors[0]
        text = f"[b red]{escape(d.kind)}[/]: {escape(d.cause)}\n[b]fix:[/b] {escape(d.fix)}"
        if self.fix is not None:
            args = " ".join(f"{a['flag']} {a.get('value') or ''}".strip() for a in self.fix.fix_args)
            text += f"\n[b]f[/b] applies {escape(args)} and relaunches"
        self._diag(text)
