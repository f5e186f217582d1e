"""take_probe() on recorded real machines (tests/data/probes/<id>/nvml.json, sources in source.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support import fake_nvml  # noqa: E402

from spark_tui.core.hardware import nvml  # noqa: E402
from spark_tui.core.hardware.probe import OK, ProbeResult, take_probe  # noqa: E402

MIB = 1024 * 1024
IDS = fake_nvml.fixture_ids()

# what each recorded output shows: (name, sm, total MiB or None, used MiB or None, driver, cuda, limit W, mig)
EXPECTED = {
    "gb10": ("NVIDIA GB10", "sm_121", None, None, "580.173.02", None, None, None),
    "rtx-pro-6000": ("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", "sm_120", 97887, None,
                     "580.173.02", None, 250.0, None),
    "rtx-5090": ("NVIDIA GeForce RTX 5090", "sm_120", 32607, 492, "595.71.05", "13.2", 600.0, None),
    "b200": ("NVIDIA B200", "sm_100", 183359, 166593, "580.95.05", "13.0", 1000.0, "disabled"),
    "h100": ("NVIDIA H100 80GB HBM3", "sm_90", 81559, 72790, "550.90.07", "12.4", 700.0, "disabled"),
    "h100-real": ("NVIDIA H100 80GB HBM3", "sm_90", 81559, 480, "580.159.04", "13.0", 700.0, "disabled"),
    "h200": ("NVIDIA H200", "sm_90", 143771, 124585, "550.144.03", "12.4", 700.0, "disabled"),
    "a100": ("NVIDIA A100-SXM4-40GB", "sm_80", 40960, 598, "580.126.09", "13.0", 400.0, "disabled"),
}


@pytest.fixture(autouse=True)
def _fresh_nvml():
    nvml._reset()
    yield
    nvml._reset()


def _probe(monkeypatch, fid: str) -> ProbeResult:
    data = fake_nvml.load_fixture(fid)
    fake_nvml.install(monkeypatch, data)
    return take_probe(host=fake_nvml.fixture_host(data))


def test_every_required_device_is_recorded():
    assert set(EXPECTED) | {"multi-b200"} <= set(IDS)
    for fid in IDS:
        d = fake_nvml.PROBES_DIR / fid
        src = (d / "source.md").read_text()
        assert "```" in src, f"{fid}: source.md needs the verbatim output"
        assert "https://github.com/" in src or "captured on real hardware" in src, f"{fid}: source.md needs its source"
        assert (d / "probe.json").is_file()


@pytest.mark.parametrize("fid", sorted(EXPECTED))
def test_single_gpu_fixture(monkeypatch, fid):
    name, sm, total, used, driver, cuda, limit, mig = EXPECTED[fid]
    r = _probe(monkeypatch, fid)
    assert r.status == OK and r.ok and len(r.gpus) == 1
    g = r.gpus[0]
    assert (g.name, g.sm_name, r.driver_version, r.cuda_driver_version) == (name, sm, driver, cuda)
    assert g.memory_total_bytes == (None if total is None else total * MIB)
    assert g.memory_used_bytes == (None if used is None else used * MIB)
    assert g.memory_free_bytes == (None if used is None else (total - used) * MIB)
    assert g.power_limit_w == limit
    assert g.mig_mode == mig


def test_gb10_is_unified_and_memory_not_from_nvml(monkeypatch):
    r = _probe(monkeypatch, "gb10")
    g = r.gpus[0]
    assert g.unified_memory is True
    assert g.memory_total_bytes is None and g.memory_free_bytes is None and g.memory_used_bytes is None
    assert g.compute_capability == (12, 1) and g.sm == 121
    assert g.pci_bus_id == "0000000F:01:00.0"
    assert (g.utilization_pct, g.temperature_c, g.power_draw_w) == (0.0, 35.0, 11.17)
    # host RAM is the GPU's memory: MemTotal 127600748 kB, MemAvailable 118566368 kB
    assert r.host.ram_total_bytes == 127600748 * 1024
    assert r.host.mem_available_bytes == 118566368 * 1024


def test_gb10_nvidia_smi_fixture(monkeypatch):
    r = _probe(monkeypatch, "gb10-smi")
    g = r.gpus[0]
    assert (r.driver_version, r.cuda_driver_version, g.sm_name) == ("580.126.09", "13.0", "sm_121")
    assert g.unified_memory and g.memory_total_bytes is None
    # power cap and MIG are N/A on GB10: not available, never 0
    assert g.power_limit_w is None and g.mig_mode is None
    assert (g.power_draw_w, g.temperature_c) == (3.0, 36.0)


@pytest.mark.parametrize("fid", [f for f in sorted(EXPECTED) if f != "gb10"])
def test_discrete_gpus_are_not_unified(monkeypatch, fid):
    assert _probe(monkeypatch, fid).gpus[0].unified_memory is False


def test_multi_gpu_lists_all(monkeypatch):
    r = _probe(monkeypatch, "multi-b200")
    assert [g.index for g in r.gpus] == [0, 1]
    assert [g.pci_bus_id for g in r.gpus] == ["00000000:05:00.0", "00000000:06:00.0"]
    assert [g.memory_used_bytes for g in r.gpus] == [166593 * MIB, 156996 * MIB]
    assert [g.power_draw_w for g in r.gpus] == [192.0, 196.0]
    assert r.gpus[0].mig_mode == "disabled" and r.gpus[1].mig_mode is None  # GPU 1's MIG line is cut
    assert r.message == "2 GPUs"


def test_name_marks_gb10_unified_even_if_nvml_reports_memory(monkeypatch):
    # Syllo/nvtop PR #463 reports drivers where nvmlDeviceGetMemoryInfo succeeds on GB10
    data = fake_nvml.load_fixture("gb10")
    dev = {k: v for k, v in data["devices"][0].items() if k != "memory"}
    dev.update(memory_total_mib=124605, memory_used_mib=8000)
    fake_nvml.install(monkeypatch, {**data, "devices": [dev]})
    g = take_probe(host=fake_nvml.fixture_host(data)).gpus[0]
    assert g.unified_memory is True and g.memory_total_bytes == 124605 * MIB


def test_not_supported_discrete_memory_is_none_not_zero(monkeypatch):
    data = fake_nvml.load_fixture("h100")
    dev = {**data["devices"][0], "memory": "NOT_SUPPORTED", "temperature_c": "NOT_SUPPORTED"}
    fake_nvml.install(monkeypatch, {**data, "devices": [dev]})
    g = take_probe(host=fake_nvml.fixture_host(data)).gpus[0]
    assert g.memory_total_bytes is None and g.temperature_c is None


@pytest.mark.parametrize("fid", IDS)
def test_unsupported_or_unrecorded_fields_are_null_never_zero(monkeypatch, fid):
    data = fake_nvml.load_fixture(fid)
    r = _probe(monkeypatch, fid)
    for rec, g in zip(data["devices"], r.gpus):
        gd = r.to_dict()["gpus"][g.index]
        for key, field in [("power_limit_w", "power_limit_w"), ("temperature_c", "temperature_c"),
                           ("power_draw_w", "power_draw_w"), ("uuid", "uuid"), ("sm_clock_mhz", "sm_clock_mhz")]:
            if key not in rec or rec[key] == "NOT_SUPPORTED":
                assert gd[field] is None, (fid, field)


@pytest.mark.parametrize("fid", IDS)
def test_committed_probe_json_matches_code(fid):
    """probe.json is what the code produces from nvml.json (regenerate: python tests/support/fake_nvml.py --write)."""
    committed = json.loads((fake_nvml.PROBES_DIR / fid / "probe.json").read_text())
    assert committed == fake_nvml.probe_from_fixture(fid).to_dict()


@pytest.mark.parametrize("fid", IDS)
def test_probe_json_replays(fid):
    path = fake_nvml.PROBES_DIR / fid / "probe.json"
    r = ProbeResult.load(path)
    assert r.source == f"file:{path}"
    again = json.loads(path.read_text())
    assert {**r.to_dict(), "source": again["source"]} == again
