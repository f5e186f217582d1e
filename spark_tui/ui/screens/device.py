"""Device screen: each GPU as a card (name, SM, memory, driver/CUDA, live state) with the verdict from the
profiles core; no GPU -> says so and lets the user pick a target device profile to plan for."""

from __future__ import annotations

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Select, Static

from spark_tui.core.hardware.probe import GpuInfo, ProbeResult
from spark_tui.ui.messages import TargetDeviceChosen
from spark_tui.ui.screens.base import StepScreen


def _gib(b: int | None) -> str:
    return "not available" if b is None else f"{b / 2**30:.1f} GiB"


def _val(v, unit: str = "", fmt: str = "{:.0f}") -> str:
    return "n/a" if v is None else fmt.format(v) + unit


def gpu_card_text(g: GpuInfo, probe: ProbeResult) -> str:
    """The text of one GPU card (pure: tested without a terminal)."""
    lines = [f"[b]GPU {g.index}: {escape(g.name)}[/b]  {g.sm_name or 'sm unknown'}"]
    if g.unified_memory:
        h = probe.host
        lines.append(
            f"memory: unified with the CPU: {_gib(h.ram_total_bytes)} RAM, {_gib(h.mem_available_bytes)} "
            "MemAvailable (NVML reports no framebuffer size here)"
        )
    else:
        lines.append(f"memory: {_gib(g.memory_total_bytes)} total, {_gib(g.memory_free_bytes)} free")
    lines.append(escape(f"driver {probe.driver_version or 'n/a'}, CUDA {probe.cuda_driver_version or 'n/a'}"
                        f", power limit {_val(g.power_limit_w, ' W')}, MIG {g.mig_mode or 'n/a'}"))
    lines.append(
        f"util {_val(g.utilization_pct, '%')}  temp {_val(g.temperature_c, ' °C')}  power {_val(g.power_draw_w, ' W')}"
        f"  SM clock {_val(g.sm_clock_mhz, ' MHz')}"
    )
    return "\n".join(lines)


def verdict_text(device_id: str | None) -> str:
    """The verdict line for the matched device profile (spark_tui.ui.support.device_verdict)."""
    from spark_tui.ui.support import device_verdict

    if device_id is None:
        return "[b]verdict:[/b] no device profile matches this GPU; pick a target below to plan for"
    v = device_verdict(device_id)
    colour = {"native NVFP4": "green", "fallback": "yellow", "unsupported": "red"}.get(v.verdict, "white")
    return f"[b]verdict ({escape(device_id)}):[/b] [{colour}]{v.verdict}[/] — {escape(v.reason)}"


class DeviceScreen(StepScreen):
    MODE = "device"
    BINDINGS = [("t", "focus_target", "Target device")]

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="device-body"):
            yield Static("probing…", id="device-status")
            yield Vertical(id="device-cards")
            yield Static("Plan for device profile:", id="target-label")
            yield Select([], prompt="(choose a device profile)", id="target", allow_blank=True)

    def on_mount(self) -> None:
        self.profiles_ready = False
        self.watch(self.app, "probe", self.show_probe, init=True)
        self.watch(self.app, "target_device", self._target_changed, init=True)
        self.load_profiles()

    @work(thread=True, exclusive=True, group="profiles", exit_on_error=False)
    def load_profiles(self) -> None:
        """Read the device profiles (TOML) off the UI thread; the first paint does not wait for them."""
        from spark_tui.ui.support import device_choices

        choices = device_choices()  # a broken profile raises ProfileError: the worker handler notifies
        self.app.call_from_thread(self._profiles_loaded, choices)

    def _profiles_loaded(self, choices: list[tuple[str, str]]) -> None:
        self.profiles_ready = True
        sel = self.query_one("#target", Select)
        with self.prevent(Select.Changed):
            sel.set_options(choices)
            if self.app.target_device:
                sel.value = self.app.target_device
        self.show_probe(self.app.probe)

    def _target_changed(self, did: str | None) -> None:
        sel = self.query_one("#target", Select)
        if did is not None and sel.value != did and self.profiles_ready:
            with self.prevent(Select.Changed):
                sel.value = did
        self.show_probe(self.app.probe)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "target" and isinstance(event.value, str):
            self.post_message(TargetDeviceChosen(event.value))

    def action_focus_target(self) -> None:
        self.query_one("#target", Select).focus()

    def _verdict(self, probe: ProbeResult) -> str:
        if not self.profiles_ready:
            return "[b]verdict:[/b] reading the device profiles …"
        from spark_tui.ui.support import device_for_probe

        return verdict_text(self.app.target_device or device_for_probe(probe))

    def show_probe(self, probe: ProbeResult | None) -> None:
        status = self.query_one("#device-status", Static)
        if probe is None:
            status.update("probing…")
            return
        src = "" if probe.source == "nvml" else f"  (recorded probe: {escape(probe.source)})"
        cards = self.query_one("#device-cards", Vertical)
        texts: list[tuple[str, str]] = []
        if not probe.ok:
            status.update(f"[b]No GPU here[/b]{src}: {escape(probe.message)}\n{escape(probe.hint)}\n"
                          "Pick the device you plan for below (t); every other step works without a GPU.")
        else:
            status.update(f"{len(probe.gpus)} GPU{'s' if len(probe.gpus) > 1 else ''}{src}")
            for g in probe.gpus:
                texts.append((gpu_card_text(g, probe) + "\n" + self._verdict(probe), "card"))
        if not probe.ok and self.app.target_device:
            texts.append((self._verdict(probe), "card warn"))
        h = probe.host
        texts.append((escape(f"host: {h.cpu_arch or 'n/a'}, {h.cpu_count or 'n/a'} CPUs, RAM {_gib(h.ram_total_bytes)}, "
                             f"MemAvailable {_gib(h.mem_available_bytes)}"), "card host"))
        existing = list(cards.query(Static))
        if len(existing) == len(texts):  # live refresh: update in place (no flicker, keeps scroll)
            for w, (t, cls) in zip(existing, texts):
                w.update(t)
                w.set_classes(cls)
            return
        cards.remove_children()
        cards.mount_all([Static(t, classes=cls) for t, cls in texts])
