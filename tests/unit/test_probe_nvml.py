"""The NVML wrapper: lazy init, query() error mapping, init failures -> probe status.

The real pynvml is used where the real path runs here (no libnvidia-ml on this machine); elsewhere
tests/support/fake_nvml.py replays recorded outputs and raises the real pynvml error classes.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import pynvml
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support import fake_nvml  # noqa: E402

from spark_tui.core.hardware import nvml  # noqa: E402
from spark_tui.core.hardware.nvml import NA, NotAvailable, NvmlUnavailable, is_na, query  # noqa: E402
from spark_tui.core.hardware.probe import NO_DRIVER, NO_GPU, NO_NVML, OK, HostInfo, take_probe  # noqa: E402
from spark_tui.errors import ExitCode  # noqa: E402


def _libnvml_present() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


@pytest.fixture(autouse=True)
def _fresh_nvml():
    nvml._reset()
    yield
    nvml._reset()


@pytest.mark.skipif(_libnvml_present(), reason="this machine has libnvidia-ml; the test is for its absence")
def test_real_pynvml_without_library_gives_no_nvml():
    # the REAL pynvml against the real (absent) library
    assert nvml.lib() is pynvml
    with pytest.raises(NvmlUnavailable) as ei:
        nvml.init()
    assert ei.value.status == NO_NVML
    assert "libnvidia-ml.so.1" in ei.value.message
    assert "nvidia-smi" in ei.value.hint
    assert ei.value.exit_code == ExitCode.NO_GPU
    r = take_probe()
    assert r.status == NO_NVML and not r.ok and r.gpus == ()
    # the host half still works without a GPU
    assert r.host.ram_total_bytes and r.host.ram_total_bytes > 0
    assert r.host.mem_available_bytes and r.host.mem_available_bytes > 0
    assert r.host.cpu_count and r.host.cpu_count >= 1


def test_missing_bindings_give_no_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    r = take_probe(host=HostInfo())
    assert r.status == NO_NVML
    assert "nvidia-ml-py" in r.hint


@pytest.mark.parametrize(
    "code, status, words",
    [
        ("DRIVER_NOT_LOADED", NO_DRIVER, "not loaded"),
        ("NO_PERMISSION", NO_DRIVER, "permission"),
        ("UNKNOWN", "error", "failed to initialise"),
    ],
)
def test_init_errors_map_to_status(monkeypatch, code, status, words):
    fake_nvml.install(monkeypatch, {"init_error": code, "devices": []})
    r = take_probe(host=HostInfo())
    assert r.status == status
    assert words in r.message
    assert r.hint


def test_zero_devices_is_no_gpu(monkeypatch):
    fake_nvml.install(monkeypatch, {"system": {"driver_version": "580.95.05"}, "devices": []})
    r = take_probe(host=HostInfo())
    assert r.status == NO_GPU and not r.ok
    assert r.driver_version == "580.95.05"
    assert "CUDA_VISIBLE_DEVICES" in r.hint


def test_init_is_lazy_and_once(monkeypatch):
    mod = fake_nvml.install(monkeypatch, "b200")
    calls = []
    real_init = mod.nvmlInit
    monkeypatch.setattr(mod, "nvmlInit", lambda: (calls.append(1), real_init())[1])
    assert calls == []  # nothing at import or install time
    query("nvmlSystemGetDriverVersion")
    query("nvmlDeviceGetCount")
    assert calls == [1]


def test_query_maps_per_field_errors(monkeypatch):
    fake_nvml.install(monkeypatch, "gb10")
    h = query("nvmlDeviceGetHandleByIndex", 0)
    mem = query("nvmlDeviceGetMemoryInfo", h)  # recorded NOT_SUPPORTED on GB10
    assert isinstance(mem, NotAvailable) and mem.reason == "not_supported"
    assert not mem and str(mem) == "N/A"
    limit = query("nvmlDeviceGetEnforcedPowerLimit", h)  # not shown in the recorded output
    assert is_na(limit) and limit.reason.startswith("error:")
    assert query("nvmlDeviceGetMemoryInfo", h, default=-1) == -1
    assert query("nvmlNoSuchFunction").reason == "no_function"
    assert query("nvmlDeviceGetName", h) == "NVIDIA GB10"
    assert NA == NotAvailable("x") and not NA


def test_query_decodes_bytes(monkeypatch):
    mod = fake_nvml.install(monkeypatch, "h100")
    monkeypatch.setattr(mod, "nvmlSystemGetDriverVersion", lambda: b"550.90.07")
    assert query("nvmlSystemGetDriverVersion") == "550.90.07"


def test_cuda_version_string():
    assert nvml.cuda_version_string(13000) == "13.0"
    assert nvml.cuda_version_string(12080) == "12.8"
    assert nvml.cuda_version_string(12040) == "12.4"


def test_cuda_version_falls_back_to_v1(monkeypatch):
    mod = fake_nvml.install(monkeypatch, "h100")
    v2 = mod.nvmlSystemGetCudaDriverVersion_v2
    monkeypatch.delattr(mod, "nvmlSystemGetCudaDriverVersion_v2")
    monkeypatch.setattr(mod, "nvmlSystemGetCudaDriverVersion", v2, raising=False)
    assert take_probe(host=HostInfo()).cuda_driver_version == "12.4"
    assert take_probe(host=HostInfo()).status == OK
