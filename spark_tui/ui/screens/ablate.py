"""Ablation results: every `spark-tui ablate` run saved on this machine, and one run's table (each variant's tok/s
and TTFT against vLLM's baseline at each concurrency and temperature), its KV-cache predictions and its MTP model fit.

It reads the state files `spark-tui ablate` writes as each variant finishes (spark_tui.core.observe.ablate), so an
ablation running in another terminal shows up with `r`. Nothing here starts a server.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from spark_tui.ui.messages import AblationsLoaded
from spark_tui.ui.screens.base import StepScreen

if TYPE_CHECKING:
    from spark_tui.core.observe.ablate import SavedAblation


class AblateScreen(StepScreen):
    MODE = "ablate"
    BINDINGS = [("r", "reload", "Reload")]

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="ablate-body"):
            yield Static("", id="ablate-status")
            yield DataTable(id="ablate-runs", cursor_type="row", zebra_stripes=True)
            yield DataTable(id="ablate-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="ablate-findings")

    def on_mount(self) -> None:
        runs = self.query_one("#ablate-runs", DataTable)
        for label, key, width in (("saved", "when", 17), ("model", "model", 38), ("variants", "n", 9),
                                  ("failed", "failed", 7)):
            runs.add_column(label, key=key, width=width)
        t = self.query_one("#ablate-table", DataTable)
        for label, key in (("variant", "variant"), ("c", "c"), ("T", "t"), ("tok/s", "tok"), ("x base", "ratio"),
                           ("TTFT p50", "ttft"), ("x base", "tratio"), ("accept", "acc"), ("start s", "start")):
            t.add_column(label, key=key)
        self.saved: list[SavedAblation] = []
        self.action_reload()

    def action_reload(self) -> None:
        self.query_one("#ablate-status", Static).update("reading saved ablations …")
        self.load()

    @work(thread=True, exclusive=True, group="ablate", exit_on_error=False)
    def load(self) -> None:
        from spark_tui.core.observe.ablate import saved_ablations

        found, bad = saved_ablations()
        self.post_message(AblationsLoaded(found, bad))

    def on_ablations_loaded(self, msg: AblationsLoaded) -> None:
        self.saved = list(msg.saved)
        runs = self.query_one("#ablate-runs", DataTable)
        runs.clear()
        for i, a in enumerate(self.saved):
            failed = sum(1 for r in a.state.results.values() if not r.ok)
            runs.add_row(time.strftime("%Y-%m-%d %H:%M", time.localtime(a.modified)), a.model[-38:],
                         str(len(a.state.results)), str(failed), key=str(i))
        if not self.saved:  # (the folder is not named here: the state line of a picked result names its file)
            status = ("no ablation saved yet: run `spark-tui ablate` (it saves each variant in <data dir>/ablate as "
                      "it finishes; `r` reloads)")
        else:
            status = f"{len(self.saved)} ablation(s) saved; pick one (newest first; `r` reloads)"
        if msg.bad:
            status += "\n" + "\n".join(f"skipped {b}" for b in msg.bad)
        self.query_one("#ablate-status", Static).update(status)
        self.show(0 if self.saved else None)

    def on_data_table_row_highlighted(self, ev: DataTable.RowHighlighted) -> None:
        if ev.data_table.id == "ablate-runs" and ev.row_key.value is not None:
            self.show(int(ev.row_key.value))

    def show(self, i: int | None) -> None:
        from spark_tui.core.observe.ablate import findings, fmt, ratios

        t = self.query_one("#ablate-table", DataTable)
        t.clear()
        notes = self.query_one("#ablate-findings", Static)
        if i is None or i >= len(self.saved):
            notes.update("")
            return
        st = self.saved[i].state
        for n, r in enumerate(ratios(st, list(st.results))):
            t.add_row(r["variant"], str(r["concurrency"]), f"{r['temperature']:g}", fmt(r["output_tok_s"], ".1f"),
                      fmt(r["ratio"], ".3f"), fmt(r["ttft_p50_s"], ".0f", 1000) + " ms", fmt(r["ttft_ratio"], ".3f"),
                      fmt(r["acceptance_rate"], ".0%"), fmt(r["startup_s"], ".0f"), key=str(n))
        lines = findings(st)
        notes.update("\n".join([f"plan: {' '.join(st.plan_argv)}", f"state: {self.saved[i].path}", *lines]))
