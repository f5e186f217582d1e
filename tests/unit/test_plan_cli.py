"""`spark-tui plan`, `devices`, `checkpoints` as real subprocesses: JSON API fields, human output, exit codes."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*argv: str, home: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARK_TUI_HOME": str(home or ROOT / ".no-home")}
    return subprocess.run([sys.executable, "-m", "spark_tui", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("device", ["dgx-spark", "rtx-pro-6000", "rtx-5090", "b200", "h100"])
def test_plan_json_api(device) -> None:
    p = cli("plan", "--device", device, "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["argv"][:2] == ["vllm", "serve"] and d["device"]["id"] == device
    assert isinstance(d["env"], dict) and isinstance(d["warnings"], list)
    assert d["checkpoint"]["id"] == {"h100": "qwen-fp8", "dgx-spark": "nvidia-nvfp4", "b200": "redhatai-nvfp4"}.get(
        device, "infatoshi-nvfp4-fp8")
    assert d["memory"]["kv_cache_tokens"] > 100_000 and d["memory"]["max_concurrency"] >= 1
    for f in d["flags"]:
        assert set(f) == {"flag", "value", "reason", "source", "evidence", "effect"} and f["reason"] and f["source"]
        assert f["evidence"] in ("required", "measured")  # the default plan holds no unmeasured deviation
    assert d["baseline_argv"] == ["vllm", "serve", d["argv"][2]]
    assert {x["key"] for x in d["baseline"]["defaults"]} >= {"gpu_memory_utilization", "max_num_seqs", "max_model_len"}
    assert all(x["evidence"] == "unmeasured" for x in d["omitted"])
    # argv is exactly the model plus the flags, in order
    rebuilt = ["vllm", "serve", d["argv"][2]]
    for f in d["flags"]:
        rebuilt += [f["flag"]] + ([] if f["value"] is None else [f["value"]])
    assert rebuilt == d["argv"]


def test_plan_human_output_is_copy_pasteable() -> None:
    p = cli("plan", "--device", "rtx-5090", "--checkpoint", "nvidia-nvfp4", "--set", "VLLM_LOGGING_LEVEL=DEBUG")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    cmd = out.split("\n\n")[0].split("\n", 2)[2]  # after the two comment lines
    tokens = shlex.split(cmd.replace("\\\n", " "))
    assert tokens[0] == "VLLM_LOGGING_LEVEL=DEBUG" and tokens[1:4] == ["vllm", "serve", "nvidia/Qwen3.6-35B-A3B-NVFP4"]
    assert "--host" in tokens and "--speculative-config" not in tokens  # MTP unmeasured on the 5090: left out
    assert "predicted vLLM log: GPU KV cache size:" in out and "deviations from the baseline" in out
    # 23.46 GB of weights on 32 GiB: vLLM's default 262,144-token context cannot start, the plan says why
    assert "baseline (what `vllm serve nvidia/Qwen3.6-35B-A3B-NVFP4` does by itself here): does NOT start" in out
    assert "To serve at least one request" in out and "--max-model-len" in tokens
    assert "left out, unmeasured on this device (add them with --include-unmeasured):" in out
    assert "differences from the published recipe:" in out
    x = cli("plan", "--device", "rtx-5090", "--explain")
    assert x.returncode == 0 and "gpu_memory_utilization   0.92" in x.stdout and "[required]" in x.stdout
    assert "vLLM v0.33.0 vllm/config/cache.py:215" in x.stdout and "source: " in x.stdout
    u = cli("plan", "--device", "rtx-5090", "--include-unmeasured", "--json")
    assert any(f["evidence"] == "unmeasured" for f in json.loads(u.stdout)["flags"])


def test_plan_exit_codes() -> None:
    r = cli("plan", "--device", "a100")
    assert r.returncode == 5 and "sm_80" in r.stderr and "Traceback" not in r.stderr
    r = cli("plan", "--device", "nope")
    assert r.returncode == 2 and "no device profile" in r.stderr and "see `spark-tui devices`" in r.stderr
    r = cli("plan", "--device", "rtx-5090", "--goal", "fast")
    assert r.returncode == 2
    r = cli("plan", "--probe-file", str(ROOT / "missing.json"))
    assert r.returncode == 2 and "not found" in r.stderr
    r = cli("plan", "--device", "rtx-5090", "--set", "=1")
    assert r.returncode == 2 and "hint" in r.stderr


def test_plan_without_gpu_asks_for_device() -> None:
    # this machine has no NVIDIA driver: the probe fails and the plan asks for --device (exit 5)
    r = cli("plan", "--json")
    assert r.returncode == 5, r.stdout + r.stderr
    assert "--device" in r.stderr and "Traceback" not in r.stderr


def test_plan_probe_file_and_recipe() -> None:
    r = cli("plan", "--probe-file", str(ROOT / "tests" / "data" / "probes" / "gb10" / "probe.json"), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["device"]["id"] == "dgx-spark" and "--kv-cache-memory-bytes" in d["argv"]
    r = cli("plan", "--device", "dgx-spark", "--recipe", "model-card-spark", "--json")
    d = json.loads(r.stdout)
    assert d["recipe"] == "model-card-spark" and "--trust-remote-code" in d["argv"] and d["differences"]


def test_user_override_dir_changes_the_plan(tmp_path) -> None:
    (tmp_path / "config" / "profiles" / "devices").mkdir(parents=True)
    base = json.loads(cli("plan", "--device", "rtx-pro-6000", "--json", home=tmp_path).stdout)
    (tmp_path / "config" / "profiles" / "devices" / "x.toml").write_text(
        'id = "rtx-pro-6000"\nmemory_gb = 48\n[sources]\nmemory_gb = "site policy: a 48 GB partition"\n')
    d = json.loads(cli("plan", "--device", "rtx-pro-6000", "--json", home=tmp_path).stdout)
    assert d["device"]["memory_bytes"] == 48 * 2**30 != base["device"]["memory_bytes"]
    assert d["memory"]["kv_cache_tokens"] < base["memory"]["kv_cache_tokens"]
    (tmp_path / "config" / "profiles" / "devices" / "x.toml").write_text('id = "rtx-pro-6000"\nmemory_gb = 1\n')
    r = cli("plan", "--device", "rtx-pro-6000", home=tmp_path)
    assert r.returncode == 4 and "x.toml" in r.stderr and "memory_gb" in r.stderr


def test_devices_and_checkpoints_commands() -> None:
    r = cli("devices", "--json")
    devs = {d["id"]: d for d in json.loads(r.stdout)}
    assert devs["dgx-spark"]["sm"] == 121 and devs["a100"]["supported"] is False
    assert devs["rtx-pro-6000-maxq"]["pci_device_ids"] == ["2bb4"]
    assert "model-card-spark" in [x["id"] for x in devs["dgx-spark"]["recipes"]]
    r = cli("checkpoints", "--device", "h100", "--vllm-version", "0.33.0", "--json")
    cks = json.loads(r.stdout)
    assert cks[0]["id"] == "qwen-fp8" and cks[0]["kernel"]["backend"] == "TRITON" and cks[0]["rank"] == 1
    nv = next(c for c in cks if c["id"] == "nvidia-nvfp4")
    assert nv["kernel"]["backend"] == "HUMMING" and nv["experts"] == "W4A16_NVFP4"  # Humming before Marlin on sm_90
    r = cli("checkpoints", "--device", "rtx-5090", "--vllm-version", "0.26.0", "--json")
    cks = {c["id"]: c for c in json.loads(r.stdout)}
    assert list(cks)[0] == "infatoshi-nvfp4-fp8" and cks["infatoshi-nvfp4-fp8"]["kernel"]["native_fp4"]
    assert "does not fit" in cks["qwen-bf16"]["why"] and "does not fit" in cks["qwen-fp8"]["why"]
    assert cks["mmangkad-nvfp4"]["format"] is None and "format" in cks["mmangkad-nvfp4"]["unknown"]
    assert cks["nvidia-nvfp4"]["kernel"]["backend"] == "MARLIN" and not cks["nvidia-nvfp4"]["kernel"]["native_fp4"]
    order = [c["id"] for c in json.loads(cli("checkpoints", "--device", "b200", "--vllm-version", "0.26.0",
                                               "--json").stdout)]
    # flashinfer#4249 on B200: W4A4 FLASHINFER_TRTLLM < FP8 < W4A16 MARLIN (TPOT); unverified last
    assert order[:4] == ["redhatai-nvfp4", "infatoshi-nvfp4-fp8", "qwen-fp8", "nvidia-nvfp4"]
    assert order[-1] == "mmangkad-nvfp4"
    order = [c["id"] for c in json.loads(cli("checkpoints", "--device", "dgx-spark", "--json").stdout)]
    assert order[:3] == ["redhatai-nvfp4", "infatoshi-nvfp4-fp8", "nvidia-nvfp4"]  # 4-bit before FP8 on sm_12x
    r = cli("checkpoints", "--device", "b200", "--vllm-version", "0.26.0")
    assert "FLASHINFER_TRTLLM" in r.stdout and "3.29" in r.stdout and "oracle/nvfp4.py:179-188" in r.stdout
    r = cli("checkpoints", "--device", "b200", "--vllm-version", "banana")
    assert r.returncode == 2 and "--vllm-version" in r.stderr
    r = cli("checkpoints")
    assert r.returncode == 0 and "RedHatAI/Qwen3.6-35B-A3B-NVFP4" in r.stdout and "size not published" in r.stdout


def test_check_without_vllm_is_not_an_error() -> None:
    # the project venv has no vLLM: --check says so and the plan still exits 0
    r = cli("plan", "--device", "rtx-5090", "--check", "--json")
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)["check"]
    assert c["status"] == "unavailable" and "not importable" in c["message"]


def test_plan_arguments_api_for_other_commands(tmp_path, monkeypatch) -> None:
    """export / launch / tune / the TUI build their parsers with add_plan_arguments and call plan_from_args."""
    import argparse

    from spark_tui.commands.plan import add_plan_arguments, plan_from_args

    monkeypatch.setenv("SPARK_TUI_HOME", str(tmp_path))
    p = argparse.ArgumentParser()
    add_plan_arguments(p)
    args = p.parse_args(["--device", "rtx-5090", "--context", "32768", "--concurrency", "4", "--mtp", "1",
                         "--set", "max-num-batched-tokens=4096", "--port", "8100", "--served-model-name", "q"])
    plan = plan_from_args(args)
    f = {x.name: x.text for x in plan.flags}
    assert (f["--max-model-len"], f["--max-num-seqs"], f["--max-num-batched-tokens"]) == ("32768", "4", "4096")
    assert plan.port == 8100 and plan.served_model_name == "q"
    assert json.loads(f["--speculative-config"])["num_speculative_tokens"] == 1
    assert not any(a.dest in ("json", "check") for a in p._actions)
    # a namespace from another command that lacks some plan options still works
    assert plan_from_args(argparse.Namespace(device="h100")).device.id == "h100"


def test_plan_adapts_to_the_installed_vllm(tmp_path) -> None:
    """With no --vllm-version, the flags are written for the vLLM that is installed (package metadata only:
    vllm itself is never imported); --vllm-version still wins."""
    import json
    import os
    import subprocess
    import sys

    dist = tmp_path / "vllm-0.26.0+cu130.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.26.0+cu130\n")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}

    def plan_json(*extra):
        r = subprocess.run([sys.executable, "-m", "spark_tui", "plan", "--device", "h100", "--json", *extra],
                           capture_output=True, text=True, env=env, check=True)
        return json.loads(r.stdout)

    p = plan_json()
    assert p["vllm_version"] == "0.26.0"
    assert not any("written for vLLM" in w for w in p["warnings"])
    assert plan_json("--vllm-version", "0.33.0")["vllm_version"] == "0.33.0"
