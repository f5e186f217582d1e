"""Modal questions: quit with a running server, overwrite a file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

if TYPE_CHECKING:
    from spark_tui.core.runtime.supervisor import ServerRecord


class QuitModal(ModalScreen[str | None]):
    """A vLLM server started here is running: stop it, keep it running, or stay."""

    BINDINGS = [
        Binding("s", "choose('stop')", "Stop server and quit"),
        Binding("k", "choose('keep')", "Keep it running and quit"),
        Binding("escape", "choose(None)", "Cancel"),
    ]

    def __init__(self, record: ServerRecord | None) -> None:
        super().__init__()
        self.record = record

    def compose(self) -> ComposeResult:
        pid = getattr(self.record, "pid", "?")
        url = getattr(self.record, "url", "")
        with Vertical(classes="dialog"):
            yield Static(f"[b]A vLLM server is running[/b] (pid {pid}, {url}).\n"
                         "Stop it before quitting, or keep it running? A kept server is stopped later with "
                         f"`spark-tui stop {pid}`.")
            with Horizontal(classes="buttons"):
                yield Button("Stop and quit (s)", id="stop", variant="error")
                yield Button("Keep running (k)", id="keep", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id)

    def action_choose(self, choice: str | None) -> None:
        self.dismiss(choice)


class ConfirmModal(ModalScreen[bool]):
    """Yes/no question (used before overwriting a file)."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", id="yes", variant="warning")
                yield Button("No (n)", id="no", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
