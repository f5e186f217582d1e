"""Download against a local hub serving recorded responses; the real huggingface_hub client runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.runtime_ckpt import write_tiny_checkpoint
from tests.support.runtime_hub import FakeHub, Fault, Repo

REPO = "spark-test/tiny-nvfp4"
MARKER = "hf_SPARKTUIMARKERTOKEN0123456789"


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """HF_ENDPOINT and a private HF cache; the huggingface_hub constants are read at import, so patch both."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login token
    return cache


@pytest.fixture
def tiny_files(tmp_path):
    files = write_tiny_checkpoint(tmp_path / "src", "modelopt_fp4", shards=2)
    files["README.md"] = b"# card\n"
    files["pytorch_model.bin"] = b"\0" * 1000  # a duplicate format vLLM does not need
    files["assets/arch.png"] = b"\x89PNG" + b"\0" * 100
    return files


def _listing(hub, repo=REPO, revision=None):
    from spark_tui.core.runtime import download as dl

    return dl.fetch_listing(repo, revision, endpoint=hub.url)


def test_listing_of_the_recorded_gpt2_response_and_disk_refusal(hub_env, tmp_path):
    from spark_tui.core.runtime import download as dl
    from spark_tui.errors import DownloadError, ExitCode

    with FakeHub() as hub:
        lst = _listing(hub, "openai-community/gpt2")
    assert lst.commit == "607a30d783dfa663caf39e06633721c8d4cfcd7e"
    sizes = {f.path: f.size for f in lst.files}
    assert sizes == {"config.json": 665, "model.safetensors": 548105171}
    plan = dl.plan_download(lst, local_dir=str(tmp_path / "gpt2"))
    assert plan.missing_bytes == 548105171 + 665 and not plan.complete
    # 100 MiB free: refused with the numbers and a hint
    with pytest.raises(DownloadError) as e:
        dl.check_disk(plan.target, plan.missing_bytes, free_fn=lambda p: 100 * 1024**2)
    msg = e.value.message
    assert e.value.exit_code == ExitCode.DOWNLOAD
    assert "522.7 MiB still to download" in msg and "100.0 MiB free" in msg and "short" in msg
    assert "--dir" in e.value.hint
    # plenty free: accepted, the real free space is reported
    assert dl.check_disk(plan.target, plan.missing_bytes, free_fn=lambda p: 10 * 1024**3) == 10 * 1024**3


def test_download_selects_vllm_files_emits_events_and_verifies(hub_env, tiny_files, tmp_path):
    from spark_tui.core.catalog import checkpoint as ck
    from spark_tui.core.runtime import download as dl

    events = []
    with FakeHub(repos={REPO: Repo(tiny_files)}) as hub:
        plan = dl.plan_download(_listing(hub))
        assert set(plan.skipped) == {"README.md", "pytorch_model.bin", "assets/arch.png"}
        out = dl.download(plan, [events.append], endpoint=hub.url, max_workers=2)
        gets = [r["path"].split("/resolve/")[1].split("/", 1)[1] for r in hub.log
                if r["method"] == "GET" and "/resolve/" in r["path"]]
    assert sorted(gets) == sorted(f.path for f in plan.selected)  # nothing else fetched
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "DownloadStarted" and kinds[-1] == "DownloadFinished"
    assert kinds.count("FileDone") == len(plan.selected)
    prog = [e for e in events if isinstance(e, dl.FileProgress) and e.path.endswith("00001-of-00002.safetensors")]
    assert prog and prog[-1].done == prog[-1].total == len(tiny_files["model-00001-of-00002.safetensors"])
    # the result is the hub cache snapshot folder, and it verifies as a complete NVFP4 checkpoint with MTP
    assert out.endswith(os.path.join("snapshots", plan.listing.commit))
    r = ck.verify_checkpoint(out, expected_format="modelopt_fp4")
    assert r.complete and r.has_mtp and r.quant.format == "modelopt_fp4"
    st = dl.ProgressState()
    for e in events:
        st.apply(e)
    assert st.done == plan.missing_bytes and st.files_done == len(plan.selected)


def test_resume_keeps_finished_files_and_continues_a_partial_one(hub_env, tiny_files, tmp_path, monkeypatch):
    """Run 1 loses the network in the middle of a shard; run 2 fetches only what run 1 did not finish.

    huggingface_hub 2.x resumes a dropped connection *within* a run with a Range request, but deletes the
    partial file when the run fails (PR #4228: process-unique temp files), so across runs the unit of
    resume is the file: finished files are kept, an unfinished one starts over."""
    from huggingface_hub import constants

    from spark_tui.core.runtime import download as dl

    # the hub client writes in DOWNLOAD_CHUNK_SIZE (10 MB) chunks: make them small for a 53 kB shard
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 256)
    from spark_tui.errors import DownloadError

    big = "model-00002-of-00002.safetensors"
    dest = tmp_path / "out"
    # pre-place one complete shard (copied in by hand, no hub metadata): it must never be requested; the
    # hub client checks it against the LFS SHA-256 (the ETag) instead of downloading it again
    small = "model-00001-of-00002.safetensors"
    dest.mkdir()
    (dest / small).write_bytes(tiny_files[small])
    repo = Repo(tiny_files)
    with FakeHub(repos={REPO: repo}, faults=[Fault(big, after=768, times=1, then_status=503, then_times=1)]) as hub:
        plan = dl.plan_download(_listing(hub), local_dir=str(dest))
        assert small in plan.complete
        with pytest.raises(DownloadError) as e:
            dl.download(plan, endpoint=hub.url, max_workers=1)
        assert "503" in e.value.message or "network" in e.value.message
        first = hub.gets(big)
        # the client itself retried with a Range after the connection dropped, then got the 503
        assert len(first) == 2 and first[0]["range"] is None and first[1]["range"] == "bytes=768-"
        assert not (dest / big).exists()
        n_log = len(hub.log)
        # the other files were fetched in run 1 although the big shard failed
        assert (dest / "config.json").is_file() and (dest / "tokenizer_config.json").is_file()
        # run 2: network is back
        plan2 = dl.plan_download(_listing(hub), local_dir=str(dest))
        assert big not in plan2.complete and small in plan2.complete
        out = dl.download(plan2, endpoint=hub.url, max_workers=1)
        again = [r for r in hub.gets(big)][2:]
        refetched = [r["path"] for r in hub.log[n_log:] if r["method"] == "GET" and "/resolve/" in r["path"]]
    assert [r["range"] for r in again] == [None]
    assert not hub.gets(small), "a pre-placed complete file was downloaded again"
    # files finished in run 1 were not fetched again in run 2 (only the interrupted shard was)
    assert refetched and all(p.endswith("/" + big) for p in refetched), refetched
    assert (Path(out) / big).read_bytes() == tiny_files[big]


def test_gated_repo_without_token_explains_hf_token(hub_env, tiny_files):
    from spark_tui.core.runtime import download as dl
    from spark_tui.errors import DownloadError

    with FakeHub(repos={REPO: Repo(tiny_files, gated=True)}) as hub:
        lst = _listing(hub)  # metadata of a gated repo is public (recorded)
        assert lst.gated == "manual"
        with pytest.raises(DownloadError) as e:
            dl.download(dl.plan_download(lst), endpoint=hub.url, max_workers=1)
    assert "gated" in e.value.message
    assert "HF_TOKEN" in e.value.hint and "hf auth login" in e.value.hint


def test_unknown_repo_and_bad_revision(hub_env):
    from spark_tui.errors import DownloadError

    with FakeHub(repos={REPO: Repo({"config.json": b"{}"})}) as hub:
        with pytest.raises(DownloadError) as e:
            _listing(hub, "nobody/nothing")
        assert "not found" in e.value.message and "HF_TOKEN" in e.value.hint
        with pytest.raises(DownloadError) as e:
            _listing(hub, REPO, "badrev")
        assert "revision 'badrev'" in e.value.message


def test_cli_gated_with_token_never_prints_it(hub_env, tiny_files, tmp_path):
    """`spark-tui download` in a subprocess with HF_TOKEN set: 403 explained, token in no output or log."""
    from spark_tui.core import paths  # noqa: F401 - state dir under SPARK_TUI_HOME

    with FakeHub(repos={REPO: Repo(tiny_files, gated=True)}) as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": MARKER, "SPARK_TUI_HOME": str(tmp_path / "home"),
               "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        p = subprocess.run([sys.executable, "-m", "spark_tui", "download", REPO, "--dir", str(tmp_path / "d")],
                           env=env, capture_output=True, text=True, timeout=120)
        sent = [r["authorization"] for r in hub.log if r["authorization"]]
    out = p.stdout + p.stderr
    assert p.returncode == 7, out
    assert "gated" in out and "accept the terms" in out
    assert sent and all(MARKER in a for a in sent)  # the token did go to the hub...
    assert MARKER not in out  # ...and nowhere else
    for f in (tmp_path / "home").rglob("*"):
        if f.is_file():
            assert MARKER not in f.read_text(errors="replace"), f


def test_cli_download_then_verify_only(hub_env, tiny_files, tmp_path):
    with FakeHub(repos={REPO: Repo(tiny_files)}) as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "SPARK_TUI_HOME": str(tmp_path / "home"),
               "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        env.pop("HF_TOKEN", None)
        d = tmp_path / "d"
        p = subprocess.run([sys.executable, "-m", "spark_tui", "download", REPO, "--dir", str(d),
                            "--expect-format", "modelopt_fp4"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "complete" in p.stdout and "modelopt_fp4" in p.stdout
    p = subprocess.run([sys.executable, "-m", "spark_tui", "download", "--model-path", str(d), "--verify-only",
                        "--json"], env=env, capture_output=True, text=True, timeout=60)
    import json

    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["complete"] and rep["format"] == "modelopt_fp4" and rep["has_mtp"]
    (d / "model-00001-of-00002.safetensors").write_bytes(b"\0" * 16)
    p = subprocess.run([sys.executable, "-m", "spark_tui", "download", "--model-path", str(d), "--verify-only"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 7 and "not usable" in p.stderr


def test_cli_gated_without_token_refuses_before_downloading(hub_env, tiny_files, tmp_path):
    with FakeHub(repos={REPO: Repo(tiny_files, gated=True)}) as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "SPARK_TUI_HOME": str(tmp_path / "home"),
               "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        env.pop("HF_TOKEN", None)
        p = subprocess.run([sys.executable, "-m", "spark_tui", "download", REPO, "--dir", str(tmp_path / "d")],
                           env=env, capture_output=True, text=True, timeout=120)
        resolves = [r for r in hub.log if "/resolve/" in r["path"]]
    assert p.returncode == 7
    assert "gated repository (manual approval) and no Hugging Face token is set" in p.stderr
    assert "HF_TOKEN" in p.stderr and "hf auth login" in p.stderr
    assert resolves == []


def test_cancel_from_a_subscriber_stops_and_reports(hub_env, tiny_files, monkeypatch):
    import threading

    from huggingface_hub import constants

    from spark_tui.core.runtime import download as dl
    from spark_tui.errors import DownloadError

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 256)
    cancel = threading.Event()
    events = []

    def sub(ev):
        events.append(ev)
        if isinstance(ev, dl.FileProgress) and ev.done > 0:
            cancel.set()

    with FakeHub(repos={REPO: Repo(tiny_files)}) as hub:
        plan = dl.plan_download(_listing(hub))
        with pytest.raises(DownloadError) as e:
            dl.download(plan, [sub], endpoint=hub.url, max_workers=1, cancel=cancel, progress_interval=0)
    assert "cancelled" in e.value.message
    assert isinstance(events[-1], dl.DownloadFailed)
    assert not any(isinstance(ev, dl.DownloadFinished) for ev in events)


def test_file_bar_works_with_the_hub_xet_progress_reporter():
    """The hf_xet path (xet_get) drives our bar through huggingface_hub's XetDownloadProgressReporter."""
    from types import SimpleNamespace

    from huggingface_hub.utils._xet_progress_reporting import XetDownloadProgressReporter

    from spark_tui.core.runtime import download as dl

    got = []
    bar = dl.file_bar_class("model.safetensors", lambda p, n, total, force: got.append((p, n, total)))
    with XetDownloadProgressReporter(reconstruction_desc="x", total=100, log_level=30, tqdm_class=bar) as rep:
        for done, sent in ((40, 30), (100, 70)):
            rep.update_progress(SimpleNamespace(total_bytes_completed=done, total_transfer_bytes_completed=sent,
                                                total_bytes_completion_rate=1.0,
                                                total_transfer_bytes_completion_rate=1.0, total_bytes=100))
    assert got[0] == ("model.safetensors", 0, 100)
    assert ("model.safetensors", 40, 100) in got and got[-1] == ("model.safetensors", 100, 100)
