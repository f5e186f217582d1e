"""What every step screen shares: the navigation line on top, the body, the footer with the keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

if TYPE_CHECKING:
    from textual import getters

    from spark_tui.ui.app import SparkApp

# mode name -> (key, label). The order is the order of the deployment steps.
STEPS: tuple[tuple[str, str, str], ...] = (
    ("device", "1", "Device"),
    ("model", "2", "Model"),
    ("plan", "3", "Plan"),
    ("download", "4", "Download"),
    ("run", "5", "Run"),
    ("dashboard", "6", "Dash"),
    ("export", "7", "Export"),
    ("selftest", "8", "Selftest"),
    ("ablate", "9", "Ablation"),
)


def nav_markup(current: str) -> str:
    parts = []
    for mode, key, label in STEPS:
        if mode == current:
            parts.append(f"[reverse b]{key} {label}[/]")
        else:
            parts.append(f"[b]{key}[/] {label}")
    return " " + " ".join(parts)  # one space: nine steps fit 80 columns (79 characters)


class StepScreen(Screen[None]):
    """A deployment step: `MODE` names its entry in STEPS; subclasses yield their body from compose_body()."""

    if TYPE_CHECKING:  # self.app is the SparkApp, with its attributes (Textual's typed getter; nothing at run time)
        app = getters.app(SparkApp)

    MODE = ""
    AUTO_FOCUS = "DataTable, Log, VerticalScroll"  # never an Input: the number keys must switch steps
    BINDINGS = [Binding("escape", "leave_input", "Leave the field", show=False,
                        tooltip="leave a text field, so the number keys switch steps again")]

    def action_leave_input(self) -> None:
        """Escape in a text field: leave it (the digits then switch steps instead of typing)."""
        if isinstance(self.focused, Input):
            self.set_focus(None)

    def compose(self) -> ComposeResult:
        yield Static(nav_markup(self.MODE), id="nav", markup=True)
        yield from self.compose_body()
        yield Footer(compact=True, show_command_palette=False)

    def compose_body(self) -> ComposeResult:  # pragma: no cover - every screen overrides it
        yield from ()
