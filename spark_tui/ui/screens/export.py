"""Export: choose a format, preview it with syntax highlighting, write it (asking before overwriting), copy
the serve command. Rendering is spark_tui.core.export.formats.render (what `spark-tui export` prints); writing uses
spark_tui.core.export.files (export_targets, existing_targets, write_files), as `spark-tui export -o` does (mode 0755
for scripts, 0644 otherwise); a path that cannot be written is an error notification, never a crash."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from rich.syntax import Syntax
from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Horizontal, ScrollableContainer
from textual.widgets import Input, Select, Static

from spark_tui.ui.screens.base import StepScreen

if TYPE_CHECKING:
    from spark_tui.core.export.formats import ExportFile
    from spark_tui.core.planning.plan import Plan
    from spark_tui.errors import SparkError

LANG = {"bash": "bash", "docker": "bash", "ray": "bash", "compose": "yaml", "k8s": "yaml", "systemd": "ini"}


class ExportScreen(StepScreen):
    MODE = "export"
    BINDINGS = [
        ("f", "focus_format", "Format"),
        ("w", "write", "Write file"),
        ("y", "copy", "Copy command"),
    ]

    def compose_body(self) -> ComposeResult:
        from spark_tui.core.export.formats import FORMATS

        with Horizontal(id="export-bar"):
            yield Select([(f, f) for f in FORMATS], value="bash", allow_blank=False, id="export-format", compact=True)
            yield Input(placeholder="write to (file, or folder for ray)", id="export-path", compact=True)
        yield Static("", id="export-status")
        with ScrollableContainer(id="export-preview-box"):
            yield Static("", id="export-preview")

    def on_mount(self) -> None:
        self.files: list[ExportFile] = []
        self.watch(self.app, "plan", self._show_plan, init=True)

    @property
    def fmt(self) -> str:
        v = self.query_one("#export-format", Select).value
        return v if isinstance(v, str) else "bash"

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "export-format":
            self._show_plan(self.app.plan)

    def _show_plan(self, plan: Plan | None) -> None:
        from spark_tui.core.export.formats import combined, render
        from spark_tui.errors import SparkError

        status = self.query_one("#export-status", Static)
        preview = self.query_one("#export-preview", Static)
        path = self.query_one("#export-path", Input)
        if plan is None:
            self.files = []
            status.update("No plan yet: choose a device (1) and a checkpoint (2) first.")
            preview.update("")
            return
        try:
            self.files = render(plan, self.fmt)
        except SparkError as e:
            self.files = []
            status.update(f"[red]{escape(e.message)}[/]\nfix: {escape(e.hint)}")
            preview.update("")
            return
        names = ", ".join(f.name for f in self.files)
        status.update(escape(f"{self.fmt}: {names}  (w writes, y copies the serve command)"))
        if not path.value or Path(path.value).name in _all_names():
            path.value = self.files[0].name if len(self.files) == 1 else "."
        preview.update(Syntax(combined(self.files), LANG.get(self.fmt, "bash"), theme="ansi_dark",
                              word_wrap=False, background_color="default"))

    def action_focus_format(self) -> None:
        self.query_one("#export-format", Select).focus()

    def action_copy(self) -> None:
        plan = self.app.plan
        if plan is None:
            self.notify("No plan to copy yet.", title="Copy", severity="warning")
            return
        from spark_tui.core.export.formats import serve_argv

        cmd = shlex.join(serve_argv(plan))
        self.app.copy_to_clipboard(cmd)
        self.notify("serve command copied to the clipboard (OSC 52; your terminal must allow it)", title="Copy")

    def action_write(self) -> None:
        if not self.files:
            self.notify("Nothing to write yet.", title="Write", severity="warning")
            return
        raw = self.query_one("#export-path", Input).value.strip()
        if not raw:
            self.notify("Give a path to write to.", title="Write", severity="error")
            return
        from spark_tui.core.export.files import existing_targets, export_targets
        from spark_tui.errors import SparkError

        try:  # a folder, a link, a device, a path that cannot be looked at: said here, never a crash
            targets = export_targets([f.name for f in self.files], os.path.expanduser(raw))
            existing = existing_targets(targets)
        except SparkError as e:
            self._write_failed(e)
            return
        if existing:
            from spark_tui.ui.modals import ConfirmModal

            def answer(yes: bool | None) -> None:
                if yes:
                    self._write(targets, force=True)
                else:
                    self.notify("nothing written", title="Write")

            self.app.push_screen(ConfirmModal("Overwrite " + ", ".join(str(p) for p in existing) + "?"), answer)
            return
        self._write(targets, force=False)

    def _write(self, targets: list[Path], force: bool) -> None:
        from spark_tui.core.export.files import write_files
        from spark_tui.errors import SparkError

        try:  # all or nothing; never onto a device, FIFO, directory or symbolic link (as `spark-tui export -o`)
            write_files([(path, f.content, 0o755 if f.executable else 0o644)
                         for f, path in zip(self.files, targets, strict=True)], force)
        except SparkError as e:
            self._write_failed(e)
            return
        self.notify("wrote " + ", ".join(str(p) for p in targets), title="Write", markup=False)

    def _write_failed(self, e: SparkError) -> None:
        self.notify(e.message + (f"\n{e.hint}" if e.hint else ""), title="Write", severity="error", markup=False)


def _all_names() -> set[str]:
    return {"serve.sh", "docker-run.sh", "compose.yaml", "spark-tui-vllm.service", "spark-tui-vllm.yaml", "."}
