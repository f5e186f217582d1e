"""`spark-tui checkpoints [--device ID] [--json]`: the checkpoint catalog; for a device, recommended first."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", metavar="ID", help="rank for this device profile (recommended first, with why)")
    p.add_argument("--json", action="store_true", help="print as JSON")


def rank(cat, device_id: str | None) -> list[tuple[object, str]]:  # type: ignore[no-untyped-def]
    """(checkpoint, why) with the planner's choice first, then native formats, then the rest."""
    from spark_tui.core.planner import choose_checkpoint, resolve_target

    cks = sorted(cat.checkpoints.values(), key=lambda c: c.id)
    if not device_id:
        return [(c, "") for c in cks]
    t = resolve_target(cat, device_id)
    sm = t.sm or 0
    if not t.profile.supported or t.profile.cpu:
        why = t.profile.refuse_reason or "the cpu-test device serves local tiny models (--model-path)"
        return [(c, why) for c in cks]
    best, reason, _, _ = choose_checkpoint(cat, t, None)
    out: list[tuple[object, str]] = [(best, "recommended: " + reason)]
    for c in cks:
        if c.id == best.id:
            continue
        if c.min_sm_native is not None and sm < c.min_sm_native:
            why = f"not native on sm_{sm} (needs sm_{c.min_sm_native}+): {c.hopper_path or 'fallback path not verified'}"
        elif f"sm_{sm}" in c.recommended_on:
            why = f"native; published results on sm_{sm}"
        else:
            why = "native" if c.format is not None else "native NVFP4 assumed; quantization format not verified"
        size = c.size_on_disk_gb
        if size is not None and t.total_bytes and size * 1e9 > t.total_bytes * 0.9:
            why = f"does not fit: {size:g} GB of weights on a {t.total_bytes / 2**30:.0f} GiB card"
        out.append((c, why))
    def order(cw: tuple[object, str]) -> tuple[int, str]:
        why = cw[1]
        if "does not fit" in why or "not native" in why:
            return 3, cw[0].id  # type: ignore[attr-defined]
        if "published results" in why:
            return 0, cw[0].id  # type: ignore[attr-defined]
        return (2 if "not verified" in why or cw[0].format is None else 1), cw[0].id  # type: ignore[attr-defined]

    return [out[0]] + sorted(out[1:], key=order)


def run(args: argparse.Namespace) -> int:
    from spark_tui.core.profiles import catalog

    cat = catalog()
    ranked = rank(cat, args.device)
    if args.json:
        out = []
        for c, why in ranked:
            out.append({"id": c.id, "repo_id": c.repo_id, "name": c.name, "format": c.format,  # type: ignore[attr-defined]
                        "size_on_disk_gb": c.size_on_disk_gb, "min_sm_native": c.min_sm_native,  # type: ignore[attr-defined]
                        "mtp_head": c.mtp_head, "mtp_dtype": c.mtp_dtype, "license": c.license,  # type: ignore[attr-defined]
                        "accuracy": c.accuracy, "perplexity": c.perplexity, "unknown": list(c.unknown),  # type: ignore[attr-defined]
                        "why": why or None, "sources": c.sources, "path": c.path})  # type: ignore[attr-defined]
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for c, why in ranked:
        size = "size not published" if c.size_on_disk_gb is None else f"{c.size_on_disk_gb:g} GB"  # type: ignore[attr-defined]
        print(f"{c.id:<20} {c.repo_id:<38} {c.format or 'format not verified':<28} {size}")  # type: ignore[attr-defined]
        if why:
            print(f"{'':<20}   {why}")
    return 0
