"""One flag model: `plan`'s argv is exactly what `launch` runs (`launch --dry-run`) and the command inside every
export format (the containers bind 0.0.0.0 inside, published on the plan's host)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spark_tui.commands.launch import dry_run_command
from spark_tui.core.export import formats as ex
from spark_tui.core.planning.planner import make_plan
from spark_tui.errors import PlanError
from tests.unit.test_export_support import run_with_stubs, unit_exec_argv

ROOT = Path(__file__).resolve().parents[2]


def _container(argv: list[str]) -> list[str]:
    """plan argv -> the container's args: the model and flags, with --host 0.0.0.0 inside the container."""
    out = list(argv[2:])
    if "--host" in out:
        out[out.index("--host") + 1] = "0.0.0.0"
    else:
        out += ["--host", "0.0.0.0"]
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(device=st.sampled_from(["dgx-spark", "rtx-pro-6000", "rtx-5090", "b200", "h200"]),
       goal=st.sampled_from(["latency", "throughput", "context", "balanced"]),
       context=st.one_of(st.none(), st.sampled_from([8192, 32768, 65536])),
       mtp=st.one_of(st.none(), st.integers(0, 3)), port=st.sampled_from([None, 8000, 9000, 18011]),
       unmeasured=st.booleans(), extra=st.sampled_from([[], ["max-num-seqs=16"], ["VLLM_LOGGING_LEVEL=DEBUG"]]))
def test_plan_launch_and_exports_run_the_same_argv(tmp_path, monkeypatch, device, goal, context, mtp, port,
                                                   unmeasured, extra) -> None:
    monkeypatch.setenv("SPARK_TUI_HOME", str(tmp_path))
    monkeypatch.delenv("SPARK_TUI_VLLM", raising=False)
    sets = list(extra) + ([f"port={port}"] if port else [])
    try:
        plan = make_plan(device=device, goal=goal, context=context, mtp=mtp, set_flags=sets,
                         include_unmeasured=unmeasured, vllm_version="0.33.0")
    except PlanError:
        return
    argv = plan.argv()
    if port:
        assert plan.port == port and argv[argv.index("--port") + 1] == str(port)
    launched, env = dry_run_command(plan)
    assert launched[-len(argv) + 1:] == argv[1:] and launched[:-len(argv) + 1] in (["vllm"], [sys.executable, "-m",
                                                                                          "vllm.entrypoints.cli.main"])
    assert {k: v for k, v in env.items() if k != "VLLM_HOST_IP"} == plan.env_dict()
    # bash runs exactly it
    with tempfile.TemporaryDirectory() as d:
        r = run_with_stubs(ex.to_bash(plan), Path(d), ("vllm",))
    assert r["rc"] == 0, r["stderr"]
    assert ["vllm", *r["vllm"]] == argv
    # systemd's ExecStart
    assert unit_exec_argv(ex.to_systemd(plan)) == ["/usr/bin/env", *argv]
    # the containers
    assert ex.container_args(plan) == _container(argv)
    assert yaml.safe_load(ex.to_compose(plan))["services"]["vllm"]["command"] == _container(argv)
    k8s = {x["kind"]: x for x in yaml.safe_load_all(ex.to_k8s(plan))}
    assert k8s["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"] == _container(argv)
    dock, _ = dry_run_command(plan, runtime="docker") if _has_docker() else (None, None)
    if dock is not None:
        assert dock[dock.index(ex.image_for(plan, ex.ExportOptions())) + 1:] == _container(argv)


def _has_docker() -> bool:
    import shutil

    return shutil.which("docker") is not None


def cli(*argv: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARK_TUI_HOME": str(home)}
    env.pop("SPARK_TUI_VLLM", None)
    return subprocess.run([sys.executable, "-m", "spark_tui", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_launch_set_port_serves_on_that_port(tmp_path) -> None:
    """The bug: `launch --device rtx-5090 --set port=9000` served on 8000 while plan and export said 9000."""
    r = cli("launch", "--device", "rtx-5090", "--set", "port=9000", "--dry-run", "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    launched = json.loads(r.stdout)["argv"]
    assert launched.count("--port") == 1 and launched[launched.index("--port") + 1] == "9000"
    planned = json.loads(cli("plan", "--device", "rtx-5090", "--set", "port=9000", "--json", home=tmp_path).stdout)
    assert launched[-(len(planned["argv"]) - 1):] == planned["argv"][1:]
    bash = cli("export", "--device", "rtx-5090", "--set", "port=9000", "--format", "bash", home=tmp_path).stdout
    assert "--port 9000" in bash
    # --port works the same way, and nothing was started
    r2 = cli("launch", "--device", "rtx-5090", "--port", "9001", "--dry-run", home=tmp_path)
    assert r2.returncode == 0 and "--port 9001" in r2.stdout and "VLLM_HOST_IP=127.0.0.1" in r2.stdout
    assert not (tmp_path / "state" / "servers").exists() or not list((tmp_path / "state" / "servers").iterdir())
