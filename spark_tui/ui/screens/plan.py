"""Plan: vLLM's baseline vs the plan, one row per deviation (default -> value, evidence class, reason and source), editable overrides (context, concurrency, goal, MTP
tokens, FLAG=VALUE) re-planned live by the core planner, the memory picture as a bar (weights / KV / DeltaNet
state / overhead / headroom, from MemoryEstimate.bar()), the predicted KV tokens and concurrency, warnings,
and the `--check` result (vLLM's own argument parser, in a worker)."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

from rich.text import Text
from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widget import Widget
from textual.widgets import DataTable, Input, Select, Static

from spark_tui.core.planning.plan import comparison
from spark_tui.ui.messages import OverridesChanged
from spark_tui.ui.screens.base import StepScreen

if TYPE_CHECKING:
    from spark_tui.core.planning.plan import MemoryEstimate, Plan

SEGMENTS = {  # MemoryEstimate.bar() label -> (legend, colour)
    "weights": ("weights", "dodger_blue2"),
    "kv": ("KV", "green3"),
    "deltanet_state": ("DeltaNet", "dark_orange"),
    "overhead": ("overhead", "magenta"),
    "headroom": ("headroom", "grey50"),
}
GOALS = ("balanced", "latency", "throughput", "context")


def bar_cells(segments: list[tuple[str, int]], width: int) -> list[tuple[str, int]]:
    """Share `width` cells among segments in proportion to their bytes (largest remainder; a non-zero
    segment gets at least one cell when there is room). Pure; the cells always sum to `width`."""
    total = sum(max(b, 0) for _, b in segments)
    if total <= 0 or width <= 0:
        return [(n, 0) for n, _ in segments]
    exact = [max(b, 0) * width / total for _, b in segments]
    cells = [int(x) for x in exact]
    if sum(1 for _, b in segments if b > 0) <= width:
        cells = [max(c, 1) if b > 0 else c for c, (_, b) in zip(cells, segments)]
    while sum(cells) > width:  # the minimum cells overshot: take from the largest segment that can spare one
        k = max((i for i in range(len(cells)) if cells[i] > 1), key=lambda i: cells[i], default=None)
        if k is None:
            k = max(range(len(cells)), key=lambda i: cells[i])
        cells[k] -= 1
    order = sorted(range(len(segments)), key=lambda i: exact[i] - int(exact[i]), reverse=True)
    j = 0
    while sum(cells) < width:
        cells[order[j % len(order)]] += 1
        j += 1
    return [(segments[i][0], cells[i]) for i in range(len(segments))]


class MemoryBar(Widget):
    """One line of coloured blocks for a MemoryEstimate, and its legend below."""

    DEFAULT_CSS = """
    MemoryBar { height: 2; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.memory: MemoryEstimate | None = None

    def set_memory(self, memory: MemoryEstimate | None) -> None:
        self.memory = memory
        self.refresh()

    def render(self) -> Text:
        m = self.memory
        if m is None:
            return Text("memory: no estimate")
        segs = m.bar()
        width = max(self.size.width, 10)
        t = Text()
        for name, n in bar_cells(segs, width):
            t.append("█" * n, style=SEGMENTS.get(name, (name, "white"))[1])
        t.append("\n")
        for name, b in segs:
            legend, colour = SEGMENTS.get(name, (name, "white"))
            t.append("■ ", style=colour)
            t.append(f"{legend} {b / 2**30:.1f} ")
        t.append("GiB")
        return t


class PlanScreen(StepScreen):
    MODE = "plan"
    BINDINGS = [
        ("e", "edit", "Edit overrides"),
        ("c", "check", "Check with vLLM"),
        ("x", "reset", "Reset overrides"),
        ("y", "copy", "Copy command"),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="plan-overrides"):
            yield Input(placeholder="context", id="ov-context", type="integer", compact=True)
            yield Input(placeholder="concurrency", id="ov-concurrency", type="integer", compact=True)
            yield Select([(g, g) for g in GOALS], value="balanced", allow_blank=False, id="ov-goal", compact=True)
            yield Input(placeholder="MTP k", id="ov-mtp", type="integer", compact=True)
            yield Input(placeholder="FLAG=VALUE …", id="ov-set", compact=True)
        yield Static("", id="plan-status")
        yield MemoryBar(id="plan-memory")
        yield Static("", id="plan-predicted")
        yield DataTable(id="plan-flags", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="plan-notes-box"):
            yield Static("", id="plan-notes")

    def on_mount(self) -> None:
        t = self.query_one("#plan-flags", DataTable)
        t.add_column("flag", key="flag")
        t.add_column("vLLM default -> plan", key="value")
        t.add_column("evidence", key="evidence")
        t.add_column("reason [source]", key="reason")
        self.check_result: dict | None = None
        self.watch(self.app, "plan", self._show, init=True)
        self.watch(self.app, "plan_error", self._show_error, init=False)
        self._sync_inputs()

    # ------------------------------------------------------------------ overrides
    def _sync_inputs(self) -> None:
        ov = self.app.overrides
        for key in ("context", "concurrency", "mtp"):
            self.query_one(f"#ov-{key}", Input).value = "" if ov.get(key) is None else str(ov[key])
        self.query_one("#ov-set", Input).value = " ".join(ov.get("set_flags", []))
        with self.prevent(Select.Changed):
            self.query_one("#ov-goal", Select).value = ov.get("goal", "balanced")

    def _collect(self) -> dict[str, Any] | None:
        ov: dict[str, Any] = {k: v for k, v in self.app.overrides.items() if k == "model_path"}
        for key in ("context", "concurrency", "mtp"):
            raw = self.query_one(f"#ov-{key}", Input).value.strip()
            if raw:
                try:
                    ov[key] = int(raw)
                except ValueError:
                    self.notify(f"{key}: {raw!r} is not a whole number", title="Overrides", severity="error", markup=False)
                    return None
        goal = self.query_one("#ov-goal", Select).value
        if isinstance(goal, str) and goal != "balanced":
            ov["goal"] = goal
        raw = self.query_one("#ov-set", Input).value.strip()
        if raw:
            try:
                ov["set_flags"] = shlex.split(raw)
            except ValueError as e:
                self.notify(f"FLAG=VALUE list: {e}", title="Overrides", severity="error", markup=False)
                return None
        return ov

    def _apply(self) -> None:
        ov = self._collect()
        if ov is not None and ov != self.app.overrides:
            self.check_result = None
            self.query_one("#plan-status", Static).update("re-planning …")
            self.post_message(OverridesChanged(ov))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id and event.input.id.startswith("ov-"):
            self._apply()
            self.query_one("#plan-flags", DataTable).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "ov-goal":
            self._apply()

    def action_edit(self) -> None:
        self.query_one("#ov-context", Input).focus()

    def action_reset(self) -> None:
        ov = {k: v for k, v in self.app.overrides.items() if k == "model_path"}
        self.app.overrides = ov
        self._sync_inputs()

    def action_copy(self) -> None:
        plan = self.app.plan
        if plan is None:
            self.notify("No plan yet.", title="Copy", severity="warning")
            return
        from spark_tui.core.export.formats import serve_argv

        self.app.copy_to_clipboard(shlex.join(serve_argv(plan)))
        self.notify("serve command copied (OSC 52)", title="Copy")

    # ------------------------------------------------------------------ --check
    def action_check(self) -> None:
        plan = self.app.plan
        if plan is None:
            self.notify("No plan to check yet.", title="Check", severity="warning")
            return
        self.query_one("#plan-status", Static).update("checking the flags with the installed vLLM's parser …")
        self.run_check(plan.argv())

    @work(thread=True, exclusive=True, group="plan-check", exit_on_error=False)
    def run_check(self, argv: list[str]) -> None:
        from spark_tui.core.catalog.vllm_compat import check_argv

        res = check_argv(argv)
        self.app.call_from_thread(self._checked, res)

    def _checked(self, res: dict) -> None:
        self.check_result = res
        self._show(self.app.plan)

    # ------------------------------------------------------------------ drawing
    def _show_error(self, err: str) -> None:
        if err:
            self.query_one("#plan-status", Static).update(f"[red]{escape(err)}[/]")

    def _show(self, plan: Plan | None) -> None:
        status = self.query_one("#plan-status", Static)
        table = self.query_one("#plan-flags", DataTable)
        mem = self.query_one("#plan-memory", MemoryBar)
        if plan is None:
            status.update(self.app.plan_error and f"[red]{escape(self.app.plan_error)}[/]"
                          or "No plan yet: choose a device on the Device step (1).")
            mem.set_memory(None)
            table.clear()
            self.query_one("#plan-predicted", Static).update("")
            self.query_one("#plan-notes", Static).update("")
            return
        d = plan.device
        status.update(f"[b]{escape(d.name)}[/b] ({escape(d.id)}{', sm_' + str(d.sm) if d.sm else ''}) → "
                      f"[b]{escape(plan.checkpoint.repo_id)}[/b], goal {escape(plan.goal)}, vLLM {escape(plan.vllm_version or 'n/a')}")
        m = plan.memory
        mem.set_memory(m)
        pred = self.query_one("#plan-predicted", Static)
        if m is not None:
            fit = "" if getattr(m, "fits", True) else "  [red]does not fit[/]"
            pred.update(f"of {m.device_total_bytes / 2**30:.1f} GiB; predicted KV cache {m.kv_cache_tokens:,} tokens, "
                        f"{m.max_concurrency:.2f}x at {m.max_model_len:,}{fit}")
        else:
            pred.update("no memory estimate for this plan")
        table.clear()
        for r in comparison(plan):
            colour = {"required": "", "measured": "green", "unmeasured": "yellow"}.get(r["evidence"], "")
            table.add_row(Text(r["flag"]), Text(f"{r['baseline']} -> {r['plan']}"), Text(r["evidence"], style=colour),
                          Text(f"{r['reason']} [{r['source']}]"))
        for e in plan.env:
            table.add_row(Text(f"env {e.name}"), Text(e.value), Text("required"), Text(f"{e.reason} [{e.source}]"))
        self._notes(plan)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self.app.plan is not None:
            self._notes(self.app.plan)

    def _notes(self, plan: Plan) -> None:
        """The highlighted flag's reason and source first (the table's third column is off-screen at 80
        columns), then the check result, warnings and differences from the recipe."""
        table = self.query_one("#plan-flags", DataTable)
        rows = [(r["flag"], r["evidence"], r["reason"], r["source"], r["effect"]) for r in comparison(plan)] + [
            (f"env {e.name}", "required", e.reason, e.source, "") for e in plan.env]
        notes = []
        if rows and table.cursor_row is not None and table.cursor_row < len(rows):
            flag, evidence, reason, source, effect = rows[table.cursor_row]
            notes.append(f"[b]{escape(flag)}[/b] ({escape(evidence)}): {escape(reason)}"
                         + (f" [green]measured: {escape(effect)}[/]" if effect else "")
                         + f" [dim]{escape('[' + source + ']')}[/]")
        base = getattr(plan, "baseline", None)
        if base is not None:
            notes.append(f"baseline `{escape(shlex.join(base.argv))}`: "
                         + ("starts here" if base.starts else "[red]does not start here[/]: " + escape("; ".join(base.problems)))
                         + (f"; MoE backend vLLM picks: {escape(base.moe_backend)}" if base.moe_backend else ""))
        notes += [f"[yellow]left out (unmeasured):[/] {escape(' '.join(f.argv()))}: {escape(f.reason)}"
                  for f in getattr(plan, "omitted", ())]
        notes += [f"note: {escape(n)}" for n in getattr(plan, "notes", ())]
        notes += [f"[yellow]warning:[/] {escape(w)}" for w in plan.warnings]
        if self.check_result is not None:
            r = self.check_result
            colour = {"ok": "green", "invalid": "red"}.get(r["status"], "yellow")
            notes[0:0] = [f"[{colour}]check: {escape(r['message'])}[/]"] + [f"  [red]- {escape(p)}[/]" for p in r.get("problems", [])]
        notes += [f"differs from the recipe: {escape(x)}" for x in plan.differences]
        self.query_one("#plan-notes", Static).update("\n".join(notes))
