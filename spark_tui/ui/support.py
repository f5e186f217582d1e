"""Adapters from the UI to the core functions the CLI uses (no logic of their own: each calls one core API)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spark_tui.core.probe import ProbeResult


def device_for_probe(probe: ProbeResult) -> str | None:
    """The device profile id the profiles core matches to the first GPU (None: no GPU, or no match)."""
    if not probe.ok:
        return None
    from spark_tui.core.profiles import catalog, match_gpu

    g = probe.gpus[0]
    m = match_gpu(catalog(), g.name, g.pci_device, g.sm)
    return None if m is None else m.device.id


def build_plan(device: str, checkpoint: str | None, overrides: dict[str, Any], probe: ProbeResult | None) -> Any:
    """The plan `spark-tui plan` would print for these choices (commands.plan.make_plan)."""
    from spark_tui.commands.plan import make_plan

    return make_plan(device=device, checkpoint=checkpoint, probe=probe if probe is not None and probe.ok else None,
                     **overrides)


def device_choices() -> list[tuple[str, str]]:
    """(label, profile id) for every device profile, GPUs first (spark-tui devices)."""
    from spark_tui.core.profiles import catalog

    devs = sorted(catalog().devices.values(), key=lambda d: (d.cpu, d.generic, d.name))
    return [(f"{d.name} ({d.id})", d.id) for d in devs]


@dataclass(frozen=True)
class DeviceVerdict:
    verdict: str  # "native NVFP4" | "fallback" | "unsupported"
    reason: str


def device_verdict(device_id: str) -> DeviceVerdict:
    """The device profile's own verdict: `supported`/`refuse_reason` and `native_nvfp4` (profiles/devices/*.toml)."""
    from spark_tui.core.profiles import catalog

    d = catalog().device(device_id)
    if not d.supported:
        return DeviceVerdict("unsupported", d.refuse_reason or "the profile marks this device unsupported")
    if d.native_nvfp4:
        return DeviceVerdict("native NVFP4", f"{d.family}: FP4 tensor cores run the NVFP4 GEMMs natively "
                             f"({d.source('native_nvfp4')})")
    return DeviceVerdict("fallback", f"{d.family}: no FP4 tensor cores; NVFP4 weights run weight-only (W4A16) or "
                         f"use the FP8 checkpoint ({d.source('native_nvfp4')})")
