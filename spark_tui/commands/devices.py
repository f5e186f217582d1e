"""`spark-tui devices [--json]`: the device profiles (shipped + your overrides) and their recipes."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spark_tui.core.catalog.profiles import DeviceProfile


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print as JSON")


def device_dict(d: DeviceProfile) -> dict[str, Any]:
    return {
        "id": d.id, "name": d.name, "sm": d.sm, "family": d.family, "memory_gb": d.memory_gb,
        "memory_total_bytes": d.memory_total_bytes, "unified_memory": d.unified_memory,
        "pci_device_ids": list(d.pci_device_ids), "name_patterns": list(d.name_patterns),
        "native_nvfp4": d.native_nvfp4, "supported": d.supported, "refuse_reason": d.refuse_reason or None,
        "generic": d.generic, "sm_range": [d.sm_min, d.sm_max] if d.generic else None,
        "cuda_total_memory_gib": d.cuda_total_memory_gib, "typical_mem_available_gib": d.typical_mem_available_gib,
        "primary_recipe": d.primary_recipe,
        "recipes": [{"id": r.id, "checkpoint": r.checkpoint, "title": r.title, "source": r.source, "args": list(r.args)}
                    for r in d.recipes],
        "notes": list(d.notes), "sources": d.sources, "path": d.path,
    }


def run(args: argparse.Namespace) -> int:
    from spark_tui.core.catalog.profiles import catalog, nvfp4_verdict

    cat = catalog()
    devs = sorted(cat.devices.values(), key=lambda d: (d.generic, d.cpu, -(d.sm or 0), d.id))
    if args.json:
        json.dump([device_dict(d) for d in devs], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"{'id':<20} {'sm':<7} {'memory':<12} {'NVFP4':<7} name")
    for d in devs:
        sm = f"sm_{d.sm}" if d.sm else (f"sm_{d.sm_min}-{d.sm_max}" if d.generic else "-")
        memory = "-" if d.memory_gb is None else f"{d.memory_gb:g} GB" + (" UMA" if d.unified_memory else "")
        nv = {"native NVFP4": "native", "fallback": "dequant", "unsupported": "-"}[nvfp4_verdict(d)[0]]
        print(f"{d.id:<20} {sm:<7} {memory:<12} {nv:<7} {d.name}" + ("" if d.supported else "  [not supported]"))
        for r in d.recipes:
            print(f"{'':<20}   recipe {r.id}: {r.title}")
    return 0
