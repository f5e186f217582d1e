"""spark-tui ablate --list: the servers an ablation starts, in order (no server is started)."""
import subprocess
import sys

H200 = ["--device", "h200", "--checkpoint", "nvidia-nvfp4", "--vllm-version", "0.26.0", "--context", "131072",
        "--include-unmeasured", "--set-all", "max-num-seqs=256", "--list"]
PRO = ["--device", "rtx-pro-6000", "--vllm-version", "0.33.0", "--context", "32768", "--include-unmeasured",
       "--set-all", "max-num-seqs=64", "--list"]


def _list(*extra: str, args: list[str] = H200) -> list[tuple[str, str]]:
    r = subprocess.run([sys.executable, "-m", "spark_tui", "ablate", *args, *extra], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    # "key: label" then "  vllm serve ..."
    return [(lines[i].split(":", 1)[0], lines[i + 1].strip()) for i in range(0, len(lines) - 1, 2)
            if not lines[i].startswith(" ")]


def test_mtp_variants_start_in_the_order_given() -> None:
    keys = [k for k, _ in _list("--mtp-values", "1,3,2")]
    assert keys[:5] == ["baseline", "required", "mtp-1", "mtp-3", "mtp-2"]
    assert keys[-1] == "plan"


def test_a_skipped_deviation_is_left_out_of_the_full_plan_too() -> None:
    full = dict(_list(args=PRO))["plan"]
    assert "--load-format" in full and "--kv-cache-dtype fp8" in full  # unmeasured candidates on sm_120
    v = dict(_list("--skip", "load-format", args=PRO))
    assert "--load-format" not in v["plan"] and "--kv-cache-dtype fp8" in v["plan"]
    assert not any(k.startswith("--load-format") for k in v)


def test_h200_measured_deviations_are_not_candidates() -> None:
    # profiles/measured.toml: --kv-cache-dtype fp8 measured on the H200 without a gain, MTP off by the MTP model
    v = dict(_list("--skip", "load-format"))
    assert not any(k.startswith("--kv-cache-dtype") for k in v)
    # nothing unmeasured is left once fastsafetensors is skipped: the required variant is the plan
    assert "plan" not in v and v["required"].startswith("vllm serve")
