"""Model: the checkpoint catalog for the target device, the planner's recommendation first with its reason;
size, format, license, published accuracy vs BF16, and whether it is already downloaded (HF cache scan in a
worker, or a local folder)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Input, Static

from spark_tui.ui.messages import CacheScanned, CheckpointChosen, OverridesChanged
from spark_tui.ui.screens.base import StepScreen

if TYPE_CHECKING:
    from spark_tui.core.catalog.profiles import CheckpointProfile


def accuracy_summary(acc: dict[str, dict[str, float]]) -> str:
    """'Δ -0.3 pts (8 benchmarks)' from a profile's {bench: {fmt: score, bf16: score}} (pure)."""
    deltas = []
    for scores in acc.values():
        if "bf16" not in scores:
            continue
        other = [v for k, v in scores.items() if k != "bf16"]
        if other:
            deltas.append(other[0] - scores["bf16"])
    if not deltas:
        return "n/a"
    return f"Δ {sum(deltas) / len(deltas):+.1f} pts ({len(deltas)})"


def accuracy_detail(acc: dict[str, dict[str, float]]) -> str:
    rows = []
    for bench, scores in acc.items():
        other = ", ".join(f"{k} {v:g}" for k, v in scores.items() if k != "bf16")
        rows.append(f"{bench}: {other}" + (f" vs BF16 {scores['bf16']:g}" if "bf16" in scores else ""))
    return "; ".join(rows)


class ModelScreen(StepScreen):
    MODE = "model"
    BINDINGS = [
        ("enter", "choose", "Use checkpoint"),
        ("o", "local_path", "Local folder"),
        ("s", "scan", "Rescan cache"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static("", id="model-status")
        yield DataTable(id="model-table", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="model-detail-box"):
            yield Static("", id="model-detail")
        yield Input(placeholder="serve a local checkpoint folder instead (Enter; empty clears)", id="model-path", compact=True)

    def on_mount(self) -> None:
        t = self.query_one("#model-table", DataTable)
        for label, key in (("checkpoint", "id"), ("format", "format"), ("GB", "size"), ("license", "license"),
                           ("vs BF16", "acc"), ("local", "local")):
            t.add_column(label, key=key)
        self.cached: dict[str, tuple[str, int]] = {}
        self.rows: list[tuple[CheckpointProfile, str, list[str]]] = []  # (profile, why, warnings)
        self.query_one("#model-path", Input).display = False
        self.watch(self.app, "target_device", lambda _: self._fill(), init=False)
        self.watch(self.app, "probe", lambda _: self._fill(), init=False)
        self.watch(self.app, "checkpoint_id", lambda _: self._fill(), init=False)
        self._fill()
        self.action_scan()

    def action_scan(self) -> None:
        self.scan_cache()

    @work(thread=True, exclusive=True, group="hf-cache", exit_on_error=False)
    def scan_cache(self) -> None:
        from huggingface_hub import scan_cache_dir

        from spark_tui.core.runtime.download import hf_cache_dir

        try:
            info = scan_cache_dir(hf_cache_dir())
        except Exception as e:  # CacheNotFound (no cache yet) and friends: nothing downloaded
            self.post_message(CacheScanned({}, error=f"{type(e).__name__}: {e}"))
            return
        out: dict[str, tuple[str, int]] = {}
        for repo in info.repos:
            if repo.repo_type != "model":
                continue
            snaps = sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
            out[repo.repo_id] = (str(snaps[0].snapshot_path) if snaps else str(repo.repo_path), repo.size_on_disk)
        self.post_message(CacheScanned(out))

    def on_cache_scanned(self, msg: CacheScanned) -> None:
        self.cached = msg.cached
        self._fill()

    def _fill(self) -> None:
        from spark_tui.errors import SparkError
        from spark_tui.ui.support import checkpoint_rows

        status = self.query_one("#model-status", Static)
        try:
            rows, target = checkpoint_rows(self.app.target_device, self.app.probe)
        except SparkError as e:
            status.update(f"[red]{escape(e.message)}[/]\nfix: {escape(e.hint)}")
            return
        self.rows = rows
        t = self.query_one("#model-table", DataTable)
        keep = t.cursor_row
        t.clear()
        chosen = self.app.checkpoint_id
        for i, (c, why, warns) in enumerate(rows):
            mark = "★ " if i == 0 else ("• " if c.id == chosen else "  ")
            local = self.cached.get(c.repo_id)
            t.add_row(Text(mark + c.id), Text(c.format or "not verified"), "n/a" if c.size_on_disk_gb is None
                      else f"{c.size_on_disk_gb:g}", Text(c.license or "n/a"), accuracy_summary(c.accuracy),
                      "✓ cached" if local else "—", key=c.id)
        if rows:
            t.move_cursor(row=min(keep, len(rows) - 1))
        model_path = self.app.overrides.get("model_path")
        status.update(f"Checkpoints for [b]{escape(target)}[/b] (★ recommended; Enter uses the highlighted one)"
                      + (f"\nserving the local folder {escape(model_path)}" if model_path else ""))
        self._detail()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._detail()

    def _detail(self) -> None:
        t = self.query_one("#model-table", DataTable)
        if not self.rows or t.cursor_row is None or t.cursor_row >= len(self.rows):
            return
        c, why, warns = self.rows[t.cursor_row]
        local = self.cached.get(c.repo_id)
        lines = [f"[b]{escape(c.name)}[/b] {escape(c.repo_id)}" + (f"@{escape(c.revision)}" if c.revision else ""),
                 f"[b]why:[/b] {escape(why)}" if why else ""]
        lines += [f"[yellow]warning:[/] {escape(w)}" for w in warns]
        lines.append(escape(f"weights: {c.weights or 'n/a'}; MTP head: "
                            f"{c.mtp_head if c.mtp_head is not None else 'not verified'}"))
        if c.accuracy:
            lines.append(escape(f"published accuracy ({c.source('accuracy')}): {accuracy_detail(c.accuracy)}"))
        if local:
            lines.append(escape(f"downloaded: {local[0]} ({local[1] / 1e9:.1f} GB on disk)"))
        else:
            lines.append("not in the Hugging Face cache: the Download step (4) fetches it")
        self.query_one("#model-detail", Static).update("\n".join(x for x in lines if x))

    def action_choose(self) -> None:
        t = self.query_one("#model-table", DataTable)
        if not self.rows or t.cursor_row is None:
            return
        c = self.rows[t.cursor_row][0]
        self.post_message(CheckpointChosen(c.id))
        self.notify(f"planning with {c.repo_id}", title="Checkpoint", markup=False)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_choose()

    def action_local_path(self) -> None:
        box = self.query_one("#model-path", Input)
        box.display = True
        box.value = self.app.overrides.get("model_path", "")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "model-path":
            return
        import os

        path = os.path.expanduser(event.value.strip())
        ov = dict(self.app.overrides)
        if path and not os.path.isdir(path):
            self.notify(f"{path} is not a folder", title="Local checkpoint", severity="error", markup=False)
            return
        if path:
            ov["model_path"] = path
        else:
            ov.pop("model_path", None)
        event.input.display = False
        self.post_message(OverridesChanged(ov))
        self._fill()
