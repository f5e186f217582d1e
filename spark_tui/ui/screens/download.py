"""Download: per-file and total progress, speed, ETA, disk space, pause / resume / cancel, over the runtime
core's download event stream (spark_tui.core.runtime.download: fetch_listing -> plan_download -> check_disk ->
download). Pause stops the transfers; resume starts the same download again: finished files are kept (the
hub client's cache), the rest is fetched again (see the runtime section of the README on partial files)."""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

from rich.text import Text
from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, ProgressBar, Static

from spark_tui.ui.messages import DiskChecked, DownloadEvent
from spark_tui.ui.screens.base import StepScreen

if TYPE_CHECKING:
    from spark_tui.core.planning.plan import Plan
    from spark_tui.core.runtime.download import ProgressState


class DownloadScreen(StepScreen):
    MODE = "download"
    BINDINGS = [
        ("s", "start", "Start/resume"),
        ("p", "pause", "Pause"),
        ("c", "cancel", "Cancel"),
        ("e", "edit_repo", "Edit repo"),
    ]

    def compose_body(self) -> ComposeResult:
        with Vertical(id="dl-body"):
            with Horizontal(id="dl-inputs"):
                yield Input(placeholder="repo id, e.g. nvidia/Qwen3.6-35B-A3B-NVFP4", id="dl-repo", compact=True)
                yield Input(placeholder="folder (empty: HF cache)", id="dl-dir", compact=True)
            yield Static("", id="dl-status")
            yield ProgressBar(total=1, show_eta=False, id="dl-total")  # not indeterminate: no animation before a start
            yield Static("", id="dl-line")
            yield DataTable(id="dl-files", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        t = self.query_one("#dl-files", DataTable)
        t.add_column("file", key="file")
        t.add_column("size", key="size", width=10)
        t.add_column("done", key="done", width=7)
        self.cancel_event: threading.Event | None = None
        self.state: ProgressState | None = None
        self.sizes: dict[str, int] = {}
        self.paused = False
        self.query_one("#dl-status", Static).update("s starts (or resumes) the download of the repo above.")
        self.watch(self.app, "plan", self._plan_changed, init=True)

    def _plan_changed(self, plan: Plan | None) -> None:
        box = self.query_one("#dl-repo", Input)
        if box.value:
            return
        if plan is not None:
            box.value = plan.checkpoint.repo_id
        else:
            from spark_tui.core.runtime.download import DEFAULT_REPO

            box.value = DEFAULT_REPO

    def action_edit_repo(self) -> None:
        self.query_one("#dl-repo", Input).focus()

    def action_start(self) -> None:
        if self.cancel_event is not None and not self.cancel_event.is_set():
            self.notify("A download is already running.", title="Download")
            return
        repo = self.query_one("#dl-repo", Input).value.strip()
        if not repo or "/" not in repo:
            self.notify("Give a repository id like owner/name.", title="Download", severity="error")
            return
        folder = self.query_one("#dl-dir", Input).value.strip() or None
        self.cancel_event = threading.Event()
        self.paused = False
        self.query_one("#dl-status", Static).update(f"listing {escape(repo)} …")
        self.run_download(repo, folder, self.cancel_event)

    def action_pause(self) -> None:
        if self.cancel_event is None or self.cancel_event.is_set():
            self.notify("Nothing is downloading.", title="Download")
            return
        self.paused = True
        self.cancel_event.set()
        self.query_one("#dl-status", Static).update("pausing … (s resumes: finished files are kept)")

    def action_cancel(self) -> None:
        if self.cancel_event is not None and not self.cancel_event.is_set():
            self.paused = False
            self.cancel_event.set()
            self.query_one("#dl-status", Static).update("cancelling …")

    @work(thread=True, exclusive=True, group="download", exit_on_error=False)
    def run_download(self, repo: str, folder: str | None, cancel: threading.Event) -> None:
        from spark_tui.core.runtime import download as dl
        from spark_tui.errors import SparkError

        endpoint = os.environ.get("HF_ENDPOINT") or None
        try:
            listing = dl.fetch_listing(repo, None, endpoint=endpoint)
            plan = dl.plan_download(listing, local_dir=folder)
            free = dl.check_disk(plan.target, plan.missing_bytes)
            self.post_message(DiskChecked(plan.target, free, plan.missing_bytes))
            if cancel.is_set():
                raise dl.DownloadError(f"download of {repo} cancelled", "run it again to continue")
            dl.download(plan, [lambda ev: self.post_message(DownloadEvent(ev))], cancel=cancel, endpoint=endpoint)
        except SparkError as e:
            self.post_message(DownloadEvent(dl.DownloadFailed(e.message, e.hint)))
        finally:
            cancel.set()

    def on_disk_checked(self, msg: DiskChecked) -> None:
        from spark_tui.core.runtime import download as dl

        self.query_one("#dl-status", Static).update(
            f"to {escape(msg.target)}: {dl.fmt_bytes(msg.missing_bytes)} to fetch, {dl.fmt_bytes(msg.free_bytes)} free "
            "on disk")

    def on_download_event(self, msg: DownloadEvent) -> None:
        from spark_tui.core.runtime import download as dl

        ev = msg.event
        table = self.query_one("#dl-files", DataTable)
        status = self.query_one("#dl-status", Static)
        if self.state is None or isinstance(ev, dl.DownloadStarted):
            self.state = dl.ProgressState()
        self.state.apply(ev, time.monotonic())
        if isinstance(ev, dl.DownloadStarted):
            table.clear()
            self.sizes = {}
            status.update(f"{escape(ev.repo_id)}@{escape(ev.commit[:10])}: {len(ev.files)} files, {dl.fmt_bytes(ev.total_bytes)} "
                          f"({dl.fmt_bytes(ev.cached_bytes)} already here) → {escape(ev.target)}")
            for path in ev.files:
                table.add_row(Text(path), "", "", key=path)
            bar = self.query_one("#dl-total", ProgressBar)
            bar.update(total=max(ev.missing_bytes, 1), progress=0)
        elif isinstance(ev, dl.FileProgress):
            if ev.path in table.rows:
                if ev.total:
                    table.update_cell(ev.path, "size", dl.fmt_bytes(ev.total))
                    table.update_cell(ev.path, "done", f"{100 * ev.done / ev.total:.0f}%")
        elif isinstance(ev, dl.FileDone):
            if ev.path in table.rows:
                table.update_cell(ev.path, "size", dl.fmt_bytes(ev.size))
                table.update_cell(ev.path, "done", "cached" if ev.cached else "✓")
        elif isinstance(ev, dl.DownloadFinished):
            status.update(f"[green]done[/]: {dl.fmt_bytes(ev.fetched_bytes)} in {ev.seconds:.0f} s → {escape(ev.path)}")
            self.app.notify(f"checkpoint ready at {ev.path}", title="Download", markup=False)
        elif isinstance(ev, dl.DownloadFailed):
            if self.paused:
                status.update("paused: s resumes (finished files are kept).")
            else:
                status.update(f"[red]{escape(ev.message)}[/]\n{escape(ev.hint)}")
        if self.state is not None and self.state.total:
            self.query_one("#dl-total", ProgressBar).update(progress=min(self.state.done, self.state.total))
            self.query_one("#dl-line", Static).update(self.state.line())
