"""`spark-tui probe [--json] [--save FILE] [--probe-file FILE]`: this machine's GPUs (NVML) and host memory.

Exit 0 when at least one GPU was read; exit 3 (ExitCode.NO_GPU) when there is no NVML library, no driver
or no GPU. The status line (human) or the JSON (`--json`, with its `status` field) is printed either way.
"""

from __future__ import annotations

import argparse
import sys

from spark_tui.core.hardware.live import format_gib
from spark_tui.core.hardware.probe import GpuInfo, HostInfo, ProbeResult
from spark_tui.errors import ExitCode, UsageError

def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the probe as JSON (schema: README 'Probe JSON')")
    p.add_argument("--save", metavar="FILE", help="also write the JSON to FILE (replay it with `plan --probe-file FILE`)")
    p.add_argument("--force", action="store_true", help="let --save overwrite an existing file")
    p.add_argument("--probe-file", metavar="FILE", help="show a saved probe instead of reading this machine")


def _opt(v: object, unit: str = "", fmt: str = "{:g}") -> str:
    return "n/a" if v is None else fmt.format(v) + unit


def memory_line(g: GpuInfo, host: HostInfo) -> str:
    if g.unified_memory:
        src = (
            f"{format_gib(host.ram_total_bytes)} RAM, {format_gib(host.mem_available_bytes)} MemAvailable"
            if host.ram_total_bytes is not None
            else "host RAM not read"
        )
        nvml = (
            "; NVML gives no GPU memory figure"
            if g.memory_total_bytes is None
            else f"; NVML reports {format_gib(g.memory_total_bytes)} total"
        )
        return f"unified (shared with the CPU): {src}{nvml}"
    if g.memory_total_bytes is None:
        return "not available from NVML"
    if g.memory_free_bytes is None:
        return f"{format_gib(g.memory_total_bytes)} total"
    return f"{format_gib(g.memory_total_bytes)} total / {format_gib(g.memory_free_bytes)} free"


def host_line(h: HostInfo) -> str:
    parts = [h.cpu_arch or "arch n/a", f"{h.cpu_count} CPUs" if h.cpu_count else "CPUs n/a",
             f"{format_gib(h.ram_total_bytes)} RAM", f"{format_gib(h.mem_available_bytes)} MemAvailable"]
    return "host   " + ", ".join(parts) + (f"  ({h.os})" if h.os else "")


def render(r: ProbeResult) -> str:
    """The human output: one block per GPU, then the host line."""
    lines: list[str] = []
    if not r.ok:
        lines.append(f"probe: {r.status}: {r.message}")
        if r.hint:
            lines.append(f"  hint: {r.hint}")
    else:
        cuda = r.cuda_driver_version or ("Not Found (no libcuda.so.1)" if r.cuda_driver_error == "library_not_found"
                                          else "n/a")
        drv = f"driver {r.driver_version or 'n/a'}, CUDA {cuda}"
        lines.append(f"{len(r.gpus)} GPU{'s' if len(r.gpus) != 1 else ''}, {drv}")
        if r.vgpu:
            lines.append(f"vGPU: {r.vgpu.get('message', '')}")
            if r.vgpu.get("hint"):
                lines.append(f"  what to do: {r.vgpu['hint']}")
        for g in r.gpus:
            lines.append(f"GPU {g.index}  {g.name}  {g.sm_name or 'sm n/a'}  {g.pci_bus_id or ''}".rstrip())
            lines.append(f"  memory  {memory_line(g, r.host)}")
            lines.append(f"  power   limit {_opt(g.power_limit_w, ' W')}   MIG {g.mig_mode or 'n/a'}")
            lines.append(
                f"  now     {_opt(g.utilization_pct, '%')} util, {_opt(g.temperature_c, ' C')}, "
                f"{_opt(g.power_draw_w, ' W')}, SM {_opt(g.sm_clock_mhz, ' MHz')}"
            )
    lines.append(host_line(r.host))
    if r.source != "nvml":
        lines.append(f"(replayed from {r.source.removeprefix('file:')})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.probe_file:
        r = ProbeResult.load(args.probe_file)
    else:
        from spark_tui.core.hardware.probe import take_probe

        r = take_probe()
    if args.save:  # atomically, never over an existing file without --force, never onto a device or FIFO
        from pathlib import Path

        from spark_tui.core.export.files import write_files

        try:
            write_files([(Path(args.save), r.to_json() + "\n", 0o644)], force=args.force)
        except UsageError as e:
            hint = "add --force to overwrite it" if "already exists" in e.message else "pick a writable path for --save"
            raise UsageError(e.message, hint) from None
    out = r.to_json() if args.json else render(r)
    print(out, file=sys.stdout)
    return int(ExitCode.OK) if r.ok else int(ExitCode.NO_GPU)
