"""Record this machine's NVML values as a probe fixture (run it ON the GPU machine).

    python tests/support/capture_nvml.py --id h100-real

writes tests/data/probes/<id>/:
- nvml.json   the per-field values the real pynvml returns (NOT_SUPPORTED where NVML says so), in the
              format tests/support/fake_nvml.py replays;
- probe.json  the real `take_probe()` result (spark-tui probe --json) on this machine;
- source.md   where/when it was captured, with `nvidia-smi` and `nvidia-smi -q` output verbatim.
After capture, `python tests/support/fake_nvml.py --write` must leave probe.json's GPU fields unchanged
(checked by tests/unit/test_probe_fixtures.py once the files are committed).
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

def _rec(out: dict[str, Any], key: str, fn: Callable[[], Any], conv: Callable[[Any], Any] = lambda v: v) -> None:
    import pynvml

    try:
        v = fn()
    except pynvml.NVMLError_NotSupported:
        out[key] = "NOT_SUPPORTED"
        return
    except pynvml.NVMLError:
        return  # not recorded: the replay reports it as not available
    out[key] = conv(v.decode() if isinstance(v, bytes) else v)


def capture() -> dict[str, Any]:
    import pynvml

    pynvml.nvmlInit()
    system: dict[str, Any] = {}
    _rec(system, "driver_version", pynvml.nvmlSystemGetDriverVersion)
    _rec(system, "cuda_driver_version", pynvml.nvmlSystemGetCudaDriverVersion_v2,
         lambda v: f"{v // 1000}.{(v % 1000) // 10}")
    _rec(system, "nvml_version", pynvml.nvmlSystemGetNVMLVersion)
    devices = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        d: dict[str, Any] = {}
        _rec(d, "name", lambda: pynvml.nvmlDeviceGetName(h))
        _rec(d, "uuid", lambda: pynvml.nvmlDeviceGetUUID(h))
        try:
            pci = pynvml.nvmlDeviceGetPciInfo(h)
            bus = pci.busId.decode() if isinstance(pci.busId, bytes) else pci.busId
            d["pci_bus_id"] = bus
            d["pci_device_id"] = f"0x{pci.pciDeviceId:08X}"
        except pynvml.NVMLError:
            pass
        _rec(d, "compute_capability", lambda: pynvml.nvmlDeviceGetCudaComputeCapability(h), list)
        try:
            m = pynvml.nvmlDeviceGetMemoryInfo(h)
            d["memory_total_bytes"], d["memory_used_bytes"], d["memory_free_bytes"] = m.total, m.used, m.free
        except pynvml.NVMLError_NotSupported:
            d["memory"] = "NOT_SUPPORTED"
        except pynvml.NVMLError:
            pass
        _rec(d, "power_limit_w", lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(h), lambda v: v / 1000)
        _rec(d, "power_draw_w", lambda: pynvml.nvmlDeviceGetPowerUsage(h), lambda v: v / 1000)
        _rec(d, "temperature_c", lambda: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU))
        try:
            u = pynvml.nvmlDeviceGetUtilizationRates(h)
            d["utilization_gpu_pct"], d["utilization_memory_pct"] = u.gpu, u.memory
        except pynvml.NVMLError_NotSupported:
            d["utilization_gpu_pct"] = "NOT_SUPPORTED"
        except pynvml.NVMLError:
            pass
        _rec(d, "mig_mode", lambda: pynvml.nvmlDeviceGetMigMode(h),
             lambda v: "enabled" if v[0] == pynvml.NVML_DEVICE_MIG_ENABLE else "disabled")
        _rec(d, "sm_clock_mhz", lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM))
        _rec(d, "mem_clock_mhz", lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM))
        devices.append(d)
    pynvml.nvmlShutdown()
    return {"system": system, "devices": devices}


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"({' '.join(cmd)} failed: {e})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--id", required=True, help="fixture id, e.g. h100-real")
    ap.add_argument("--out", default=str(ROOT / "tests" / "data" / "probes"))
    a = ap.parse_args()
    from spark_tui.core.hardware.probe import read_host, take_probe

    now = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    host = read_host()
    data = {"id": a.id, "source": f"captured on {socket.gethostname()} by tests/support/capture_nvml.py",
            "taken_at": now, **capture(),
            "host": {"cpu_arch": host.cpu_arch, "cpu_count": host.cpu_count,
                     "ram_total_bytes": host.ram_total_bytes, "mem_available_bytes": host.mem_available_bytes}}
    d = Path(a.out) / a.id
    d.mkdir(parents=True, exist_ok=True)
    (d / "nvml.json").write_text(json.dumps(data, indent=2) + "\n")
    (d / "probe.real.json").write_text(take_probe().to_json() + "\n")
    (d / "source.md").write_text(
        f"# {a.id}: captured on real hardware\n\nCaptured {now} on `{socket.gethostname()}` "
        f"({platform.platform()}) with `python tests/support/capture_nvml.py --id {a.id}`.\n"
        "`probe.real.json` is `take_probe()` on the machine itself; `probe.json` (written by "
        "`python tests/support/fake_nvml.py --write`) is the replay of `nvml.json`.\n\n"
        f"```\n$ nvidia-smi\n{_run(['nvidia-smi'])}```\n\n```\n$ nvidia-smi -q\n{_run(['nvidia-smi', '-q'])}```\n"
    )
    print(f"wrote {d}/nvml.json, probe.real.json, source.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
