"""Probe snapshot model: what this machine's GPUs and host look like.

The snapshot is a frozen value the UI and planner receive. `ProbeResult.to_dict()` is the
`spark-tui probe --json` API (schema_version 1, documented in README "Probe JSON"): a field that
NVML reports as NOT_SUPPORTED (or that could not be read) is `null` in JSON and `None` here, never 0.
`take_probe()` (NVML + psutil) lives in `spark_tui.core.nvml`-backed code below.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

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
        gkeys = {f.name for f in fields(GpuInfo)}
        gpus = []
        for g in d.get("gpus") or []:
            g = {k: v for k, v in g.items() if k in gkeys}
            cc = g.get("compute_capability")
            if isinstance(cc, str):
                major, minor = cc.split(".")
                g["compute_capability"] = (int(major), int(minor))
            elif isinstance(cc, (list, tuple)):
                g["compute_capability"] = (int(cc[0]), int(cc[1]))
            gpus.append(GpuInfo(**g))
        hkeys = {f.name for f in fields(HostInfo)}
        host = HostInfo(**{k: v for k, v in (d.get("host") or {}).items() if k in hkeys})
        pkeys = {f.name for f in fields(cls)} - {"gpus", "host"}
        rest = {k: v for k, v in d.items() if k in pkeys}
        return cls(**rest, gpus=tuple(gpus), host=host)

    @classmethod
    def load(cls, path: str | Path) -> "ProbeResult":
        from spark_tui.errors import UsageError

        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise UsageError(f"probe file not found: {p}", "write one with `spark-tui probe --json > box.json`") from None
        except json.JSONDecodeError as e:
            raise UsageError(f"probe file {p} is not valid JSON ({e})", "write one with `spark-tui probe --json > box.json`") from None
        r = cls.from_dict(data)
        return ProbeResult(**{**{f.name: getattr(r, f.name) for f in fields(r)}, "source": f"file:{p}"})
