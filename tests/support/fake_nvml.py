"""A pynvml-compatible module that replays a recorded `tests/data/probes/<id>/nvml.json`.

Used only where the real thing cannot run (no NVIDIA GPU on the test machine). It raises the REAL
`pynvml` exception classes: a field recorded as "NOT_SUPPORTED" raises `pynvml.NVMLError_NotSupported`;
a field the recorded output did not show raises `pynvml.NVMLError_Unknown` (the probe must report it as
not available, never invent it). Install it with `install(monkeypatch, fixture)`.

`python tests/support/fake_nvml.py --write` regenerates every `probe.json` from its `nvml.json`.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pynvml  # the real bindings: their error classes and constants

PROBES_DIR = Path(__file__).resolve().parents[1] / "data" / "probes"
NOT_SUPPORTED = "NOT_SUPPORTED"
_MIB = 1024 * 1024


def fixture_ids() -> list[str]:
    return sorted(p.parent.name for p in PROBES_DIR.glob("*/nvml.json"))


def load_fixture(fixture_id: str) -> dict[str, Any]:
    return json.loads((PROBES_DIR / fixture_id / "nvml.json").read_text())


class _Struct:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


class _Handle:
    def __init__(self, index: int, rec: dict[str, Any]) -> None:
        self.index = index
        self.rec = rec


def _err(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)  # pynvml maps the code to its subclass (NVMLError_NotSupported, ...)


# recorded NVML errors other than NOT_SUPPORTED: "LIBRARY_NOT_FOUND" (nvidia-smi: "CUDA Version: Not Found")
ERRORS = {NOT_SUPPORTED: pynvml.NVML_ERROR_NOT_SUPPORTED, "LIBRARY_NOT_FOUND": pynvml.NVML_ERROR_LIBRARY_NOT_FOUND}
VIRT_MODES = {"none": pynvml.NVML_GPU_VIRTUALIZATION_MODE_NONE,
              "passthrough": pynvml.NVML_GPU_VIRTUALIZATION_MODE_PASSTHROUGH,
              "vgpu": pynvml.NVML_GPU_VIRTUALIZATION_MODE_VGPU,
              "host_vgpu": pynvml.NVML_GPU_VIRTUALIZATION_MODE_HOST_VGPU,
              "host_vsga": pynvml.NVML_GPU_VIRTUALIZATION_MODE_HOST_VSGA}


def _field(rec: dict[str, Any], key: str) -> Any:
    if key not in rec:
        raise _err(pynvml.NVML_ERROR_UNKNOWN)
    v = rec[key]
    if isinstance(v, str) and v in ERRORS:
        raise _err(ERRORS[v])
    return v


def make_module(data: dict[str, Any]) -> types.ModuleType:
    """A module with pynvml's names, answering from `data` (the parsed nvml.json)."""
    m = types.ModuleType("pynvml")
    # the real error classes and every NVML_* constant
    for name in dir(pynvml):
        if name.startswith(("NVMLError", "NVML_")):
            setattr(m, name, getattr(pynvml, name))
    system = data.get("system", {})
    devices = data.get("devices", [])
    state = {"init": False}

    def nvmlInit() -> None:
        err = data.get("init_error")
        if err:
            raise _err(getattr(pynvml, f"NVML_ERROR_{err}"))
        state["init"] = True

    def _need_init() -> None:
        if not state["init"]:
            raise _err(pynvml.NVML_ERROR_UNINITIALIZED)

    def nvmlShutdown() -> None:
        state["init"] = False

    def nvmlSystemGetDriverVersion() -> str:
        _need_init()
        return _field(system, "driver_version")

    def nvmlSystemGetCudaDriverVersion_v2() -> int:
        _need_init()
        major, minor = str(_field(system, "cuda_driver_version")).split(".")
        return int(major) * 1000 + int(minor) * 10

    def nvmlSystemGetNVMLVersion() -> str:
        _need_init()
        return _field(system, "nvml_version")

    def nvmlDeviceGetCount() -> int:
        _need_init()
        return len(devices)

    def nvmlDeviceGetHandleByIndex(i: int) -> _Handle:
        _need_init()
        if not 0 <= i < len(devices):
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(i, devices[i])

    def nvmlDeviceGetName(h: _Handle) -> str:
        return _field(h.rec, "name")

    def nvmlDeviceGetUUID(h: _Handle) -> str:
        return _field(h.rec, "uuid")

    def nvmlDeviceGetPciInfo(h: _Handle) -> _Struct:
        if "pci_bus_id" not in h.rec and "pci_device_id" not in h.rec:
            raise _err(pynvml.NVML_ERROR_UNKNOWN)
        dev = h.rec.get("pci_device_id")
        return _Struct(busId=h.rec.get("pci_bus_id", ""), pciDeviceId=int(dev, 16) if dev else 0)

    def nvmlDeviceGetCudaComputeCapability(h: _Handle) -> tuple[int, int]:
        cc = _field(h.rec, "compute_capability")
        return (int(cc[0]), int(cc[1]))

    def nvmlDeviceGetMemoryInfo(h: _Handle, version: Any = None) -> _Struct:
        if h.rec.get("memory") == NOT_SUPPORTED:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if "memory_total_bytes" in h.rec:  # captured by tests/support/capture_nvml.py: exact bytes
            r = h.rec
            return _Struct(total=r["memory_total_bytes"], free=r.get("memory_free_bytes"), used=r.get("memory_used_bytes"))
        total = _field(h.rec, "memory_total_mib")
        used = h.rec.get("memory_used_mib")
        free = h.rec.get("memory_free_mib")
        if used is None and free is None:
            # the output showed the total only: NVML would return all three, we know one
            return _Struct(total=total * _MIB, free=None, used=None)
        if free is None:
            free = total - used  # nvmlMemory_t (v1): free = total - used
        if used is None:
            used = total - free
        return _Struct(total=total * _MIB, free=free * _MIB, used=used * _MIB)

    def nvmlDeviceGetEnforcedPowerLimit(h: _Handle) -> int:
        return int(round(_field(h.rec, "power_limit_w") * 1000))

    def nvmlDeviceGetPowerManagementLimit(h: _Handle) -> int:
        return int(round(_field(h.rec, "power_limit_w") * 1000))

    def nvmlDeviceGetPowerUsage(h: _Handle) -> int:
        return int(round(_field(h.rec, "power_draw_w") * 1000))

    def nvmlDeviceGetTemperature(h: _Handle, sensor: int) -> int:
        return int(_field(h.rec, "temperature_c"))

    def nvmlDeviceGetUtilizationRates(h: _Handle) -> _Struct:
        return _Struct(gpu=_field(h.rec, "utilization_gpu_pct"), memory=h.rec.get("utilization_memory_pct"))

    def nvmlDeviceGetMigMode(h: _Handle) -> list[int]:
        mode = _field(h.rec, "mig_mode")
        v = pynvml.NVML_DEVICE_MIG_ENABLE if mode == "enabled" else pynvml.NVML_DEVICE_MIG_DISABLE
        return [v, v]

    def nvmlDeviceGetVirtualizationMode(h: _Handle) -> int:
        return VIRT_MODES[_field(h.rec, "virtualization_mode")]

    def nvmlDeviceGetComputeRunningProcesses(h: _Handle) -> list[_Struct]:
        n = int(_field(h.rec, "compute_processes"))
        return [_Struct(pid=0, usedGpuMemory=None) for _ in range(n)]

    def nvmlDeviceGetClockInfo(h: _Handle, clock: int) -> int:
        key = "sm_clock_mhz" if clock == pynvml.NVML_CLOCK_SM else "mem_clock_mhz"
        return int(_field(h.rec, key))

    for fn in list(locals().values()):
        if callable(fn) and getattr(fn, "__name__", "").startswith("nvml"):
            setattr(m, fn.__name__, fn)
    return m


def fixture_host(data: dict[str, Any]):
    """The HostInfo the recorded output shows (fields it does not show stay None)."""
    from spark_tui.core.hardware.probe import HostInfo

    return HostInfo(**data.get("host", {}))


def install(monkeypatch: Any, data: dict[str, Any] | str) -> types.ModuleType:
    """Put the replay in place of `pynvml` and reset spark_tui's NVML wrapper."""
    from spark_tui.core.hardware import nvml

    if isinstance(data, str):
        data = load_fixture(data)
    mod = make_module(data)
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    nvml._reset()
    monkeypatch.setattr(nvml, "_initialized", False)
    return mod


def probe_from_fixture(fixture_id: str):
    """ProbeResult that take_probe() gives on the recorded machine (taken_at pinned to the source date)."""
    import dataclasses

    from spark_tui.core.hardware import nvml
    from spark_tui.core.hardware.probe import take_probe

    data = load_fixture(fixture_id)
    saved = sys.modules.get("pynvml")
    sys.modules["pynvml"] = make_module(data)
    nvml._reset()
    try:
        r = take_probe(host=fixture_host(data))
    finally:
        if saved is not None:
            sys.modules["pynvml"] = saved
        nvml._reset()
    return dataclasses.replace(r, taken_at=data.get("taken_at"), source=f"fixture:{fixture_id}")


def main(argv: list[str]) -> int:
    if argv != ["--write"]:
        print("usage: python tests/support/fake_nvml.py --write", file=sys.stderr)
        return 2
    for fid in fixture_ids():
        out = PROBES_DIR / fid / "probe.json"
        out.write_text(probe_from_fixture(fid).to_json() + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    raise SystemExit(main(sys.argv[1:]))
