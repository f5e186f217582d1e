"""Adapters from the UI to the core functions the CLI uses (no logic of their own: each calls one core API)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spark_tui.core.hardware.probe import ProbeResult

if TYPE_CHECKING:
    from spark_tui.core.catalog.profiles import CheckpointProfile


def device_for_probe(probe: ProbeResult | None) -> str | None:
    """The device profile id the profiles core matches to the first GPU (None: no GPU, or no match)."""
    if probe is None or not probe.ok:
        return None
    from spark_tui.core.catalog.profiles import catalog, match_gpu

    g = probe.gpus[0]
    m = match_gpu(catalog(), g.name, g.pci_device, g.sm)
    return None if m is None else m.device.id


OVERRIDE_KEYS = ("context", "concurrency", "goal", "mtp", "set_flags", "model_path")


def build_plan(device: str | None, checkpoint: str | None, overrides: dict[str, Any], probe: ProbeResult | None) -> Any:
    """The plan `spark-tui plan` would print for these choices (core.planner.make_plan): the chosen device
    profile, else the probed GPU."""
    import os

    from spark_tui.core.planning.planner import make_plan
    from spark_tui.core.catalog.vllm_compat import installed_release
    from spark_tui.errors import UsageError

    kw = {k: v for k, v in overrides.items() if k in OVERRIDE_KEYS and v not in (None, "", [])}
    version = installed_release()
    if kw.get("model_path") and not os.path.isdir(kw["model_path"]):
        raise UsageError(f"{kw['model_path']} is not a directory", "serve a checkpoint folder (with config.json)")
    return make_plan(device=device, probe=None if device else probe, checkpoint=checkpoint,
                     vllm_version=version, **kw)


def checkpoint_rows(device: str | None, probe: ProbeResult | None) -> tuple[list[tuple[CheckpointProfile, str, list[str]]], str]:
    """Every checkpoint profile for the target as (profile, why, warnings): the planner's own choice first
    (core.planner.choose_checkpoint with no --checkpoint), then the rest with the warnings the planner gives
    when that one is forced. Returns the rows and the target's name."""
    from spark_tui.core.planning.planner import choose_checkpoint, resolve_target
    from spark_tui.core.catalog.profiles import catalog

    cat = catalog()
    if device is None and (probe is None or not probe.ok):
        return [(c, "", []) for c in cat.checkpoints.values()], "no device chosen yet (Device step)"
    t = resolve_target(cat, device, None if device else probe)
    best, why, source, _ = choose_checkpoint(cat, t, None)
    rows: list[tuple[CheckpointProfile, str, list[str]]] = [(best, f"{why} [{source}]", [])]
    for c in sorted(cat.checkpoints.values(), key=lambda c: c.id):
        if c.id == best.id:
            continue
        _, _, _, warns = choose_checkpoint(cat, t, c.id)
        rows.append((c, "", warns))
    return rows, f"{t.name} ({t.profile.id})"


def device_choices() -> list[tuple[str, str]]:
    """(label, profile id) for every device profile, GPUs first (spark-tui devices)."""
    from spark_tui.core.catalog.profiles import catalog

    devs = sorted(catalog().devices.values(), key=lambda d: (d.cpu, d.generic, d.name))
    return [(f"{d.name} ({d.id})", d.id) for d in devs]


@dataclass(frozen=True)
class DeviceVerdict:
    verdict: str  # "native NVFP4" | "fallback" | "unsupported"
    reason: str


def device_verdict(device_id: str) -> DeviceVerdict:
    """The device profile's verdict (core.profiles.nvfp4_verdict)."""
    from spark_tui.core.catalog.profiles import catalog, nvfp4_verdict

    return DeviceVerdict(*nvfp4_verdict(catalog().device(device_id)))
