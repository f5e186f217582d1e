"""Probe snapshot model: what this machine's GPUs and host look like.

The snapshot is a frozen value the UI and planner receive. `ProbeResult.to_dict()` is the
`spark-tui probe --json` API (schema_version 1, documented in README "Probe JSON"): a field that
NVML reports as NOT_SUPPORTED (or that could not be read) is `null` in JSON and `None` here, never 0.
`take_probe()` below reads NVML through the one wrapper `spark_tui.core.hardware.nvml` and the host through psutil.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from collections.abc import Mapping
from typing import Any

SCHEMA_VERSION = 1
MAX_PROBE_BYTES = 16 * 2**20

# status values of a probe
OK = "ok"
NO_NVML = "no_nvml"  # libnvidia-ml.so (driver) not found
NO_DRIVER = "no_driver"  # library present but driver not loaded / NVML init failed
NO_GPU = "no_gpu"  # NVML works but reports 0 devices
ERROR = "error"


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    uuid: str | None = None
    pci_bus_id: str | None = None
    pci_device_id: str | None = None  # NVML pciDeviceId as "0xDDDDVVVV" (device id high 16, vendor 0x10DE low)
    compute_capability: tuple[int, int] | None = None
    memory_total_bytes: int | None = None  # None: not available (NOT_SUPPORTED on GB10)
    memory_free_bytes: int | None = None
    memory_used_bytes: int | None = None
    unified_memory: bool = False  # True on GB10 (and other integrated GPUs): host RAM is the GPU's memory
    power_limit_w: float | None = None
    mig_mode: str | None = None  # "enabled" / "disabled" / None (not available)
    # live state (None when not available)
    utilization_pct: float | None = None
    memory_utilization_pct: float | None = None
    temperature_c: float | None = None
    power_draw_w: float | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    # NVML nvmlDeviceGetVirtualizationMode: "none" (bare metal), "passthrough", "vgpu" (a vGPU inside a VM),
    # "host_vgpu" / "host_vsga" (the hypervisor's vGPU Manager owns the GPU: no CUDA here); None: not available
    virtualization_mode: str | None = None
    compute_processes: int | None = None  # compute processes on the GPU (nvmlDeviceGetComputeRunningProcesses)

    @property
    def sm(self) -> int | None:
        """Compute capability as an integer, e.g. (12, 1) -> 121."""
        if self.compute_capability is None:
            return None
        major, minor = self.compute_capability
        return major * 10 + minor

    @property
    def sm_name(self) -> str | None:
        return None if self.sm is None else f"sm_{self.sm}"

    @property
    def pci_device(self) -> str | None:
        """The 16-bit PCI device id as lower-case hex ("2b85"), from pci_device_id."""
        if not self.pci_device_id:
            return None
        v = int(self.pci_device_id, 16)
        return f"{(v >> 16) & 0xFFFF:04x}"


@dataclass(frozen=True)
class HostInfo:
    cpu_arch: str | None = None  # platform.machine(): x86_64, aarch64
    cpu_count: int | None = None
    ram_total_bytes: int | None = None
    mem_available_bytes: int | None = None  # /proc/meminfo MemAvailable (psutil available)
    os: str | None = None
    mem_free_bytes: int | None = None  # /proc/meminfo MemFree (psutil free)
    page_cache_bytes: int | None = None  # Cached + Buffers (psutil cached + buffers): what drop_caches can free


@dataclass(frozen=True)
class ProbeResult:
    status: str
    message: str = ""
    hint: str = ""
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # e.g. "13.0", from nvmlSystemGetCudaDriverVersion
    nvml_version: str | None = None
    gpus: tuple[GpuInfo, ...] = ()
    host: HostInfo = field(default_factory=HostInfo)
    taken_at: str | None = None  # ISO-8601 UTC
    source: str = "nvml"  # "nvml", or "file:<path>" when replayed
    schema_version: int = SCHEMA_VERSION
    # why NVML gave no CUDA driver version: "library_not_found" (libcuda.so.1 missing: nvidia-smi prints
    # "CUDA Version: Not Found"), "not_supported", "error: ..."; None when it was read (or not asked)
    cuda_driver_error: str | None = None
    vgpu: dict[str, Any] | None = None  # a vGPU host / guest / suspected: `detect_vgpu`; None when not seen

    @property
    def ok(self) -> bool:
        return self.status == OK and bool(self.gpus)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gpus"] = []
        for g in self.gpus:
            gd = asdict(g)
            gd["compute_capability"] = (
                None if g.compute_capability is None else f"{g.compute_capability[0]}.{g.compute_capability[1]}"
            )
            gd["sm"] = g.sm_name
            d["gpus"].append(gd)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ProbeResult":
        from spark_tui.errors import UsageError

        if not isinstance(d, dict) or "status" not in d:
            raise UsageError("probe data has no 'status' field", "pass a file written by `spark-tui probe --json`")
        ver = d.get("schema_version", SCHEMA_VERSION)
        if ver != SCHEMA_VERSION:
            raise UsageError(
                f"probe schema_version {ver} is not supported (this spark-tui reads {SCHEMA_VERSION})",
                "re-run `spark-tui probe --json` with this version of spark-tui",
            )
        try:
            return cls._from_checked_dict(d)
        except (TypeError, ValueError, AttributeError, IndexError) as e:
            # a hand-edited or foreign file: name the problem instead of a traceback
            raise UsageError(
                f"probe data is malformed ({type(e).__name__}: {e})",
                "pass a file written by `spark-tui probe --json`",
            ) from None

    @classmethod
    def _from_checked_dict(cls, d: dict[str, Any]) -> "ProbeResult":
        gkeys = {f.name for f in fields(GpuInfo)}
        gpus = []
        for i, g in enumerate(d.get("gpus") or []):
            g = {k: v for k, v in g.items() if k in gkeys}
            _check_numbers(f"gpus[{i}]", g, _GPU_NUMBERS)
            cc = g.get("compute_capability")
            if isinstance(cc, str):
                major, minor = cc.split(".")
                g["compute_capability"] = (int(major), int(minor))
            elif isinstance(cc, (list, tuple)):
                g["compute_capability"] = (int(cc[0]), int(cc[1]))
            gpus.append(GpuInfo(**g))
        hkeys = {f.name for f in fields(HostInfo)}
        h = {k: v for k, v in (d.get("host") or {}).items() if k in hkeys}
        _check_numbers("host", h, _HOST_NUMBERS)
        host = HostInfo(**h)
        pkeys = {f.name for f in fields(cls)} - {"gpus", "host"}
        rest = {k: v for k, v in d.items() if k in pkeys}
        return cls(**rest, gpus=tuple(gpus), host=host)

    @classmethod
    def load(cls, path: str | Path) -> "ProbeResult":
        from spark_tui.errors import UsageError

        p = Path(path)
        try:
            with p.open("rb") as f:  # a probe is a few KiB: never slurp a device (/dev/zero) or a huge file
                raw = f.read(MAX_PROBE_BYTES + 1)
            if len(raw) > MAX_PROBE_BYTES:
                raise UsageError(f"probe file {p} is larger than {MAX_PROBE_BYTES // 2**20} MiB: not a probe",
                                 "write one with `spark-tui probe --json > box.json`")
            data = json.loads(raw.decode("utf-8"))
        except FileNotFoundError:
            raise UsageError(f"probe file not found: {p}", "write one with `spark-tui probe --json > box.json`") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UsageError(f"probe file {p} is not valid JSON ({e})", "write one with `spark-tui probe --json > box.json`") from None
        except OSError as e:  # a directory, no permission, an I/O error
            raise UsageError(f"cannot read probe file {p}: {e.strerror or e}", "pass a readable file written by `spark-tui probe --json`") from None
        r = cls.from_dict(data)
        return ProbeResult(**{**{f.name: getattr(r, f.name) for f in fields(r)}, "source": f"file:{p}"})


# numeric fields of a probe file: null, or a finite number >= 0 (ints: an integer). json.loads reads NaN,
# Infinity and 1e999 as floats, which would reach the memory arithmetic as nan / inf.
_GPU_NUMBERS = {"index": int, "memory_total_bytes": int, "memory_free_bytes": int, "memory_used_bytes": int,
                "power_limit_w": float, "utilization_pct": float, "memory_utilization_pct": float,
                "temperature_c": float, "power_draw_w": float, "sm_clock_mhz": int, "mem_clock_mhz": int}
_HOST_NUMBERS = {"cpu_count": int, "ram_total_bytes": int, "mem_available_bytes": int}


def _check_numbers(where: str, d: dict[str, Any], spec: Mapping[str, type]) -> None:
    import math

    for key, typ in spec.items():
        v = d.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{where}.{key} must be a number or null, got {v!r:.40}")
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{where}.{key} must be a finite number >= 0, got {v!r}")
        if typ is int and not float(v).is_integer():
            raise ValueError(f"{where}.{key} must be an integer, got {v!r}")
        if typ is int:
            d[key] = int(v)


# GPUs whose memory is the host's RAM (integrated / coherent UMA). On GB10 nvmlDeviceGetMemoryInfo returns
# NVML_ERROR_NOT_SUPPORTED (XuehaiPan/nvitop PR #208, NVIDIA/cosmos-framework PR #22); on some drivers it
# is reported to succeed with the host's total (Syllo/nvtop PR #463), so the name alone also counts.
UNIFIED_MEMORY_NAMES = ("NVIDIA GB10",)


def read_host() -> HostInfo:
    """This machine's CPU architecture, CPU count, RAM total and MemAvailable (psutil)."""
    import os
    import platform

    ram_total = mem_available = mem_free = cache = None
    try:
        import psutil

        vm = psutil.virtual_memory()
        ram_total, mem_available = int(vm.total), int(vm.available)
        mem_free = int(vm.free)
        if hasattr(vm, "cached"):  # Linux fields
            cache = int(vm.cached) + int(getattr(vm, "buffers", 0))
    except Exception:  # psutil missing or /proc unreadable: report "not available", never 0
        pass
    return HostInfo(
        cpu_arch=platform.machine() or None,
        cpu_count=os.cpu_count(),
        ram_total_bytes=ram_total,
        mem_available_bytes=mem_available,
        os=f"{platform.system()} {platform.release()}".strip() or None,
        mem_free_bytes=mem_free,
        page_cache_bytes=cache,
    )


def _now_iso() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _num(v: Any, scale: float = 1.0) -> float | None:
    from spark_tui.core.hardware.nvml import is_na

    if v is None or is_na(v):
        return None
    return round(float(v) * scale, 3)


def _int_or_none(v: Any) -> int | None:
    return None if v is None else int(v)


def _read_gpu(index: int) -> GpuInfo:
    from spark_tui.core.hardware import nvml
    from spark_tui.core.hardware.nvml import is_na, query, value_or_none

    m = nvml.lib()
    h = query("nvmlDeviceGetHandleByIndex", index)
    if is_na(h):
        return GpuInfo(index=index, name=f"unavailable ({h.reason})")
    name = value_or_none(query("nvmlDeviceGetName", h)) or "unknown"
    uuid = value_or_none(query("nvmlDeviceGetUUID", h))

    bus_id = dev_id = None
    pci = query("nvmlDeviceGetPciInfo", h)
    if not is_na(pci):
        b = getattr(pci, "busId", None)
        bus_id = (b.decode() if isinstance(b, bytes) else b) or None
        d = getattr(pci, "pciDeviceId", None)
        dev_id = f"0x{int(d):08X}" if d else None

    cc = query("nvmlDeviceGetCudaComputeCapability", h)
    compute_capability = None if is_na(cc) else (int(cc[0]), int(cc[1]))

    mem = query("nvmlDeviceGetMemoryInfo", h)
    total = free = used = None
    if not is_na(mem):
        total = _int_or_none(getattr(mem, "total", None))
        free = _int_or_none(getattr(mem, "free", None))
        used = _int_or_none(getattr(mem, "used", None))
        if not total:  # a zero-sized framebuffer is "not available", never 0
            total = free = used = None
    unified = name in UNIFIED_MEMORY_NAMES or (is_na(mem) and mem.reason == "not_supported")

    limit = query("nvmlDeviceGetEnforcedPowerLimit", h)
    if is_na(limit):
        limit = query("nvmlDeviceGetPowerManagementLimit", h)

    mig = query("nvmlDeviceGetMigMode", h)
    mig_mode = None
    if not is_na(mig):
        current = mig[0] if isinstance(mig, (list, tuple)) else mig
        mig_mode = "enabled" if current == getattr(m, "NVML_DEVICE_MIG_ENABLE", 1) else "disabled"

    util = query("nvmlDeviceGetUtilizationRates", h)
    temp = query("nvmlDeviceGetTemperature", h, getattr(m, "NVML_TEMPERATURE_GPU", 0))
    power = query("nvmlDeviceGetPowerUsage", h)
    sm_clock = query("nvmlDeviceGetClockInfo", h, getattr(m, "NVML_CLOCK_SM", 1))
    mem_clock = query("nvmlDeviceGetClockInfo", h, getattr(m, "NVML_CLOCK_MEM", 2))
    virt = query("nvmlDeviceGetVirtualizationMode", h)
    procs = query("nvmlDeviceGetComputeRunningProcesses", h)

    return GpuInfo(
        index=index,
        name=name,
        uuid=uuid,
        pci_bus_id=bus_id,
        pci_device_id=dev_id,
        compute_capability=compute_capability,
        memory_total_bytes=total,
        memory_free_bytes=free,
        memory_used_bytes=used,
        unified_memory=unified,
        power_limit_w=_num(limit, 1e-3),
        mig_mode=mig_mode,
        utilization_pct=None if is_na(util) else _num(util.gpu),
        memory_utilization_pct=None if is_na(util) or unified else _num(util.memory),
        temperature_c=_num(temp),
        power_draw_w=_num(power, 1e-3),
        sm_clock_mhz=None if is_na(sm_clock) else int(sm_clock),
        mem_clock_mhz=None if is_na(mem_clock) else int(mem_clock),
        virtualization_mode=None if is_na(virt) else VIRTUALIZATION_MODES.get(int(virt), f"mode {int(virt)}"),
        compute_processes=None if is_na(procs) else len(procs),
    )


VIRTUALIZATION_MODES = {0: "none", 1: "passthrough", 2: "vgpu", 3: "host_vgpu", 4: "host_vsga"}  # nvmlGpuVirtualizationMode_t
VGPU_SOURCES = (
    "NVML API reference: nvmlDeviceGetVirtualizationMode (NONE, PASSTHROUGH, VGPU, HOST_VGPU, HOST_VSGA); "
    "nvmlSystemGetCudaDriverVersion_v2 returns NVML_ERROR_LIBRARY_NOT_FOUND when libcuda.so.1 is not found",
    "akb486/vgpu README.md: `nvidia-smi -q` of a vGPU host: 'CUDA Version : Not Found', 'Virtualization Mode : "
    "Host VGPU' (driver 525.147.01)",
    "DualCoder/vgpu_unlock #51: on the vGPU host nvidia-smi shows 'CUDA Version: N/A'; CUDA runs in the VM with the "
    "guest driver of the same vGPU release (https://docs.nvidia.com/cuda/vGPU/index.html)",
)


def detect_vgpu(r: ProbeResult) -> dict[str, Any] | None:
    """A vGPU host, a vGPU guest, or a machine whose driver reports no CUDA version; None otherwise.

    {kind: "host" | "guest" | "no_cuda", message, hint, evidence[], sources[]}. "host": the hypervisor's vGPU
    Manager owns the GPU and has no CUDA driver (nvidia-smi: 'CUDA Version: Not Found' / 'N/A'), so vLLM cannot
    run there. "guest": a VM given a vGPU (a "GRID ..." name or NVML mode VGPU). "no_cuda": NVML gives no CUDA
    driver version and the mode is unknown: a vGPU host, or libcuda.so.1 missing."""
    modes = {g.virtualization_mode for g in r.gpus}
    grid = [g for g in r.gpus if g.name.startswith("GRID ")]
    no_cuda = r.cuda_driver_version is None and r.cuda_driver_error in ("library_not_found", "not_supported", "zero")
    evidence = []
    if no_cuda:
        evidence.append(f"NVML gives no CUDA driver version ({r.cuda_driver_error}); nvidia-smi prints 'CUDA Version: "
                        "Not Found' (or 'N/A')")
    if modes & {"host_vgpu", "host_vsga"}:
        evidence.append("NVML virtualization mode HOST_VGPU: the vGPU Manager (hypervisor driver) owns the GPU")
        return {"kind": "host", "evidence": evidence, "sources": list(VGPU_SOURCES),
                "message": "this is a vGPU host (hypervisor): its vGPU Manager driver has no CUDA, so vLLM cannot "
                           "run here",
                "hint": "run vLLM inside a VM that is given a compute vGPU profile (the -C or -Q types) with the "
                        "guest driver of the same vGPU release and a license, or pass the whole GPU through to the "
                        "VM, or install the regular data-center driver on this host instead of the vGPU Manager"}
    if "vgpu" in modes or grid:
        evidence.append("NVML virtualization mode VGPU" if "vgpu" in modes else
                        f"vGPU profile name {grid[0].name!r}")
        if no_cuda:
            return {"kind": "guest", "evidence": evidence, "sources": list(VGPU_SOURCES),
                    "message": "this is a VM with a vGPU whose driver reports no CUDA version: CUDA will not start",
                    "hint": "install the guest driver of the host's vGPU release (GRID/vGPU guest driver, not the "
                            "consumer driver), check the vGPU license (`nvidia-smi -q | grep -i license`), and use a "
                            "compute-capable profile (-C or -Q)"}
        return {"kind": "guest", "evidence": evidence, "sources": list(VGPU_SOURCES),
                "message": "this is a VM with a vGPU: the GPU memory is the vGPU profile's share of the card",
                "hint": "plan with the probed memory (not the full card's); CUDA works once the vGPU is licensed"}
    if no_cuda:
        return {"kind": "no_cuda", "evidence": evidence, "sources": list(VGPU_SOURCES),
                "message": "the driver reports no CUDA version: either a vGPU host (vGPU Manager driver, no CUDA) or "
                           "the CUDA driver library libcuda.so.1 is missing",
                "hint": "on a hypervisor: run vLLM in a VM with a vGPU or a passed-through GPU; in a container: start "
                        "it with the GPU's compute libraries (`--gpus all`, NVIDIA_DRIVER_CAPABILITIES=compute,utility); "
                        "on Debian: install libcuda1 (the CUDA driver library is a separate package)"}
    return None


def take_probe(host: HostInfo | None = None) -> ProbeResult:
    """Snapshot this machine's GPUs (NVML) and host. Never raises for a missing driver or GPU: the
    result's `status` says no_nvml / no_driver / no_gpu / error, with a message and a hint."""
    from spark_tui.core.hardware import nvml
    from spark_tui.core.hardware.nvml import NvmlUnavailable, query, value_or_none

    host = read_host() if host is None else host
    taken = _now_iso()
    try:
        nvml.init()
        count = nvml.device_count()
    except NvmlUnavailable as e:
        return ProbeResult(status=e.status, message=e.message, hint=e.hint, host=host, taken_at=taken)
    driver = value_or_none(query("nvmlSystemGetDriverVersion"))
    cuda_raw = query("nvmlSystemGetCudaDriverVersion_v2")
    if nvml.is_na(cuda_raw) and cuda_raw.reason == "no_function":
        # an older driver/bindings without _v2. Only then: v1 "returns a known supported version number" when
        # libcuda is missing (NVML API reference, nvmlSystemQueries), so it would hide a missing CUDA driver
        cuda_raw = query("nvmlSystemGetCudaDriverVersion")
    cuda = None if nvml.is_na(cuda_raw) or not cuda_raw else nvml.cuda_version_string(int(cuda_raw))
    cuda_error = cuda_raw.reason if nvml.is_na(cuda_raw) else (None if cuda_raw else "zero")
    nvml_version = value_or_none(query("nvmlSystemGetNVMLVersion"))
    common = dict(driver_version=driver, cuda_driver_version=cuda, nvml_version=nvml_version, host=host, taken_at=taken,
                  cuda_driver_error=cuda_error)
    if count == 0:
        return ProbeResult(
            status=NO_GPU,
            message="the NVIDIA driver is loaded but reports no GPU",
            hint="check `nvidia-smi -L`, CUDA_VISIBLE_DEVICES, and that the container was given the GPUs (`--gpus all`)",
            **common,
        )
    gpus = tuple(_read_gpu(i) for i in range(count))
    r = ProbeResult(status=OK, message=f"{count} GPU{'s' if count != 1 else ''}", gpus=gpus, **common)
    v = detect_vgpu(r)
    return r if v is None else dataclasses.replace(r, vgpu=v)
