"""Live GPU state as `spark-tui monitor` and the TUI's Dashboard show it: one probe (take_probe) folded into a plain
dict (the monitor's JSON `gpu` field) and one line of text."""

from __future__ import annotations

from typing import Any

_GIB = 1024**3


def format_gib(b: float | None) -> str:
    """Bytes as `12.3 GiB`, or `n/a` when not available (never 0): probe and monitor print memory this way."""
    return "n/a" if b is None else f"{b / _GIB:.1f} GiB"


def gpu_state() -> dict[str, Any]:
    """{"status": ..., "gpus": [...], "mem_available_bytes": ...}; status "unavailable" if the probe code
    is missing, otherwise the probe's status ("ok", "no_nvml", "no_driver", "no_gpu", "error")."""
    try:
        from spark_tui.core.hardware.probe import take_probe

        pr = take_probe()
    except (ImportError, AttributeError):
        return {"status": "unavailable", "message": "GPU probe not available in this build", "gpus": []}
    except Exception as e:  # NVML can fail in many ways; the monitor keeps going without GPU state
        return {"status": "error", "message": f"{e.__class__.__name__}: {e}", "gpus": []}
    gpus = []
    for g in pr.gpus:
        gpus.append({
            "index": g.index, "name": g.name, "utilization_pct": g.utilization_pct,
            "memory_used_bytes": g.memory_used_bytes, "memory_total_bytes": g.memory_total_bytes,
            "unified_memory": g.unified_memory, "temperature_c": g.temperature_c, "power_draw_w": g.power_draw_w,
        })
    return {"status": pr.status, "message": pr.message, "gpus": gpus,
            "mem_available_bytes": pr.host.mem_available_bytes}


def format_gpu(g: dict[str, Any] | None) -> str:
    """One line for a gpu_state() dict: per GPU utilisation, memory, temperature and power; or why there is none."""
    if g is None:
        return ""
    if g["status"] != "ok" or not g["gpus"]:
        return f"GPU: no GPU ({g['status']})" if g["status"] in ("no_nvml", "no_driver", "no_gpu") \
            else f"GPU: n/a ({g.get('message') or g['status']})"
    parts = []
    for d in g["gpus"]:
        util = "n/a" if d["utilization_pct"] is None else f"{d['utilization_pct']:.0f}%"
        if d["unified_memory"]:
            mem = f"unified, MemAvailable {format_gib(g.get('mem_available_bytes'))}"
        else:
            mem = f"{format_gib(d['memory_used_bytes'])}/{format_gib(d['memory_total_bytes'])}"
        temp = "" if d["temperature_c"] is None else f" {d['temperature_c']:.0f}C"
        power = "" if d["power_draw_w"] is None else f" {d['power_draw_w']:.0f}W"
        parts.append(f"GPU{d['index']} {util} {mem}{temp}{power}")
    return " | ".join(parts)
