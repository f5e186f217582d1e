"""Download screen against a local hub (recorded wire format, tests/support/runtime_hub.py): the real
huggingface_hub client runs, the screen follows the runtime core's event stream."""

from __future__ import annotations

from textual.widgets import DataTable, Input, Static

from spark_tui.ui.app import SparkApp
from tests.support.runtime_ckpt import write_tiny_checkpoint
from tests.support.runtime_hub import FakeHub, Repo
from tests.ui.conftest import load_probe, plain

REPO = "spark-test/tiny-nvfp4"


class SlowHub(FakeHub):
    """The same hub over a slow link: the repo listing takes a second (time to press pause)."""

    def _api(self, h, repo_id, rev, head):
        import time

        time.sleep(1.0)
        return super()._api(h, repo_id, rev, head)


async def _wait(app, pilot, cond, n=200):
    for _ in range(n):
        await pilot.pause(0.05)
        if cond():
            return True
    return False


async def test_download_pause_resume_and_finish(tmp_path, monkeypatch):
    files = write_tiny_checkpoint(tmp_path / "src", "modelopt_fp4", shards=2)
    files["README.md"] = b"# card\n"
    files["pytorch_model.bin"] = b"\0" * 1000  # not needed by vLLM: never fetched
    with SlowHub(repos={REPO: Repo(files)}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        app = SparkApp(probe=load_probe("gb10"), live_probe=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("4")
            await pilot.pause()
            scr = app.screen
            assert scr.query_one("#dl-repo", Input).value == "nvidia/Qwen3.6-35B-A3B-NVFP4"  # the plan's checkpoint
            scr.query_one("#dl-repo", Input).value = REPO
            await pilot.press("s", "p")  # pause while it is still listing
            await app.workers.wait_for_complete()
            await pilot.pause()
            status = plain(scr.query_one("#dl-status", Static))
            assert status.startswith("paused")
            await pilot.press("s")  # resume
            assert await _wait(app, pilot, lambda: "done" in plain(scr.query_one("#dl-status", Static)))
            t = scr.query_one("#dl-files", DataTable)
            names = {str(t.get_row_at(i)[0]) for i in range(t.row_count)}
            assert "pytorch_model.bin" not in names and "README.md" not in names
            assert {p for p in files if p.endswith(".safetensors")} <= names
            assert all(str(t.get_row_at(i)[2]) == "✓" for i in range(t.row_count))
            line = plain(scr.query_one("#dl-line", Static))
            assert f"files {t.row_count}/{t.row_count}" in line
            # again: everything is already here
            await pilot.press("s")
            assert await _wait(app, pilot, lambda: all(
                str(t.get_row_at(i)[2]) == "cached" for i in range(t.row_count)) and t.row_count > 0)


async def test_download_error_is_shown_with_its_fix(monkeypatch):
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        app = SparkApp(probe=load_probe("gb10"), live_probe=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("4")
            await pilot.pause()
            app.screen.query_one("#dl-repo", Input).value = "nobody/does-not-exist"
            await pilot.press("s")
            await app.workers.wait_for_complete()
            await pilot.pause()
            status = plain(app.screen.query_one("#dl-status", Static))
            assert "was not found" in status and "check the repository id" in status
