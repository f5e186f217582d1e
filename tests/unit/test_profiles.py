"""Profiles: every shipped file loads with sources, bad data fails naming file and key, overrides merge,
recorded probes match the right profile, and the wheel ships the profiles."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spark_tui.core.hardware.probe import ProbeResult
from spark_tui.core.catalog.profiles import load_catalog, match_gpu, shipped_dir
from spark_tui.errors import ProfileError

ROOT = Path(__file__).resolve().parents[2]
PROBES = ROOT / "tests" / "data" / "probes"


@pytest.fixture(scope="module")
def cat():
    return load_catalog(user=False)


def test_every_shipped_profile_loads(cat) -> None:
    assert {"dgx-spark", "rtx-pro-6000", "rtx-pro-6000-maxq", "rtx-pro-6000-server", "rtx-5090", "b200", "b300",
            "gb200", "gb300", "h100", "h200", "a100", "cpu-test", "generic-sm12x", "generic-sm10x", "generic-sm9x",
            "generic-older"} <= set(cat.devices)
    assert set(cat.checkpoints) == {"nvidia-nvfp4", "redhatai-nvfp4", "infatoshi-nvfp4-fp8", "mmangkad-nvfp4",
                                    "qwen-bf16", "qwen-fp8"}
    assert cat.devices["dgx-spark"].sm == 121 and cat.devices["dgx-spark"].unified_memory
    assert cat.devices["b300"].sm == 103 and cat.devices["h100"].sm == 90 and cat.devices["a100"].supported is False
    assert cat.models["qwen3.6-35b-a3b"]["num_key_value_heads"] == 2


def test_published_figures_and_unknowns(cat) -> None:
    nv = cat.checkpoints["nvidia-nvfp4"]
    assert nv.accuracy["mmlu_pro"] == {"nvfp4": 85.0, "bf16": 85.6}
    assert nv.accuracy["tau2_bench_telecom"]["nvfp4"] == 94.7 and len(nv.accuracy) == 8
    assert nv.source("accuracy.gpqa_diamond") == nv.sources["accuracy"]  # a parent key's source covers the leaves
    assert "thakicloud.github.io" in nv.source("accuracy.gpqa_diamond")
    inf = cat.checkpoints["infatoshi-nvfp4-fp8"]
    assert inf.perplexity["this"] == 8.1939 and inf.mtp_dtype == "bf16" and inf.size_on_disk_gb == 24
    mm = cat.checkpoints["mmangkad-nvfp4"]
    assert mm.format is None and "format" in mm.unknown and mm.perplexity["this"] == 8.1853
    assert cat.checkpoints["redhatai-nvfp4"].size_on_disk_gb is None


def test_checkpoint_structures_as_published(cat) -> None:
    """The real quantization structure per checkpoint (issue 11): typed attributes, each with a source."""
    nv = cat.checkpoints["nvidia-nvfp4"]
    assert (nv.format, nv.quant_method, nv.experts, nv.shared_expert, nv.lm_head) == \
        ("modelopt_mixed", "modelopt_mixed", "W4A16_NVFP4", "W4A16_NVFP4", "W4A16_NVFP4")
    assert (nv.attention, nv.deltanet, nv.mtp_dtype, nv.group_size) == ("FP8_TENSOR", "FP8_TENSOR", "bf16", 16)
    assert (nv.kv_cache_quant_algo, nv.kv_cache_auto, nv.kv_cache_scales) == ("FP8", "bf16", False)
    assert nv.ignore == ("mtp.layers.0*", "mtp*") and nv.size_on_disk_gb == 23.46 and nv.w4a4 == "no"
    assert nv.is_nvfp4 and not nv.native_fp4_capable and nv.min_sm == 75
    assert "aiconfigurator PR #1513" in nv.source("experts") and "#151" in nv.source("size_on_disk_gb")
    assert [f.value for f in nv.figures_for(100)] == [3.72] and "#4249" in nv.figures_for(100)[0].source
    rh = cat.checkpoints["redhatai-nvfp4"]
    assert rh.experts == "W4A4_NVFP4" and rh.native_fp4_capable and rh.attention is None and "attention" in rh.unknown
    inf = cat.checkpoints["infatoshi-nvfp4-fp8"]
    assert (inf.experts, inf.attention, inf.shared_expert, inf.deltanet) == \
        ("W4A4_NVFP4", "FP8_CHANNEL", "FP8_CHANNEL", "BF16")
    fp8 = cat.checkpoints["qwen-fp8"]
    assert (fp8.quant_method, fp8.experts, fp8.group_size, fp8.size_on_disk_gb) == ("fp8", "FP8_BLOCK", 128, 37.5)
    assert not fp8.is_nvfp4 and cat.checkpoints["qwen-bf16"].experts == "BF16"
    mm = cat.checkpoints["mmangkad-nvfp4"]
    assert mm.experts is None and mm.is_nvfp4  # not verified: falls back to the id
    for c in cat.checkpoints.values():  # no source may point at a local seed file or FACTS.md
        assert not any("seed 0" in v or "FACTS.md" in v for v in c.sources.values()), c.id


def test_a_claimed_structure_needs_its_source_and_a_known_name(tmp_path) -> None:
    src = _copy(tmp_path)
    f = src / "checkpoints" / "qwen-fp8.toml"
    text = f.read_text()
    f.write_text(text.replace('experts = "FP8_BLOCK"', 'experts = "FP4ISH"', 1))
    with pytest.raises(ProfileError, match="key 'experts' must be one of"):
        load_catalog(shipped=src, user=False)
    f.write_text(text.replace('\nexperts = "weight_block_size', '\nx_experts = "weight_block_size'))
    with pytest.raises(ProfileError, match="key 'experts' .* has no source"):
        load_catalog(shipped=src, user=False)


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "profiles"
    shutil.copytree(shipped_dir(), dst)
    return dst


def test_number_without_source_is_rejected(tmp_path) -> None:
    d = _copy(tmp_path)
    f = d / "devices" / "h200.toml"
    f.write_text(f.read_text().replace("memory_gb = 141", "memory_gb = 141\nmemory_bandwidth_tbs = 4.8"))
    with pytest.raises(ProfileError) as e:
        load_catalog(shipped=d, user=False)
    assert "h200.toml" in e.value.message and "memory_bandwidth_tbs" in e.value.message
    assert e.value.exit_code == 4


def test_wrong_type_names_file_and_key(tmp_path) -> None:
    d = _copy(tmp_path)
    f = d / "devices" / "rtx-5090.toml"
    f.write_text(f.read_text().replace("sm = 120", 'sm = "twelve"'))
    with pytest.raises(ProfileError, match=r"rtx-5090.toml: key 'sm' must be int"):
        load_catalog(shipped=d, user=False)


def test_bad_toml_and_retired_keys(tmp_path) -> None:
    d = _copy(tmp_path)
    (d / "checkpoints" / "broken.toml").write_text("id = \n")
    with pytest.raises(ProfileError, match="broken.toml: invalid TOML"):
        load_catalog(shipped=d, user=False)
    (d / "checkpoints" / "broken.toml").unlink()
    # vLLM's own per-release defaults replaced these device keys: a file that still sets one is told how to move on
    f = d / "devices" / "h100.toml"
    text = f.read_text()
    for key, flag in (("gpu_memory_utilization = 0.9", "gpu-memory-utilization"),
                      ("vllm_default_max_num_seqs = 64", "max-num-seqs")):
        f.write_text(text.replace("memory_gb = 80", f"memory_gb = 80\n{key}"))
        with pytest.raises(ProfileError) as e:
            load_catalog(shipped=d, user=False)
        assert "h100.toml" in e.value.message and key.split()[0] in e.value.message and "no longer read" in e.value.message
        assert f"--set {flag}=" in e.value.hint and e.value.exit_code == 4


def test_user_override_changes_fields_and_adds_profiles(tmp_path) -> None:
    user = tmp_path / "user"
    (user / "devices").mkdir(parents=True)
    (user / "devices" / "my5090.toml").write_text(
        'id = "rtx-5090"\nmemory_gb = 30\n[sources]\nmemory_gb = "my own test"\n')
    (user / "devices" / "lab.toml").write_text(
        'id = "lab-card"\nname = "Lab card"\nfamily = "sm_12x"\nsm = 120\nmemory_gb = 48\nname_patterns = ["Lab"]\n'
        '[sources]\nsm = "lab"\nmemory_gb = "lab"\n')
    cat = load_catalog(user=user)
    d = cat.devices["rtx-5090"]
    assert d.memory_gb == 30 and d.source("memory_gb") == "my own test"
    assert d.sm == 120 and d.pci_device_ids == ("2b85",) and d.source("sm") == load_catalog(user=False).devices["rtx-5090"].source("sm")
    assert cat.devices["lab-card"].memory_gb == 48
    (user / "devices" / "bad.toml").write_text('id = "rtx-5090"\nmax_model_len = 4096\n')
    with pytest.raises(ProfileError, match="max_model_len"):
        load_catalog(user=user)
    (user / "devices" / "bad.toml").unlink()
    # an old override of a key vLLM's per-release defaults replaced says so, rather than "has no source"
    (user / "devices" / "old.toml").write_text('id = "rtx-5090"\ngpu_memory_utilization = 0.85\n')
    with pytest.raises(ProfileError, match=r"old.toml: key 'gpu_memory_utilization' is no longer read"):
        load_catalog(user=user)


EXPECTED = {"gb10": ("dgx-spark", "name"), "gb10-smi": ("dgx-spark", "name"),
            "rtx-pro-6000": ("rtx-pro-6000-maxq", "pci-device-id"), "rtx-5090": ("rtx-5090", "name"),
            "b200": ("b200", "name"), "multi-b200": ("b200", "name"), "h100": ("h100", "name"),
            "h200": ("h200", "name"), "a100": ("a100", "name")}


@pytest.mark.parametrize("probe_id", sorted(EXPECTED))
def test_recorded_probe_matches_profile(cat, probe_id) -> None:
    pr = ProbeResult.load(PROBES / probe_id / "probe.json")
    g = pr.gpus[0]
    m = match_gpu(cat, g.name, g.pci_device, g.sm)
    assert m is not None and (m.device.id, m.by) == EXPECTED[probe_id]


def test_match_preference_pci_then_name_then_sm(cat) -> None:
    assert match_gpu(cat, "something else", "0x2B8510DE", 120).device.id == "rtx-5090"  # PCI id wins
    assert match_gpu(cat, "NVIDIA GB200", None, 100).device.id == "gb200"  # longest pattern, not b200
    assert match_gpu(cat, "NVIDIA GB100", None, None) is None  # "GB10" must not match inside "GB100"
    assert match_gpu(cat, "NVIDIA RTX PRO 6000 Blackwell Server Edition", None, 120).device.id == "rtx-pro-6000-server"
    for sm, want in ((120, "generic-sm12x"), (121, "generic-sm12x"), (103, "generic-sm10x"), (90, "generic-sm9x"),
                     (86, "generic-older")):
        assert match_gpu(cat, "Future GPU", None, sm).device.id == want


@pytest.mark.slow
def test_profiles_load_from_installed_wheel(tmp_path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
                    str(ROOT)], check=True, timeout=300)
    whl = next(wheels.glob("spark_tui-*.whl"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(whl)],
                   check=True, timeout=300)
    code = ("import spark_tui, sys; from spark_tui.core.catalog.profiles import shipped_dir, load_catalog; "
            "d = shipped_dir(); assert '_profiles' in str(d), d; assert str(d).startswith(sys.argv[1]), d; "
            "c = load_catalog(user=False); print(len(c.devices), len(c.checkpoints), len(c.models))")
    out = subprocess.run([sys.executable, "-S", "-c", code, str(target)], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(target), "SPARK_TUI_HOME": str(tmp_path / "home")}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    n_dev, n_ck, n_models = map(int, out.stdout.split())
    assert n_dev == len(list((ROOT / "profiles" / "devices").glob("*.toml")))
    assert n_ck == 6 and n_models == 1
