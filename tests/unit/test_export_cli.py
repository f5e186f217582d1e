"""`spark-tui export` end to end through the CLI, with the real planner (spark_tui.commands.plan)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECRET_HF = "hf_TESTTOKEN_must_never_be_written_0123456789"
SECRET_KEY = "sk-TESTKEY-must-never-be-written-9876543210"


def test_import_hygiene():
    code = (
        "import sys, spark_tui.core.export.formats, spark_tui.commands.export; "
        "print(sorted(m for m in ('textual', 'torch', 'vllm', 'httpx', 'yaml') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_no_secret_value_in_any_format_even_with_secrets_in_env(monkeypatch):
    from spark_tui.core.export import formats as ex
    from tests.unit.test_export_render import spark_plan

    monkeypatch.setenv("HF_TOKEN", SECRET_HF)
    monkeypatch.setenv("VLLM_API_KEY", SECRET_KEY)
    for host, opts in [("127.0.0.1", ex.ExportOptions()), ("0.0.0.0", ex.ExportOptions(api_key_env="VLLM_API_KEY"))]:
        for fmt in ex.FORMATS:
            text = ex.combined(ex.render(spark_plan(host), fmt, opts))
            assert SECRET_HF not in text and SECRET_KEY not in text
            assert "HF_TOKEN" in text  # referenced by name


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "VLLM_API_KEY")}
    e.update({"PYTHONPATH": str(REPO), **(env or {})})
    return subprocess.run([sys.executable, "-m", "spark_tui", *args], capture_output=True, text=True,
                          cwd=cwd, env=e, timeout=120)


def test_bash_export_runs_the_planned_argv(tmp_path):
    """The real planner's argv (`plan --json`) is exactly what the exported script execs."""
    import json

    from tests.unit.test_export_support import run_with_stubs

    plan = cli("plan", "--device", "dgx-spark", "--json", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    expected = json.loads(plan.stdout)
    r = cli("export", "--format", "bash", "--device", "dgx-spark", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ran = run_with_stubs(r.stdout, tmp_path, ("vllm",))
    assert ran["rc"] == 0, ran["stderr"]
    assert ["vllm", *ran["vllm"]] == expected["argv"]
    for k, v in expected["env"].items():
        assert ran["vllm.env"][k] == v


@pytest.mark.parametrize("fmt", ["docker", "compose", "systemd", "k8s", "ray"])
def test_every_format_from_the_real_planner(fmt, tmp_path):
    import yaml

    r = cli("export", "--format", fmt, "--device", "b200", "--set=--tensor-parallel-size=2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "--tensor-parallel-size" in r.stdout
    if fmt == "compose":
        svc = yaml.safe_load(r.stdout)["services"]["vllm"]
        assert svc["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 2
    if fmt == "k8s":
        dep = [d for d in yaml.safe_load_all(r.stdout) if d["kind"] == "Deployment"][0]
        assert dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2


def test_public_host_without_key_exits_2_and_writes_nothing(tmp_path):
    r = cli("export", "--format", "bash", "--device", "dgx-spark", "--host", "0.0.0.0", "-o", "serve.sh", cwd=tmp_path)
    assert r.returncode == 2
    assert "without an API key" in r.stderr and "hint: add --api-key-env" in r.stderr
    assert "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_output_file_modes_and_no_silent_overwrite(tmp_path):
    r = cli("export", "--format", "bash", "--device", "dgx-spark", "-o", "serve.sh", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == ""
    script = tmp_path / "serve.sh"
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    script.write_text("mine\n")
    r = cli("export", "--format", "bash", "--device", "dgx-spark", "-o", "serve.sh", cwd=tmp_path)
    assert r.returncode == 2 and "already exists" in r.stderr and "--force" in r.stderr
    assert script.read_text() == "mine\n"
    r = cli("export", "--format", "bash", "--device", "dgx-spark", "-o", "serve.sh", "--force", cwd=tmp_path)
    assert r.returncode == 0 and script.read_text().startswith("#!/usr/bin/env bash\n")
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    r = cli("export", "--format", "compose", "--device", "dgx-spark", "-o", "compose.yaml", cwd=tmp_path)
    assert r.returncode == 0 and stat.S_IMODE((tmp_path / "compose.yaml").stat().st_mode) == 0o644


def test_ray_to_directory(tmp_path):
    r = cli("export", "--format", "ray", "--device", "dgx-spark", "--nodes", "2", "-o", "cluster", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in (tmp_path / "cluster").iterdir())
    assert files == ["ray-head.sh", "ray-worker.sh"]
    assert all(stat.S_IMODE((tmp_path / "cluster" / f).stat().st_mode) == 0o755 for f in files)


def test_generate_api_key(tmp_path):
    r = cli("export", "--format", "systemd", "--device", "dgx-spark", "--host", "0.0.0.0", "--generate-api-key",
            "--vllm-bin", "/opt/vllm/bin/vllm", "-o", "out/vllm.service", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    key_file = tmp_path / "out" / "vllm-api-key.env"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    (line,) = key_file.read_text().splitlines()
    name, key = line.split("=", 1)
    assert name == "VLLM_API_KEY" and len(key) >= 40
    unit = (tmp_path / "out" / "vllm.service").read_text()
    assert key not in unit and key not in r.stdout and key not in r.stderr
    assert f"EnvironmentFile={key_file}\n" in unit
    assert str(key_file) in r.stderr
    # a second run must not replace the key silently
    r2 = cli("export", "--format", "systemd", "--device", "dgx-spark", "--host", "0.0.0.0", "--generate-api-key",
             "-o", "out/other.service", cwd=tmp_path)
    assert r2.returncode == 2 and "already exists" in r2.stderr
    assert key_file.read_text() == line + "\n"


def test_generated_key_to_stdout_export_goes_to_cwd(tmp_path):
    r = cli("export", "--format", "bash", "--device", "dgx-spark", "--host", "0.0.0.0", "--generate-api-key",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    key = (tmp_path / "vllm-api-key.env").read_text().split("=", 1)[1].strip()
    assert key not in r.stdout and key not in r.stderr
    assert f". {tmp_path}/vllm-api-key.env" in r.stdout


@pytest.mark.parametrize("fmt", ["bash", "docker", "compose", "systemd", "k8s", "ray"])
def test_exported_files_never_hold_env_secrets(fmt, tmp_path):
    env = {"HF_TOKEN": SECRET_HF, "VLLM_API_KEY": SECRET_KEY, "MY_KEY": SECRET_KEY}
    r = cli("export", "--format", fmt, "--device", "dgx-spark", "--host", "0.0.0.0",
            *(["--api-key-env", "VLLM_API_KEY"] if fmt == "systemd" else ["--api-key-env", "MY_KEY"]),
            "-o", "out/", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    written = list((tmp_path / "out").iterdir())
    assert written
    for f in written:
        text = f.read_text()
        assert SECRET_HF not in text and SECRET_KEY not in text
    assert SECRET_HF not in r.stdout + r.stderr and SECRET_KEY not in r.stdout + r.stderr


def test_unwritable_output_is_a_usage_error_not_a_traceback(tmp_path):
    (tmp_path / "plain-file").write_text("x\n")
    # ray writes a directory of files: a regular file where that directory should be
    r = cli("export", "--format", "ray", "--device", "dgx-spark", "--nodes", "2", "-o", "plain-file", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "cannot write" in r.stderr and "hint: choose a writable -o path" in r.stderr
    assert "Traceback" not in r.stderr
    # a path under a regular file cannot be created either
    r = cli("export", "--format", "bash", "--device", "dgx-spark", "-o", "plain-file/serve.sh", cwd=tmp_path)
    assert r.returncode == 2 and "cannot write" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "plain-file").read_text() == "x\n"


def test_api_key_passed_instead_of_a_variable_name_is_refused_and_not_echoed(tmp_path):
    secret = "sk-live-7f3a9c2b1e"
    r = cli("export", "--format", "bash", "--device", "dgx-spark", "--api-key-env", secret, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "not the key itself" in r.stderr and "hint:" in r.stderr
    assert secret not in r.stderr + r.stdout
