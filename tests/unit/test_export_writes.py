"""Issue #14 item 5: `export -o PATH` never replaces a device node, FIFO, socket or symbolic link (not even with
--force), and writes all files or none, so a full disk leaves nothing that blocks the re-run."""

from __future__ import annotations

import os
import resource
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from spark_tui.core.export.files import existing_targets, export_targets, write_files
from spark_tui.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]


def cli(*argv: str, cwd: Path, fsize: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARK_TUI_HOME": str(cwd / "home")}

    def limit() -> None:  # a "full disk" for this process only: writes past `fsize` bytes fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-m", "spark_tui", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, preexec_fn=limit if fsize is not None else None)


def test_force_never_replaces_a_fifo(tmp_path):
    fifo = tmp_path / "serve.sh"
    os.mkfifo(fifo)
    r = cli("export", "--format", "bash", "--device", "rtx-5090", "-o", str(fifo), "--force", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "is not a regular file" in r.stderr and "Traceback" not in r.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_force_never_replaces_a_socket_or_follows_a_symlink(tmp_path):
    sock_path = tmp_path / "s.sh"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock_path))
    try:
        r = cli("export", "--format", "bash", "--device", "rtx-5090", "-o", str(sock_path), "--force", cwd=tmp_path)
        assert r.returncode == 2 and "is not a regular file" in r.stderr
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    finally:
        s.close()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    link = tmp_path / "serve.sh"
    link.symlink_to(victim)
    r = cli("export", "--format", "bash", "--device", "rtx-5090", "-o", str(link), "--force", cwd=tmp_path)
    assert r.returncode == 2 and "symbolic link" in r.stderr
    assert link.is_symlink() and victim.read_text() == "precious\n"


def test_a_full_disk_leaves_nothing_behind_and_the_rerun_works(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    argv = ("export", "--format", "bash", "--device", "rtx-5090", "--host", "0.0.0.0", "--generate-api-key",
            "-o", str(out / "serve.sh"))
    r = cli(*argv, cwd=tmp_path, fsize=64)  # the key file (~60 B) fits, the script does not
    assert r.returncode == 2, r.stderr
    assert "nothing was written" in r.stderr and "File too large" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in out.iterdir()) == []  # no empty target, no key file, no temporary file
    r = cli(*argv, cwd=tmp_path)  # the same command again, without --force
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["serve.sh", "vllm-api-key.env"]
    assert stat.S_IMODE(os.stat(out / "vllm-api-key.env").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(out / "serve.sh").st_mode) == 0o755


def test_ray_writes_both_scripts_or_none(tmp_path):
    out = tmp_path / "ray"
    out.mkdir()
    (out / "ray-worker.sh").write_text("mine\n")  # the second file exists: nothing is written, not even the first
    r = cli("export", "--format", "ray", "--device", "dgx-spark", "--nodes", "2", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 2 and "ray-worker.sh already exists" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["ray-worker.sh"]


def test_write_files_modes_and_no_clobber(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "umask", os.umask)  # keep the process umask as is
    a, b = tmp_path / "a.sh", tmp_path / "d" / "b.yaml"
    write_files([(a, "#!/bin/sh\n", 0o755), (b, "x: 1\n", 0o644)])
    assert a.read_text() == "#!/bin/sh\n" and stat.S_IMODE(a.stat().st_mode) == 0o755
    assert b.read_text() == "x: 1\n" and stat.S_IMODE(b.stat().st_mode) == 0o644
    with pytest.raises(UsageError, match="already exists"):
        write_files([(a, "other\n", 0o755)])
    assert a.read_text() == "#!/bin/sh\n"
    write_files([(a, "new\n", 0o700)], force=True)
    assert a.read_text() == "new\n" and stat.S_IMODE(a.stat().st_mode) == 0o700
    with pytest.raises(UsageError, match="is a directory"):
        write_files([(tmp_path / "d", "x", 0o644)], force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.sh", "d"]


def test_export_targets_and_the_ones_that_exist(tmp_path):
    (tmp_path / "d").mkdir()
    assert export_targets(["serve.sh"], str(tmp_path / "x.sh")) == [tmp_path / "x.sh"]
    assert export_targets(["serve.sh"], str(tmp_path / "d")) == [tmp_path / "d" / "serve.sh"]  # into a folder
    assert export_targets(["serve.sh"], str(tmp_path / "new") + "/") == [tmp_path / "new" / "serve.sh"]
    assert export_targets(["a.sh", "b.sh"], str(tmp_path / "ray")) == [tmp_path / "ray" / "a.sh", tmp_path / "ray" / "b.sh"]
    (tmp_path / "d" / "serve.sh").write_text("x")
    assert existing_targets([tmp_path / "d" / "serve.sh", tmp_path / "none.sh"]) == [tmp_path / "d" / "serve.sh"]
    for bad in (tmp_path / "d", tmp_path / "d" / "serve.sh" / "under-a-file", tmp_path / ("n" * 300)):
        with pytest.raises(UsageError):
            existing_targets([bad])
