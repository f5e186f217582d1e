"""Issue #14: the hostile inputs that gave tracebacks (item 8), negative or zero sizes in profiles (item 9) and
the smaller argument checks (item 12). Each runs the real CLI (in-process where that is enough; a subprocess
where the process's own stdout or exit matters) and asserts a documented exit code, a message naming the
problem, and no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spark_tui.cli import main
from spark_tui.errors import ExitCode

ROOT = Path(__file__).resolve().parents[2]
PROBES = ROOT / "tests" / "data" / "probes"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_TUI_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SPARK_TUI_VLLM", raising=False)
    return tmp_path / "home"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as e:  # argparse: 2 for a bad option
        rc = e.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def override(home: Path, kind: str, text: str | bytes) -> Path:
    d = home / "config" / "profiles" / kind
    d.mkdir(parents=True, exist_ok=True)
    p = d / "override.toml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


# ------------------------------------------------------------------------------------------- item 8
@pytest.mark.parametrize("item,named", [
    ("max-num-seqs=abc", "'abc' is not a valid value for --max-num-seqs"),
    ("gpu-memory-utilization=nan", "'nan' is not a finite number for --gpu-memory-utilization"),
    ("port=abc", "'abc' is not a valid value for --port"),
    ("port=99999", "'99999' is out of range for --port"),
])
def test_plan_set_values_of_the_wrong_type_exit_2(capsys, item, named):
    rc, out, err = run(capsys, "plan", "--device", "dgx-spark", "--set", item)
    assert rc == ExitCode.USAGE, err
    assert named in err and "hint: --" in err


def test_export_and_launch_refuse_the_same_set_values_before_anything_runs(capsys):
    rc, _, err = run(capsys, "export", "--format", "bash", "--device", "rtx-5090", "--set", "port=99999")
    assert rc == ExitCode.USAGE and "out of range for --port" in err
    rc, _, err = run(capsys, "launch", "--device", "rtx-5090", "--set", "max-num-seqs=abc")
    assert rc == ExitCode.USAGE and "--max-num-seqs" in err


def test_model_path_that_is_a_file_exits_2(capsys):
    rc, _, err = run(capsys, "plan", "--device", "dgx-spark", "--model-path", "/etc/passwd")
    assert rc == ExitCode.USAGE and "'/etc/passwd' is not a directory" in err


def _probe_with(tmp_path: Path, src: str, edit) -> Path:
    d = json.loads((PROBES / src / "probe.json").read_text())
    edit(d)
    p = tmp_path / "probe.json"
    p.write_text(json.dumps(d))  # json.dumps writes NaN / Infinity, as a hand-edited file may hold
    return p


@pytest.mark.parametrize("src,edit,named", [
    ("gb10", lambda d: d["host"].update(ram_total_bytes=float("nan"), mem_available_bytes=float("nan")),
     "host.ram_total_bytes must be a finite number"),
    ("h100", lambda d: d["gpus"][0].update(memory_total_bytes=float("nan")), "gpus[0].memory_total_bytes"),
    ("h100", lambda d: d["gpus"][0].update(memory_total_bytes=float("inf")), "gpus[0].memory_total_bytes"),
    ("h100", lambda d: d["gpus"][0].update(memory_total_bytes=-5), "gpus[0].memory_total_bytes"),  # item 9
    ("h100", lambda d: d["gpus"][0].update(memory_total_bytes=True), "gpus[0].memory_total_bytes"),
    ("h100", lambda d: d["gpus"][0].update(memory_total_bytes=1.5), "must be an integer"),
])
def test_probe_file_with_nan_or_negative_memory_exits_2(capsys, tmp_path, src, edit, named):
    p = _probe_with(tmp_path, src, edit)
    for argv in (("plan", "--probe-file", str(p)), ("probe", "--probe-file", str(p))):
        rc, _, err = run(capsys, *argv)
        assert rc == ExitCode.USAGE and "probe data is malformed" in err and named in err, err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
def test_profile_override_with_nan_or_inf_memory_exits_4(capsys, home, value):
    p = override(home, "devices", f'id = "dgx-spark"\nmemory_gb = {value}\ncuda_total_memory_gib = {value}\n'
                                  '[sources]\nmemory_gb = "x"\ncuda_total_memory_gib = "x"\n')
    rc, _, err = run(capsys, "plan", "--device", "dgx-spark")
    assert rc == ExitCode.PROFILE and str(p) in err and "is not finite" in err


def test_binary_toml_override_exits_4(capsys, home):
    p = override(home, "devices", bytes(range(256)) * 2)
    rc, _, err = run(capsys, "devices")
    assert rc == ExitCode.PROFILE and str(p) in err and "not a UTF-8 text file" in err


def test_num_key_value_heads_zero_in_a_model_profile_exits_4(capsys, home):
    override(home, "models", 'id = "qwen3.6-35b-a3b"\nnum_key_value_heads = 0\n[sources]\nnum_key_value_heads = "x"\n')
    rc, _, err = run(capsys, "plan", "--device", "rtx-5090")
    assert rc == ExitCode.PROFILE and "'num_key_value_heads' must be positive, got 0" in err


TINY = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "dtype": "bfloat16", "head_dim": 32,
        "hidden_size": 128, "intermediate_size": 256, "max_position_embeddings": 2048, "moe_intermediate_size": 64,
        "num_attention_heads": 4, "num_experts_per_tok": 2, "num_hidden_layers": 2, "num_key_value_heads": 2,
        "num_local_experts": 8, "vocab_size": 4096}


@pytest.mark.parametrize("change,named", [
    ({"num_key_value_heads": 0}, "num_key_value_heads must be positive"),
    ({"num_attention_heads": 0, "head_dim": None}, "num_attention_heads must be positive"),
    ({"hidden_size": -128}, "hidden_size must be positive"),
    ({"num_hidden_layers": [2]}, "malformed config"),
    ({"vocab_size": "lots"}, "invalid literal"),
])
def test_a_config_json_with_zero_heads_or_bad_sizes_exits_2(capsys, tmp_path, change, named):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({**TINY, **change}))
    rc, _, err = run(capsys, "plan", "--device", "cpu-test", "--model-path", str(d))
    assert rc == ExitCode.USAGE and named in err, err


def test_spark_tui_vllm_with_an_unbalanced_quote_is_a_vllm_error(monkeypatch):
    from spark_tui.core.runtime import supervisor as sv
    from spark_tui.errors import VllmError

    monkeypatch.setenv("SPARK_TUI_VLLM", "'/opt/my vllm/bin/vllm")
    with pytest.raises(VllmError, match="cannot be split into words"):
        sv.resolve_vllm()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("argv", [("export", "--device", "rtx-5090", "--format", "bash"),
                                  ("plan", "--device", "rtx-5090", "--json"), ("devices",)])
def test_output_to_a_full_disk_exits_1_without_a_traceback(tmp_path, argv):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARK_TUI_HOME": str(tmp_path)}
    with open("/dev/full", "w") as full:
        p = subprocess.run([sys.executable, "-m", "spark_tui", *argv], stdout=full, stderr=subprocess.PIPE,
                           text=True, env=env, timeout=120)
    assert p.returncode == ExitCode.FAILURE, p.stderr
    assert "cannot write the output: No space left on device" in p.stderr and "Traceback" not in p.stderr
    assert "Exception ignored" not in p.stderr


# ------------------------------------------------------------------------------------------- item 9
@pytest.mark.parametrize("kind,pid,key,value,argv", [
    ("devices", "rtx-5090", "memory_gb", "-32", ("plan", "--device", "rtx-5090")),
    ("devices", "rtx-5090", "memory_gb", "0", ("plan", "--device", "rtx-5090")),
    ("devices", "dgx-spark", "cuda_total_memory_gib", "-1.5", ("plan", "--device", "dgx-spark")),
    ("devices", "rtx-5090", "max_model_len", "0", ("devices",)),
    ("checkpoints", "nvidia-nvfp4", "size_on_disk_gb", "-20", ("plan", "--device", "rtx-5090")),
    ("checkpoints", "nvidia-nvfp4", "size_on_disk_gb", "0", ("checkpoints",)),
    ("models", "qwen3.6-35b-a3b", "hidden_size", "-2048", ("plan", "--device", "rtx-5090")),
    ("models", "qwen3.6-35b-a3b", "mtp_num_hidden_layers", "-1", ("plan", "--device", "rtx-5090")),
])
def test_negative_or_zero_memory_and_sizes_in_profiles_exit_4(capsys, home, kind, pid, key, value, argv):
    p = override(home, kind, f'id = "{pid}"\n{key} = {value}\n[sources]\n{key} = "x"\n')
    rc, out, err = run(capsys, *argv)
    assert rc == ExitCode.PROFILE, (out, err)
    assert str(p) in err and f"key '{key}' must be" in err


def test_zero_is_still_fine_where_zero_means_none(capsys, home):
    override(home, "models", 'id = "qwen3.6-35b-a3b"\nmtp_num_hidden_layers = 0\n[sources]\nmtp_num_hidden_layers = "x"\n')
    rc, _, err = run(capsys, "plan", "--device", "rtx-5090", "--mtp", "0")
    assert rc == 0, err


# ------------------------------------------------------------------------------------------- item 12
@pytest.mark.parametrize("version", ["banana", "", "0.x", "1", "0.32.0; rm -rf /", "0.32.0\nx"])
def test_vllm_version_must_be_a_version(capsys, version):
    rc, _, err = run(capsys, "plan", "--device", "rtx-5090", "--vllm-version", version)
    assert rc == ExitCode.USAGE and "is not a vLLM version" in err


@pytest.mark.parametrize("version", ["0.32.0", "v0.19", "0.11.0rc1", "0.32.0+cpu", "0.10.1.1", "nightly"])
def test_real_versions_are_accepted(capsys, version):
    rc, _, err = run(capsys, "plan", "--device", "rtx-5090", "--vllm-version", version, "--json")
    assert rc == 0, err


def test_probe_save_needs_force_to_overwrite(capsys, tmp_path):
    target = tmp_path / "box.json"
    target.write_text("keep me\n")
    src = str(PROBES / "h100" / "probe.json")
    rc, _, err = run(capsys, "probe", "--probe-file", src, "--save", str(target))
    assert rc == ExitCode.USAGE and "already exists" in err and "--force" in err
    assert target.read_text() == "keep me\n"
    rc, _, err = run(capsys, "probe", "--probe-file", src, "--save", str(target), "--force")
    assert rc == 0, err
    assert json.loads(target.read_text())["gpus"][0]["name"].startswith("NVIDIA H100")
    assert [p.name for p in tmp_path.iterdir()] == ["box.json"]  # no temporary file left


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_probe_save_never_writes_onto_a_device(capsys):
    rc, _, err = run(capsys, "probe", "--probe-file", str(PROBES / "h100" / "probe.json"), "--save", "/dev/null",
                     "--force")
    assert rc == ExitCode.USAGE and "not a regular file" in err


# ------------------------------------------------------------------------------------------- item 2
TOKEN = "hf_" + "Zq9" * 12


@pytest.mark.parametrize("item", [f"HF_TOKEN={TOKEN}", f"VLLM_API_KEY={TOKEN}", f"api-key={TOKEN}",
                                  f"--api-key={TOKEN}", f"hf-token={TOKEN}", f"served-model-name={TOKEN}"])
@pytest.mark.parametrize("argv", [("plan", "--device", "rtx-5090", "--json"),
                                  ("export", "--device", "rtx-5090", "--format", "systemd", "-o", "unit.service"),
                                  ("launch", "--device", "rtx-5090", "--detach")])
def test_secrets_in_set_are_refused_and_written_nowhere(capsys, tmp_path, monkeypatch, home, argv, item):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(capsys, *argv, f"--set={item}")
    assert rc == ExitCode.USAGE, (out, err)
    assert "refusing a secret on the command line" in err and "hint: " in err
    assert TOKEN not in out + err
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(TOKEN in p.read_text(errors="replace") for p in written), written


# ------------------------------------------------------------------------------------------- item 12 (timeouts)
@pytest.mark.parametrize("argv", [
    ("launch", "--device", "rtx-5090", "--startup-timeout", "nan"),
    ("launch", "--device", "rtx-5090", "--startup-timeout", "0"),
    ("launch", "--device", "rtx-5090", "--startup-timeout", "inf"),
    ("launch", "--device", "rtx-5090", "--stats-interval", "-1"),
    ("launch", "--device", "rtx-5090", "--stats-interval", "nan"),
    ("stop", "--grace", "nan"),
    ("stop", "--all", "--grace", "-5"),
    ("stop", "--grace", "inf"),
])
def test_timeouts_must_be_positive_and_finite(capsys, argv):
    rc, _, err = run(capsys, *argv)
    assert rc == ExitCode.USAGE and f"argument {argv[-2]}" in err and "positive, finite" in err
