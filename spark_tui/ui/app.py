"""The spark-tui Textual app: a thin layer over spark_tui.core, one screen per step."""

from __future__ import annotations

from textual import work
from textual.app import App
from textual.binding import Binding

from spark_tui.core.probe import ProbeResult
from spark_tui.ui.messages import ProbeUpdated
from spark_tui.ui.screens.device import DeviceScreen


class SparkApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "spark-tui"
    MODES = {"device": DeviceScreen}
    DEFAULT_MODE = "device"
    BINDINGS = [
        Binding("d", "switch_mode('device')", "Device"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, url: str | None = None, probe: ProbeResult | None = None) -> None:
        super().__init__()
        self.url = url
        self.probe: ProbeResult | None = probe

    def on_mount(self) -> None:
        if self.probe is not None:
            self.post_message(ProbeUpdated(self.probe))
        else:
            self.run_probe()

    @work(thread=True, exclusive=True, group="probe", exit_on_error=False)
    def run_probe(self) -> None:
        from spark_tui.core.probe import take_probe

        self.post_message(ProbeUpdated(take_probe()))

    def on_probe_updated(self, msg: ProbeUpdated) -> None:
        self.probe = msg.probe
        scr = self.screen
        if isinstance(scr, DeviceScreen):
            scr.show_probe(msg.probe)
