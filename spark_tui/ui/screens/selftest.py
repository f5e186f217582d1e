"""Self-test: what kernels_check will run here (before it runs), then its matrix and verdict as checks finish.

kernels_check.plan_selftest() / run_selftest() are the same functions `spark-tui selftest` calls; both block
(torch import, GPU kernels), so both run in thread workers. Nothing is shown as a result that did not run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from spark_tui.ui.messages import SelftestResult
from spark_tui.ui.screens.base import StepScreen

if TYPE_CHECKING:
    from kernels_check.model import Report


class SelftestScreen(StepScreen):
    MODE = "selftest"
    BINDINGS = [("r", "run", "Run self-test"), ("l", "list", "List checks")]

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="selftest-body"):
            yield Static("", id="selftest-status")
            yield DataTable(id="selftest-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="selftest-verdict")

    def on_mount(self) -> None:
        t = self.query_one("#selftest-table", DataTable)
        t.add_column("check", key="name", width=22)
        t.add_column("status", key="status", width=10)
        t.add_column("s", key="s", width=6)
        t.add_column("result / reason", key="what")
        self.report: Report | None = None
        self.running = False
        self.action_list()  # show what will run before anything runs (no kernel is launched by listing)

    def action_list(self) -> None:
        self.query_one("#selftest-status", Static).update("finding torch / CUDA / vLLM …")
        self.list_checks()

    @work(thread=True, exclusive=True, group="selftest", exit_on_error=False)
    def list_checks(self) -> None:
        from kernels_check.runner import plan_selftest

        self.post_message(SelftestResult(planned=plan_selftest()))

    def action_run(self) -> None:
        if self.running:
            self.notify("the self-test is already running", severity="warning")
            return
        self.running = True
        self.query_one("#selftest-status", Static).update("running the self-test … (results appear as each "
                                                          "check finishes)")
        self.query_one("#selftest-verdict", Static).update("")
        self.run_checks()

    @work(thread=True, exclusive=True, group="selftest", exit_on_error=False)
    def run_checks(self) -> None:
        from kernels_check.runner import plan_selftest, run_selftest

        try:
            self.post_message(SelftestResult(planned=plan_selftest()))
            report = run_selftest(on_result=lambda r: self.post_message(SelftestResult(result=r)))
            self.post_message(SelftestResult(report=report))
        finally:
            self.running = False

    def on_selftest_result(self, msg: SelftestResult) -> None:
        from kernels_check.render import summary_line

        t = self.query_one("#selftest-table", DataTable)
        if msg.planned is not None:
            t.clear()
            for p in msg.planned:
                t.add_row(Text(p.name), "will run" if p.will_run else "skip", "",
                          Text(p.title if p.will_run else p.reason), key=p.name)
            n = sum(p.will_run for p in msg.planned)
            if not self.running:
                self.query_one("#selftest-status", Static).update(
                    f"{n} of {len(msg.planned)} checks will run here; r runs them.")
        if msg.result is not None:
            r = msg.result
            colour = {"pass": "green", "fail": "red", "not_native": "yellow"}.get(r.status.value, "white")
            row = (Text(r.name), Text(r.status.symbol, style=colour), f"{r.seconds:.1f}", Text(summary_line(r)))
            if r.name in t.rows:
                for col, v in zip(("name", "status", "s", "what"), row):
                    t.update_cell(r.name, col, v)
            else:
                t.add_row(*row, key=r.name)
        if msg.report is not None:
            self.report = msg.report
            rec = msg.report.recommendation
            colour = {"native_nvfp4": "green", "nvfp4_weight_only_fallback": "yellow"}.get(rec.verdict.value, "red")
            notes = "".join(f"\n  • {escape(n)}" for n in rec.notes)
            extra = ""
            if rec.checkpoint:
                extra += f"\ncheckpoint: {escape(rec.checkpoint)}"
            if rec.moe_backend:
                extra += f"   --moe-backend {escape(rec.moe_backend)}"
            self.query_one("#selftest-verdict", Static).update(
                f"[b]verdict:[/b] [{colour}]{rec.verdict.label}[/] — {escape(rec.summary)}{extra}{notes}")
            self.query_one("#selftest-status", Static).update(
                f"self-test finished in {msg.report.seconds:.1f} s")
