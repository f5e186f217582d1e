"""Messages posted up the widget tree (attributes down, messages up)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from spark_tui.core.probe import ProbeResult


@dataclass
class ProbeUpdated(Message, bubble=False):
    """A fresh probe snapshot (from the probe worker)."""

    probe: ProbeResult

    def __post_init__(self) -> None:
        super().__init__()

    def can_replace(self, message: Message) -> bool:  # bursts collapse to the newest snapshot
        return isinstance(message, ProbeUpdated)


@dataclass
class TargetDeviceChosen(Message):
    """The user picked the device profile to plan for (no GPU here, or planning for another box)."""

    device_id: str

    def __post_init__(self) -> None:
        super().__init__()
