"""`spark-tui checkpoints [--device ID] [--vllm-version V] [--json]`: the checkpoint catalog with each
checkpoint's quantization structure; for a device, ranked by the MoE kernel vLLM will run for it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spark_tui.core.catalog.profiles import Catalog


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", metavar="ID", help="rank for this device profile (best first, with the kernel path)")
    p.add_argument("--vllm-version", metavar="V", help="vLLM release whose kernel choice to predict "
                   "(default: the installed vLLM, else 0.33.0)")
    p.add_argument("--json", action="store_true", help="print as JSON")


def _version(args: argparse.Namespace) -> str:
    from spark_tui.core.catalog.vllm_compat import DEFAULT_VERSION, installed_release, parse_version
    from spark_tui.errors import UsageError

    v = args.vllm_version or installed_release() or DEFAULT_VERSION
    if parse_version(v) is None:
        raise UsageError(f"--vllm-version {v!r} is not a version", "for example: --vllm-version 0.33.0")
    return v


def rank(cat: Catalog, device_id: str | None, vllm_version: str) -> tuple[list[tuple[object, object | None]], str]:
    """[(checkpoint, kernel_paths.Ranked or None)] best first, and a note on the device."""
    from spark_tui.core.catalog.kernel_paths import rank_checkpoints

    cks = sorted(cat.checkpoints.values(), key=lambda c: c.id)
    if not device_id:
        return [(c, None) for c in cks], ""
    d = cat.device(device_id)
    sm = d.sm if d.sm is not None else d.sm_min
    if d.cpu or not d.supported or sm is None or sm < 75:
        why = d.refuse_reason or ("the cpu-test device serves local tiny models (--model-path)" if d.cpu else
                                  "vLLM's MoE kernels for these checkpoints need compute capability 7.5 or newer")
        return [(c, None) for c in cks], why
    mem = d.memory_total_bytes
    ranked = rank_checkpoints(cks, sm, vllm_version, None if mem is None else mem / 2**30)
    by_id = {c.id: c for c in cks}
    return [(by_id[r.checkpoint_id], r) for r in ranked], f"{d.id}: sm_{sm}, vLLM {vllm_version}"


def run(args: argparse.Namespace) -> int:
    from spark_tui.core.catalog.profiles import catalog

    cat = catalog()
    version = _version(args)
    ranked, note = rank(cat, args.device, version)
    if args.json:
        out = []
        for c, r in ranked:
            k = getattr(r, "kernel", None)
            out.append({"id": c.id, "repo_id": c.repo_id, "name": c.name, "format": c.format,  # type: ignore[attr-defined]
                        **c.structure(), "group_size": c.group_size,  # type: ignore[attr-defined]
                        "size_on_disk_gb": c.size_on_disk_gb, "min_sm_native": c.min_sm_native,  # type: ignore[attr-defined]
                        "mtp_head": c.mtp_head, "mtp_dtype": c.mtp_dtype, "license": c.license,  # type: ignore[attr-defined]
                        "accuracy": c.accuracy, "perplexity": c.perplexity, "unknown": list(c.unknown),  # type: ignore[attr-defined]
                        "rank": getattr(r, "rank", None), "tier": getattr(r, "tier", None),
                        "why": getattr(r, "reason", None) or (note or None),
                        "kernel": k.to_dict() if k is not None else None,
                        "figures": [f.line() for f in getattr(r, "figures", ())],
                        "sources": c.sources, "path": c.path})  # type: ignore[attr-defined]
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if note:
        print(note)
    for c, r in ranked:
        size = "size not published" if c.size_on_disk_gb is None else f"{c.size_on_disk_gb:g} GB"  # type: ignore[attr-defined]
        head = f"{r.rank}. " if r is not None else ""  # type: ignore[attr-defined]
        print(f"{head}{c.id:<20} {c.repo_id:<38} {c.format or 'format not verified':<29} {size}")  # type: ignore[attr-defined]
        s = c.structure()  # type: ignore[attr-defined]
        parts = ", ".join(f"{k} {v or 'not verified'}" for k, v in s.items()
                          if k in ("experts", "attention", "deltanet", "lm_head", "mtp"))
        print(f"{'':<4}{parts}")
        if r is not None:
            print(f"{'':<4}{r.reason}")  # type: ignore[attr-defined]
            k = r.kernel  # type: ignore[attr-defined]
            if k is not None:
                print(f"{'':<4}source: {k.source}" + ("" if k.verified else f" (rules of vLLM {k.tag})"))
            for f in r.figures:  # type: ignore[attr-defined]
                print(f"{'':<4}published: {f.line()}")
        elif note:
            print(f"{'':<4}{note}")
    return 0
