"""`spark-tui probe`: the real no-NVML path in a subprocess (exit 3), --save, replay, the human output."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.support import fake_nvml  # noqa: E402

from spark_tui.commands.probe import render  # noqa: E402
from spark_tui.core.hardware.probe import ProbeResult  # noqa: E402


def _libnvml_present() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


no_driver_here = pytest.mark.skipif(_libnvml_present(), reason="needs a machine without libnvidia-ml")


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "spark_tui", "probe", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@no_driver_here
def test_cli_without_nvml_exits_3_with_status_line():
    p = _cli()
    assert p.returncode == 3, p.stderr
    first = p.stdout.splitlines()[0]
    assert first.startswith("probe: no_nvml: ") and "libnvidia-ml.so.1" in first
    assert "  hint: install the NVIDIA driver" in p.stdout
    assert "host   " in p.stdout and "MemAvailable" in p.stdout
    assert "Traceback" not in p.stderr


@no_driver_here
def test_cli_json_without_nvml_still_prints_json_and_exits_3(tmp_path):
    saved = tmp_path / "box.json"
    p = _cli("--json", "--save", str(saved))
    assert p.returncode == 3, p.stderr
    d = json.loads(p.stdout)
    assert d["status"] == "no_nvml" and d["gpus"] == [] and d["schema_version"] == 1
    assert d["host"]["ram_total_bytes"] > 0
    assert json.loads(saved.read_text()) == d
    # the saved file replays (as `plan --probe-file` does)
    assert ProbeResult.load(saved).status == "no_nvml"


def test_cli_replays_a_saved_probe():
    path = fake_nvml.PROBES_DIR / "multi-b200" / "probe.json"
    p = _cli("--probe-file", str(path))
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("NVIDIA B200") == 2
    j = _cli("--probe-file", str(path), "--json")
    assert json.loads(j.stdout)["source"] == f"file:{path}"


def test_cli_bad_probe_file_is_a_usage_error(tmp_path):
    p = _cli("--probe-file", str(tmp_path / "missing.json"))
    assert p.returncode == 2
    assert "probe file not found" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize(
    "content",
    [
        None,  # the path is a directory
        b"\xff\xfe not text",
        b'{"status": "ok", "gpus": 5}',
        b'{"status": "ok", "gpus": [{"index": 0}]}',
        b'{"status": "ok", "host": 3}',
        b'{"status": "ok", "gpus": [{"index": 0, "name": "x", "compute_capability": "twelve"}]}',
    ],
)
def test_load_rejects_unreadable_or_malformed_files_as_usage_errors(tmp_path, content):
    from spark_tui.errors import UsageError

    path = tmp_path / "p.json"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(UsageError) as e:
        ProbeResult.load(path)
    assert "spark-tui probe --json" in e.value.hint


def test_cli_probe_file_that_is_a_directory_exits_2(tmp_path):
    p = _cli("--probe-file", str(tmp_path))
    assert p.returncode == 2, p.stderr
    assert "cannot read probe file" in p.stderr and "Traceback" not in p.stderr


def test_render_gb10_reports_unified_memory_from_host():
    r = fake_nvml.probe_from_fixture("gb10")
    assert render(r) == (
        "1 GPU, driver 580.173.02, CUDA n/a\n"
        "GPU 0  NVIDIA GB10  sm_121  0000000F:01:00.0\n"
        "  memory  unified (shared with the CPU): 121.7 GiB RAM, 113.1 GiB MemAvailable; "
        "NVML gives no GPU memory figure\n"
        "  power   limit n/a   MIG n/a\n"
        "  now     0% util, 35 C, 11.17 W, SM n/a\n"
        "host   arch n/a, CPUs n/a, 121.7 GiB RAM, 113.1 GiB MemAvailable\n"
        "(replayed from fixture:gb10)"
    )


def test_render_discrete_gpu():
    r = fake_nvml.probe_from_fixture("rtx-5090")
    lines = render(r).splitlines()
    assert lines[0] == "1 GPU, driver 595.71.05, CUDA 13.2"
    assert lines[1] == "GPU 0  NVIDIA GeForce RTX 5090  sm_120  00000000:C5:00.0"
    assert lines[2] == "  memory  31.8 GiB total / 31.4 GiB free"
    assert lines[3] == "  power   limit 600 W   MIG n/a"
