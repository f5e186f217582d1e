"""Messages posted up the widget tree (attributes down, messages up).

Workers (threads) talk to the UI only through these. Dataclasses: Message.__post_init__ initialises the
message part (Textual's dataclass support), so none of them defines its own. High-rate ones (live GPU state, metrics samples,
download progress) are `bubble=False` and `can_replace` so a burst collapses to the newest value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.message import Message

from spark_tui.core.hardware.probe import ProbeResult

if TYPE_CHECKING:
    from kernels_check.model import CheckResult, Report
    from kernels_check.runner import PlannedCheck
    from spark_tui.core.observe.metrics import Stats
    from spark_tui.core.runtime.download import Event as DownloadProgress

if TYPE_CHECKING:  # lazy at run time (the app's first paint imports none of these); typed for the checker
    from spark_tui.core.hardware.memguard import GuardEvent
    from spark_tui.core.observe.ablate import SavedAblation
    from spark_tui.core.runtime.diagnose import Diagnosis
    from spark_tui.core.runtime.launch import LaunchStep
    from spark_tui.core.runtime.supervisor import Ready, SupervisorEvent, Verification


@dataclass
class ProbeUpdated(Message, bubble=False):
    """A fresh probe snapshot (from the probe worker)."""

    probe: ProbeResult

    def can_replace(self, message: Message) -> bool:  # bursts collapse to the newest snapshot
        return isinstance(message, ProbeUpdated)


@dataclass
class TargetDeviceChosen(Message):
    """The user picked the device profile to plan for (no GPU here, or planning for another box)."""

    device_id: str


@dataclass
class CheckpointChosen(Message):
    """The user picked a checkpoint profile on the Model screen."""

    checkpoint_id: str


@dataclass
class OverridesChanged(Message):
    """The Plan screen's override fields changed (context, concurrency, goal, MTP tokens, FLAG=VALUE)."""

    overrides: dict[str, Any]


@dataclass
class CacheScanned(Message, bubble=False):
    """Result of the HF cache scan: repo id -> (local snapshot path, size on disk in bytes)."""

    cached: dict[str, tuple[str, int]]
    error: str = ""


@dataclass
class MetricsSample(Message, bubble=False):
    """One /metrics scrape folded into window statistics (metrics.Stats), plus the GPU line."""

    stats: Stats | None  # None until two scrapes exist
    error: str = ""
    gpu: str = ""
    note: str = ""  # metrics.Snapshot.scrape_note(): malformed lines skipped, body cut

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, MetricsSample)


@dataclass
class DownloadEvent(Message, bubble=False):
    """One event of spark_tui.core.runtime.download (DownloadStarted, FileProgress, FileDone, ...)."""

    event: DownloadProgress

    def can_replace(self, message: Message) -> bool:  # only progress ticks of the same file collapse
        from spark_tui.core.runtime.download import FileProgress

        return (isinstance(message, DownloadEvent) and isinstance(self.event, FileProgress)
                and isinstance(message.event, FileProgress) and message.event.path == self.event.path)


@dataclass
class DiskChecked(Message, bubble=False):
    """Before a download: where it goes, how much is missing and how much room there is (download.check_disk)."""

    target: str
    free_bytes: int
    missing_bytes: int


@dataclass
class ServerEvent(Message, bubble=False):
    """One supervisor event: LogLine, PhaseChanged, LogEvent, Ready or Exited."""

    event: SupervisorEvent


@dataclass
class LaunchStepDone(Message, bubble=False):
    """A step of the launch sequence (spark_tui.core.runtime.launch): PreflightDone (its notes), Started, GuardWatching."""

    step: LaunchStep


@dataclass
class GuardAlert(Message, bubble=False):
    """The memory guard's warning, stop (with its diagnosis) or why it cannot run."""

    event: GuardEvent


@dataclass
class LaunchVerified(Message, bubble=False):
    """The server is ready; what vLLM logged compared with the plan."""

    ready: Ready
    verification: Verification


@dataclass
class LaunchFailed(Message, bubble=False):
    """The start failed before or during startup: the error, and the log's diagnoses (with fixes where known)."""

    message: str
    hint: str
    diagnoses: list[Diagnosis]


@dataclass
class ServerStopped(Message, bubble=False):
    """The server was stopped from the app (`how`: clean / killed / gone); relaunch after when `then_launch`."""

    how: str
    then_launch: bool = False


@dataclass
class SelftestResult(Message, bubble=False):
    """One kernels_check CheckResult as it finishes, or the final Report (`report`)."""

    result: CheckResult | None = None
    report: Report | None = None
    planned: list[PlannedCheck] | None = None  # from plan_selftest()



@dataclass
class AblationsLoaded(Message, bubble=False):
    """The saved `spark-tui ablate` results (newest first) and the files there that are not results."""

    saved: list[SavedAblation]
    bad: list[str]
