"""Device screen: each GPU as a card, host memory, and the live state; no GPU -> pick a target profile."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from spark_tui.core.probe import GpuInfo, ProbeResult


def _gib(b: int | None) -> str:
    return "not available" if b is None else f"{b / 2**30:.1f} GiB"


def _val(v, unit: str = "", fmt: str = "{:.0f}") -> str:
    return "n/a" if v is None else fmt.format(v) + unit


def gpu_card_text(g: GpuInfo, probe: ProbeResult) -> str:
    """The text of one GPU card (pure: tested without a terminal)."""
    lines = [f"[b]GPU {g.index}: {g.name}[/b]  {g.sm_name or 'sm unknown'}"]
    if g.unified_memory:
        h = probe.host
        lines.append(
            f"memory: unified with the CPU — {_gib(h.ram_total_bytes)} RAM, {_gib(h.mem_available_bytes)} "
            "MemAvailable (NVML reports no framebuffer size here)"
        )
    else:
        lines.append(f"memory: {_gib(g.memory_total_bytes)} total, {_gib(g.memory_free_bytes)} free")
    lines.append(f"driver {probe.driver_version or 'n/a'}, CUDA {probe.cuda_driver_version or 'n/a'}"
                 f", power limit {_val(g.power_limit_w, ' W')}, MIG {g.mig_mode or 'n/a'}")
    lines.append(
        f"util {_val(g.utilization_pct, '%')}  temp {_val(g.temperature_c, ' °C')}  power {_val(g.power_draw_w, ' W')}"
        f"  SM clock {_val(g.sm_clock_mhz, ' MHz')}"
    )
    return "\n".join(lines)


class DeviceScreen(Screen):
    TITLE = "Device"

    def compose(self) -> ComposeResult:
        yield Header()
        yield VerticalScroll(Static("probing…", id="device-status"), id="device-cards")
        yield Footer()

    def show_probe(self, probe: ProbeResult) -> None:
        cards = self.query_one("#device-cards", VerticalScroll)
        cards.remove_children()
        if not probe.ok:
            cards.mount(Static(f"[b]No GPU here[/b]: {probe.message}\n{probe.hint}", classes="card warn"))
        for g in probe.gpus:
            cards.mount(Static(gpu_card_text(g, probe), classes="card"))
        h = probe.host
        cards.mount(Static(f"host: {h.cpu_arch or 'n/a'}, {h.cpu_count or 'n/a'} CPUs, RAM {_gib(h.ram_total_bytes)}, "
                           f"MemAvailable {_gib(h.mem_available_bytes)}", classes="card host"))
