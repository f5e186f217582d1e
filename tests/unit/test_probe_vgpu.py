"""vGPU hosts and machines whose driver reports no CUDA version (`CUDA Version: Not Found` / `N/A`), from the
recorded vgpu-host (akb486/vgpu) and vgpu-host-na (DualCoder/vgpu_unlock #51) outputs."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support import fake_nvml  # noqa: E402

from spark_tui.core.hardware import nvml  # noqa: E402
from spark_tui.core.hardware.probe import HostInfo, ProbeResult, detect_vgpu, take_probe  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_nvml():
    nvml._reset()
    yield
    nvml._reset()


def _probe(monkeypatch, data) -> ProbeResult:
    fake_nvml.install(monkeypatch, data)
    return take_probe(host=HostInfo())


def test_vgpu_host_is_named_with_what_to_do(monkeypatch):
    r = _probe(monkeypatch, "vgpu-host")
    assert r.ok and r.cuda_driver_version is None and r.cuda_driver_error == "library_not_found"
    assert r.gpus[0].virtualization_mode == "host_vgpu"
    v = r.vgpu
    assert v["kind"] == "host"
    assert v["message"].startswith("this is a vGPU host (hypervisor)")
    assert "compute vGPU profile" in v["hint"] and "pass the whole GPU through" in v["hint"]
    assert any("akb486/vgpu" in s for s in v["sources"])
    assert r.to_dict()["vgpu"]["kind"] == "host"  # in the probe JSON


def test_old_vgpu_host_table_without_mode_says_no_cuda(monkeypatch):
    r = _probe(monkeypatch, "vgpu-host-na")
    assert r.cuda_driver_error == "not_supported" and r.gpus[0].virtualization_mode is None
    assert r.vgpu["kind"] == "no_cuda"
    assert "vGPU host" in r.vgpu["message"] and "libcuda.so.1" in r.vgpu["message"]


def test_missing_cuda_version_does_not_fall_back_to_v1(monkeypatch):
    """nvmlSystemGetCudaDriverVersion (v1) 'returns a known supported version number' without libcuda: using it
    would hide the problem, so only a missing _v2 function falls back to it."""
    mod = fake_nvml.install(monkeypatch, "vgpu-host")
    monkeypatch.setattr(mod, "nvmlSystemGetCudaDriverVersion", lambda: 12000, raising=False)
    r = take_probe(host=HostInfo())
    assert r.cuda_driver_version is None and r.vgpu["kind"] == "host"


def test_vgpu_guest_by_mode_and_by_profile_name(monkeypatch):
    data = fake_nvml.load_fixture("h100")
    dev = {**data["devices"][0], "virtualization_mode": "vgpu"}
    r = _probe(monkeypatch, {**data, "devices": [dev]})
    assert r.vgpu["kind"] == "guest" and "vGPU profile's share" in r.vgpu["message"]
    no_cuda = {**data, "system": {**data["system"], "cuda_driver_version": "LIBRARY_NOT_FOUND"},
               "devices": [{**data["devices"][0], "name": "GRID V100D-8C"}]}
    nvml._reset()
    r = _probe(monkeypatch, no_cuda)
    assert r.vgpu["kind"] == "guest" and "CUDA will not start" in r.vgpu["message"]
    assert "license" in r.vgpu["hint"]


def test_bare_metal_and_passthrough_are_not_flagged(monkeypatch):
    for fid in ("rtx-5090", "2x-rtx-5090", "gb10-smi"):
        nvml._reset()
        assert _probe(monkeypatch, fid).vgpu is None
    data = fake_nvml.load_fixture("h100")
    nvml._reset()
    r = _probe(monkeypatch, {**data, "devices": [{**data["devices"][0], "virtualization_mode": "passthrough"}]})
    assert r.vgpu is None and r.gpus[0].virtualization_mode == "passthrough"


def test_a_field_the_output_did_not_show_is_not_a_vgpu_signal(monkeypatch):
    r = _probe(monkeypatch, "gb10")  # the GB10 excerpt shows no CUDA version: unknown, not "not found"
    assert r.cuda_driver_error.startswith("error:") and r.vgpu is None


def test_compute_processes_are_counted(monkeypatch):
    data = fake_nvml.load_fixture("rtx-5090")
    r = _probe(monkeypatch, {**data, "devices": [{**data["devices"][0], "compute_processes": 2}]})
    assert r.gpus[0].compute_processes == 2


def test_older_probe_files_still_load():
    d = json.loads((ROOT / "tests" / "data" / "probes" / "gb10" / "probe.json").read_text())
    for k in ("vgpu", "cuda_driver_error"):
        d.pop(k)
    for g in d["gpus"]:
        g.pop("virtualization_mode"), g.pop("compute_processes")
    r = ProbeResult.from_dict(d)
    assert r.vgpu is None and r.gpus[0].virtualization_mode is None


def test_detect_is_pure_over_a_result():
    r = ProbeResult.load(ROOT / "tests" / "data" / "probes" / "vgpu-host" / "probe.json")
    assert detect_vgpu(dataclasses.replace(r, vgpu=None)) == r.vgpu


def test_probe_cli_prints_the_vgpu_line():
    out = subprocess.run([sys.executable, "-m", "spark_tui", "probe", "--probe-file",
                          str(ROOT / "tests" / "data" / "probes" / "vgpu-host" / "probe.json")],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "1 GPU, driver 525.147.01, CUDA Not Found (no libcuda.so.1)"
    assert lines[1] == ("vGPU: this is a vGPU host (hypervisor): its vGPU Manager driver has no CUDA, so vLLM cannot "
                        "run here")
    assert lines[2].startswith("  what to do: run vLLM inside a VM")
