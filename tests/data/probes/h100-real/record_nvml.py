"""Record every NVML value spark-tui's probe reads, as raw results or the NVML error name, to JSON.

Run on a machine with an NVIDIA GPU: `python bench/record_nvml.py > nvml-record.json`. The output is the
source for the recorded probe fixtures under tests/data/probes/ (test doubles built from real outputs).
"""

from __future__ import annotations

import json
import platform
import sys


def main() -> int:
    import pynvml

    def call(fn, *a):
        try:
            v = fn(*a)
        except pynvml.NVMLError as e:
            return {"error": type(e).__name__, "code": getattr(e, "value", None), "text": str(e)}
        except Exception as e:  # a binding missing from this pynvml version
            return {"error": type(e).__name__, "text": str(e)}
        if isinstance(v, bytes):
            v = v.decode()
        if hasattr(v, "_fields_"):
            v = {k: (getattr(v, k).decode() if isinstance(getattr(v, k), bytes) else getattr(v, k))
                 for k, _ in v._fields_ if not k.startswith("reserved")}
        if isinstance(v, tuple):
            v = list(v)
        return v

    pynvml.nvmlInit()
    out = {
        "pynvml_version": getattr(pynvml, "__version__", None),
        "driver_version": call(pynvml.nvmlSystemGetDriverVersion),
        "nvml_version": call(pynvml.nvmlSystemGetNVMLVersion),
        "cuda_driver_version": call(pynvml.nvmlSystemGetCudaDriverVersion_v2),
        "device_count": call(pynvml.nvmlDeviceGetCount),
        "devices": [],
    }
    for i in range(out["device_count"] if isinstance(out["device_count"], int) else 0):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        d = {
            "index": i,
            "name": call(pynvml.nvmlDeviceGetName, h),
            "uuid": call(pynvml.nvmlDeviceGetUUID, h),
            "pci_info": call(pynvml.nvmlDeviceGetPciInfo, h),
            "cuda_compute_capability": call(pynvml.nvmlDeviceGetCudaComputeCapability, h),
            "memory_info": call(pynvml.nvmlDeviceGetMemoryInfo, h),
            "power_management_limit_mw": call(pynvml.nvmlDeviceGetPowerManagementLimit, h),
            "enforced_power_limit_mw": call(pynvml.nvmlDeviceGetEnforcedPowerLimit, h),
            "power_usage_mw": call(pynvml.nvmlDeviceGetPowerUsage, h),
            "mig_mode": call(pynvml.nvmlDeviceGetMigMode, h),
            "utilization_rates": call(pynvml.nvmlDeviceGetUtilizationRates, h),
            "temperature_gpu_c": call(pynvml.nvmlDeviceGetTemperature, h, pynvml.NVML_TEMPERATURE_GPU),
            "clock_sm_mhz": call(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_SM),
            "clock_mem_mhz": call(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_MEM),
            "max_clock_sm_mhz": call(pynvml.nvmlDeviceGetMaxClockInfo, h, pynvml.NVML_CLOCK_SM),
            "brand": call(pynvml.nvmlDeviceGetBrand, h),
            "architecture": call(pynvml.nvmlDeviceGetArchitecture, h),
            "num_gpu_cores": call(getattr(pynvml, "nvmlDeviceGetNumGpuCores", lambda h: None), h),
            "memory_bus_width": call(getattr(pynvml, "nvmlDeviceGetMemoryBusWidth", lambda h: None), h),
            "persistence_mode": call(pynvml.nvmlDeviceGetPersistenceMode, h),
            "compute_mode": call(pynvml.nvmlDeviceGetComputeMode, h),
            "vbios_version": call(pynvml.nvmlDeviceGetVbiosVersion, h),
        }
        try:
            d["memory_info_v2"] = call(pynvml.nvmlDeviceGetMemoryInfo, h, pynvml.nvmlMemory_v2)
        except Exception as e:
            d["memory_info_v2"] = {"error": type(e).__name__}
        out["devices"].append(d)
    pynvml.nvmlShutdown()
    try:
        import psutil

        vm = psutil.virtual_memory()
        out["host"] = {"cpu_arch": platform.machine(), "cpu_count": psutil.cpu_count(),
                       "ram_total_bytes": vm.total, "mem_available_bytes": vm.available}
    except ImportError:
        out["host"] = {"cpu_arch": platform.machine()}
    json.dump(out, sys.stdout, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
