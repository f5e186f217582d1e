"""Generated scripts: shellcheck-clean, and they run the exact argv (PATH stubs record it)."""

from __future__ import annotations

import pytest

from spark_tui.core.export import formats as ex
from tests.unit.test_export_support import run_with_stubs, shellcheck, unit_environment, unit_exec_argv
from tests.unit.test_export_render import multi_gpu_plan, spark_plan

OPTION_SETS = [
    ("loopback", "127.0.0.1", ex.ExportOptions()),
    ("public-key-env", "0.0.0.0", ex.ExportOptions(api_key_env="MY_KEY")),
    ("public-env-file", "0.0.0.0", ex.ExportOptions(env_file="/etc/spark tui/api.env")),
    ("venv-ifname", "127.0.0.1", ex.ExportOptions(vllm_bin="/opt/my venv/bin/vllm", ifname="enp1s0f0np0", nodes=3)),
]


@pytest.mark.parametrize("fmt", ["bash", "docker", "ray"])
@pytest.mark.parametrize("label,host,opts", OPTION_SETS, ids=[o[0] for o in OPTION_SETS])
def test_shellcheck_clean(fmt, label, host, opts, tmp_path):
    for f in ex.render(spark_plan(host), fmt, opts):
        shellcheck(f.content, tmp_path)
    # the Ray export refuses data-parallel replicas (one server across nodes): it is checked with TP only
    for f in ex.render(multi_gpu_plan(2, 1 if fmt == "ray" else 2), fmt, ex.ExportOptions()):
        shellcheck(f.content, tmp_path)


def test_bash_runs_plan_argv_with_env(tmp_path):
    p = spark_plan()
    r = run_with_stubs(ex.to_bash(p), tmp_path, ("vllm",), {"HF_TOKEN": "hf_passthrough_value"})
    assert r["rc"] == 0, r["stderr"]
    assert ["vllm", *r["vllm"]] == p.argv()
    assert r["vllm.env"]["VLLM_USE_DEEP_GEMM"] == "0"
    assert r["vllm.env"]["HF_TOKEN"] == "hf_passthrough_value"  # passed through, not written


def test_bash_requires_api_key_when_public(tmp_path):
    script = ex.to_bash(spark_plan("0.0.0.0"), ex.ExportOptions(api_key_env="MY_KEY"))
    r = run_with_stubs(script, tmp_path, ("vllm",))
    assert r["rc"] != 0 and "MY_KEY" in r["stderr"] and "vllm" not in r
    r = run_with_stubs(script, tmp_path, ("vllm",), {"MY_KEY": "k-123"})
    assert r["rc"] == 0 and r["vllm.env"]["VLLM_API_KEY"] == "k-123"


def test_bash_reads_env_file(tmp_path):
    env_file = tmp_path / "api key.env"
    env_file.write_text("VLLM_API_KEY=from-file\n")
    script = ex.to_bash(spark_plan("0.0.0.0"), ex.ExportOptions(env_file=str(env_file)))
    r = run_with_stubs(script, tmp_path, ("vllm",))
    assert r["rc"] == 0, r["stderr"]
    assert r["vllm.env"]["VLLM_API_KEY"] == "from-file"
    assert "from-file" not in script


def test_docker_runs_image_with_container_args(tmp_path):
    p = spark_plan()
    r = run_with_stubs(ex.to_docker(p), tmp_path, ("docker",))
    assert r["rc"] == 0, r["stderr"]
    args = r["docker"]
    i = args.index("vllm/vllm-openai:v0.33.0")
    assert args[i + 1 :] == ex.container_args(p)
    assert args[:2] == ["run", "--rm"]
    assert ["-p", "127.0.0.1:8000:8000"] == args[args.index("-p") : args.index("-p") + 2]
    assert f"{tmp_path}/.cache/huggingface:/root/.cache/huggingface" in args
    assert ["-e", "HF_TOKEN"] == args[args.index("HF_TOKEN") - 1 : args.index("HF_TOKEN") + 1]


def test_ray_head_and_worker_run(tmp_path):
    p = spark_plan(tensor_parallel_size=1, nodes=2)
    head, worker = ex.to_ray(p)
    env = {"VLLM_HOST_IP": "10.0.0.1", "NCCL_SOCKET_IFNAME": "enp1s0f0np0", "RAY_HEAD_IP": "10.0.0.1"}
    r = run_with_stubs(worker.content, tmp_path, ("ray",), env)
    assert r["rc"] == 0, r["stderr"]
    assert r["ray"] == ["start", "--block", "--address=10.0.0.1:6379", "--node-ip-address=10.0.0.1"]
    assert r["ray.env"]["GLOO_SOCKET_IFNAME"] == "enp1s0f0np0"
    # the head waits for the cluster through python3: a stub python3 that reports 2 alive nodes
    stub_py = tmp_path / "stubbin"
    stub_py.mkdir(exist_ok=True)
    (stub_py / "python3").write_text("#!/bin/sh\necho 2\n")
    (stub_py / "python3").chmod(0o755)
    r = run_with_stubs(head.content, tmp_path, ("ray", "vllm"), env)
    assert r["rc"] == 0, r["stderr"]
    assert r["ray"][:2] == ["start", "--head"]
    assert ["vllm", *r["vllm"]] == ["vllm", "serve", *p.argv()[2:],
                                    "--tensor-parallel-size", "1", "--pipeline-parallel-size", "2",
                                    "--distributed-executor-backend", "ray"]
    assert r["vllm.env"]["VLLM_HOST_IP"] == "10.0.0.1"


def test_ray_head_gives_up_when_workers_do_not_join(tmp_path):
    head, _ = ex.to_ray(spark_plan())
    stub = tmp_path / "stubbin"
    stub.mkdir()
    (stub / "python3").write_text("#!/bin/sh\necho 1\n")
    (stub / "python3").chmod(0o755)
    (stub / "sleep").write_text("#!/bin/sh\nexit 0\n")
    (stub / "sleep").chmod(0o755)
    env = {"VLLM_HOST_IP": "10.0.0.1", "NCCL_SOCKET_IFNAME": "eth0"}
    r = run_with_stubs(head.content, tmp_path, ("ray", "vllm"), env)
    assert r["rc"] == 1 and "only 1 of 2 Ray nodes joined" in r["stderr"] and "vllm" not in r


def test_systemd_unit_round_trips_argv_and_env():
    p = spark_plan()
    unit = ex.to_systemd(p)
    assert unit_exec_argv(unit) == ["/usr/bin/env", *p.argv()]
    assert unit_environment(unit) == {"VLLM_USE_DEEP_GEMM": "0"}
    assert "EnvironmentFile=-/etc/spark-tui/vllm.env\n" in unit
    for line in ("Restart=on-failure", "KillSignal=SIGINT", "TimeoutStopSec=60", "User=vllm",
                 "WorkingDirectory=/var/lib/vllm"):
        assert f"\n{line}\n" in unit


def test_systemd_public_requires_env_file_and_absolute_bin():
    unit = ex.to_systemd(spark_plan("0.0.0.0"), ex.ExportOptions(api_key_env="VLLM_API_KEY", vllm_bin="/opt/v/bin/vllm"))
    assert "EnvironmentFile=/etc/spark-tui/vllm.env\n" in unit  # no `-`: a missing file fails the start
    assert unit_exec_argv(unit)[:2] == ["/opt/v/bin/vllm", "serve"]


HOSTILE_VALUES = [" ';$(rm -rf /) %n ${HOME} ; ", 'a"b\\c', "new\nline\ttab", "é 😀", "--", ";", "\\;", "$$", "%%"]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_systemd_analyze_verify_accepts_the_unit(value, tmp_path):
    """systemd's own parser (when installed) loads the unit without a warning; ours gets the argv back."""
    import shutil
    import subprocess

    from spark_tui.core.planning.flags import Flag

    p = spark_plan(model="/models/" + value, flags=[*spark_plan().flags, Flag("--x", value, "r", "s")])
    unit = ex.to_systemd(p, ex.ExportOptions(user="root", working_directory="/tmp"))
    assert unit_exec_argv(unit) == ["/usr/bin/env", *p.argv()]
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed")
    path = tmp_path / "spark-tui-vllm.service"
    path.write_text(unit, encoding="utf-8")
    r = subprocess.run([exe, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
