"""Pilot-driven tests of each screen's main flow (no vLLM server here; see test_tui_vllm.py for those)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Select, Static

from spark_tui.ui.app import SparkApp
from tests.ui.conftest import load_probe, plain

SIZES = [(80, 24), (120, 40)]


def text(app, selector: str) -> str:
    w = app.screen.query_one(selector, Static)
    return plain(w)


async def settle(app, pilot) -> None:
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


# ------------------------------------------------------------------------------------------------ Device
@pytest.mark.parametrize("size", SIZES)
async def test_device_card_and_verdict_from_recorded_gb10(size):
    app = SparkApp(probe=load_probe("gb10"), live_probe=False)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        cards = " ".join(plain(s) for s in app.screen.query("#device-cards Static"))
        assert "NVIDIA GB10" in cards and "sm_121" in cards
        assert "unified with the CPU" in cards and "113.1 GiB MemAvailable" in cards  # honest GB10 memory
        assert "verdict (dgx-spark)" in cards and "native NVFP4" in cards
        assert app.plan is not None and app.plan.device.id == "dgx-spark"


async def test_device_verdict_fallback_on_hopper_and_unsupported_on_ampere():
    app = SparkApp(probe=load_probe("h200"), live_probe=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        cards = " ".join(plain(s) for s in app.screen.query("#device-cards Static"))
        assert "fallback" in cards and "h200" in cards
    app = SparkApp(probe=load_probe("a100"), live_probe=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        cards = " ".join(plain(s) for s in app.screen.query("#device-cards Static"))
        assert "unsupported" in cards
        assert app.plan is None and app.plan_error  # the planner refuses it; the app says so, no crash


async def test_no_gpu_for_real_then_pick_a_target_profile():
    # this machine has no NVIDIA driver: the live probe takes the real no-GPU path
    app = SparkApp(live_probe=True, probe_refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(50):
            await pilot.pause(0.1)
            if app.probe is not None:
                break
        assert app.probe is not None and not app.probe.ok
        await pilot.pause()
        assert "No GPU here" in text(app, "#device-status")
        assert app.plan is None
        sel = app.screen.query_one("#target", Select)
        sel.value = "rtx-5090"  # what choosing it in the drop-down does
        for _ in range(50):
            await pilot.pause(0.1)
            if app.plan is not None:
                break
        assert app.target_device == "rtx-5090" and app.plan.device.id == "rtx-5090"
        cards = " ".join(plain(s) for s in app.screen.query("#device-cards Static"))
        assert "verdict (rtx-5090)" in cards and "native NVFP4" in cards
        app.workers.cancel_group(app, "probe")


# ------------------------------------------------------------------------------------------------ Model
@pytest.mark.parametrize("size", SIZES)
async def test_model_catalog_recommended_first_and_choose_another(size):
    app = SparkApp(probe=load_probe("h100"), live_probe=False)
    app_gb10 = SparkApp(probe=load_probe("rtx-pro-6000"), live_probe=False)
    async with app_gb10.run_test(size=size) as pilot:
        await pilot.press("2")
        await settle(app_gb10, pilot)
        t = app_gb10.screen.query_one("#model-table", DataTable)
        first = str(t.get_row_at(0)[0])
        assert first.startswith("★") and "infatoshi-nvfp4-fp8" in first  # W4A4 on FLASHINFER_CUTLASS (sm_120)
        assert "why:" in text(app_gb10, "#model-detail")
        assert "✓ cached" not in " ".join(str(t.get_row_at(i)[5]) for i in range(t.row_count))  # empty HF cache
        # choose the FP8 checkpoint: the plan follows
        row = next(i for i in range(t.row_count) if "qwen-fp8" in str(t.get_row_at(i)[0]))
        t.move_cursor(row=row)
        await pilot.press("enter")
        await settle(app_gb10, pilot)
        assert app_gb10.checkpoint_id == "qwen-fp8"
        assert app_gb10.plan.checkpoint.repo_id == "Qwen/Qwen3.6-35B-A3B-FP8"
    del app


async def test_model_screen_sees_a_checkpoint_in_the_hf_cache(isolated_dirs):
    # a real HF cache layout (what hf_hub_download writes) for the recommended repo
    repo = isolated_dirs / "hf-cache" / "models--nvidia--Qwen3.6-35B-A3B-NVFP4"
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "blobs" / ("b" * 40)).write_text("{}")
    (snap / "config.json").symlink_to(Path("../..") / "blobs" / ("b" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    app = SparkApp(probe=load_probe("gb10"), live_probe=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await settle(app, pilot)
        t = app.screen.query_one("#model-table", DataTable)
        assert str(t.get_row_at(0)[5]) == "✓ cached"
        assert "downloaded:" in text(app, "#model-detail")


# ------------------------------------------------------------------------------------------------ Plan
@pytest.mark.parametrize("size", SIZES)
async def test_plan_overrides_replan_live(size):
    app = SparkApp(probe=load_probe("gb10"), live_probe=False)
    async with app.run_test(size=size) as pilot:
        await pilot.press("3")
        await settle(app, pilot)
        before = app.plan.memory.kv_cache_tokens
        assert f"{before:,}" in text(app, "#plan-predicted")
        t = app.screen.query_one("#plan-flags", DataTable)
        assert t.row_count == len(app.plan.flags) + len(app.plan.env)
        await pilot.press("e")  # focus the first override field (context)
        await pilot.press(*"65536", "enter")
        await settle(app, pilot)
        assert app.plan.flag("--max-model-len").value == 65536
        assert "65,536" in text(app, "#plan-predicted")
        # MTP on (the user's choice: no measurement turns it on for GB10) and a flag override
        app.screen.query_one("#ov-mtp", Input).value = "1"
        app.screen.query_one("#ov-set", Input).value = "max-num-seqs=4"
        app.screen.query_one("#ov-set", Input).focus()
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.plan.mtp_k == 1 and app.plan.flag("--speculative-config").reason.startswith("user --mtp 1")
        assert app.plan.flag("--max-num-seqs").value == 4
        assert app.plan.memory.kv_cache_tokens != before


async def test_plan_bad_override_is_a_notification_not_a_crash():
    app = SparkApp(probe=load_probe("gb10"), live_probe=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        await settle(app, pilot)
        good = app.plan
        app.screen.query_one("#ov-set", Input).value = "not a flag!!="
        app.screen.query_one("#ov-set", Input).focus()
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.plan is None and "not a flag name" in app.plan_error
        assert any("not a flag name" in str(n.message) for n in app._notifications)
        app.screen.query_one("#ov-set", Input).value = ""
        app.screen.query_one("#ov-set", Input).focus()
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.plan == good  # back to the same plan


async def test_plan_check_runs_in_a_worker_and_reports():
    app = SparkApp(probe=load_probe("gb10"), live_probe=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await settle(app, pilot)
        await pilot.press("c")
        await settle(app, pilot)
        from spark_tui.core.catalog.vllm_compat import check_argv

        expected = check_argv(app.plan.argv())["message"]
        assert f"check: {expected}" in text(app, "#plan-notes")


# ------------------------------------------------------------------------------------------------ Export
async def test_export_preview_write_confirm_overwrite_and_copy(tmp_path):
    app = SparkApp(probe=load_probe("rtx-5090"), live_probe=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("7")
        await settle(app, pilot)
        from spark_tui.core.export.formats import render, serve_argv

        assert render(app.plan, "bash")[0].content.splitlines()[0] in str(
            app.screen.query_one("#export-preview", Static).content.code)
        app.screen.query_one("#export-format", Select).value = "compose"
        await pilot.pause()
        assert "services:" in app.screen.query_one("#export-preview", Static).content.code
        target = tmp_path / "compose.yaml"
        app.screen.query_one("#export-path", Input).value = str(target)
        await pilot.press("w")
        await pilot.pause()
        assert "services:" in target.read_text()
        target.write_text("mine\n")
        await pilot.press("w")
        await pilot.pause()
        assert type(app.screen).__name__ == "ConfirmModal"
        await pilot.press("n")
        await pilot.pause()
        assert target.read_text() == "mine\n"  # never overwritten without asking
        await pilot.press("w")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert "services:" in target.read_text()
        await pilot.press("y")  # copy the serve command
        import shlex

        assert app.clipboard == shlex.join(serve_argv(app.plan))


@pytest.mark.parametrize("where", ["name-too-long", "under-a-file", "a-link", "a-fifo", "nul-byte"])
async def test_export_write_to_an_unwritable_path_is_an_error_not_a_crash(tmp_path, where):
    import os

    (tmp_path / "plain-file").write_text("x\n")
    (tmp_path / "link").symlink_to(tmp_path / "plain-file")
    os.mkfifo(tmp_path / "fifo")
    path = {"name-too-long": str(tmp_path / ("x" * 300 + ".sh")),  # lstat: ENAMETOOLONG (no root bypass for this)
            "under-a-file": str(tmp_path / "plain-file" / "serve.sh"),  # lstat: ENOTDIR
            "a-link": str(tmp_path / "link"),  # never replaced, --force or not
            "a-fifo": str(tmp_path / "fifo"),  # never opened: opening a FIFO to write would block the app
            "nul-byte": str(tmp_path / "a\0b.sh")}[where]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    app = SparkApp(probe=load_probe("rtx-5090"), live_probe=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("7")
        await settle(app, pilot)
        app.screen.query_one("#export-path", Input).value = path
        await pilot.press("w")
        await pilot.pause()
        assert app.is_running and type(app.screen).__name__ == "ExportScreen"  # no crash, no overwrite question
        errors = [str(n.message) for n in app._notifications if n.severity == "error"]
        assert errors and any(w in errors[-1] for w in ("cannot write", "symbolic link", "not a regular file")), errors
        await pilot.press("y")  # the screen still works
        assert app.clipboard
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, no temporary file left


# ------------------------------------------------------------------------------------------------ Self-test
async def test_selftest_lists_before_running_then_shows_real_results():
    app = SparkApp(probe=load_probe("gb10"), live_probe=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("8")
        await settle(app, pilot)
        t = app.screen.query_one("#selftest-table", DataTable)
        from kernels_check.runner import plan_selftest

        planned = plan_selftest()
        assert t.row_count == len(planned)
        assert "checks will run here" in text(app, "#selftest-status")
        assert text(app, "#selftest-verdict") == ""  # nothing ran yet, nothing is claimed
        await pilot.press("r")
        await settle(app, pilot)
        rep = app.screen.report
        assert rep is not None
        statuses = {str(t.get_row_at(i)[0]): str(t.get_row_at(i)[1]) for i in range(t.row_count)}
        for c in rep.checks:
            assert c.status.symbol in statuses[c.name]
        assert rep.recommendation.verdict.label in text(app, "#selftest-verdict")


# ------------------------------------------------------------------------------------------------ responsiveness
async def test_keys_are_handled_while_a_slow_worker_runs():
    """A server that accepts the connection and never answers: the scrape worker blocks in HTTP for seconds
    (its 5 s timeout) while the UI keeps switching screens."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    conns = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    url = f"http://127.0.0.1:{srv.getsockname()[1]}"
    app = SparkApp(url=url, probe=load_probe("gb10"), live_probe=False)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("6")
            for _ in range(30):
                await pilot.pause(0.05)
                if conns:
                    break
            assert conns, "the scrape worker did not connect"
            workers = [w for w in app.screen.workers if w.group == "scrape"]
            assert workers and workers[0].is_running
            import time

            t0 = time.monotonic()
            await pilot.press("1")
            await pilot.pause()
            assert app.current_mode == "device"
            await pilot.press("3")
            await pilot.pause()
            assert app.current_mode == "plan"
            assert time.monotonic() - t0 < 2.0
            assert workers[0].is_running  # still blocked in the HTTP read
            app.workers.cancel_all()
    finally:
        stop.set()
        for c in conns:
            c.close()
        srv.close()


async def test_dashboard_bad_url_is_a_notification():
    app = SparkApp(probe=load_probe("gb10"), live_probe=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("6")
        await pilot.pause()
        assert "No server to watch" in text(app, "#dash-status")
        await pilot.press("u")
        await pilot.press(*"ftp:x", "enter")
        await pilot.pause()
        assert app.server_url is None
        assert any("not an http(s) URL" in str(n.message) for n in app._notifications)


async def test_quit_without_a_server_exits_at_once():
    app = SparkApp(probe=load_probe("gb10"), live_probe=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


# ------------------------------------------------------------------------------------------------ pure helpers
def test_bar_cells_sum_to_width_and_keep_small_segments_visible():
    from hypothesis import given, strategies as st

    from spark_tui.ui.screens.plan import bar_cells

    @given(st.lists(st.integers(0, 2**40), min_size=1, max_size=6), st.integers(1, 200))
    def check(sizes, width):
        cells = bar_cells([(str(i), b) for i, b in enumerate(sizes)], width)
        if sum(sizes) == 0:
            assert all(n == 0 for _, n in cells)
            return
        assert sum(n for _, n in cells) == width
        nonzero = sum(1 for b in sizes if b > 0)
        if nonzero <= width:
            assert all(n >= 1 for (_, n), b in zip(cells, sizes) if b > 0)

    check()


def test_fix_to_set_maps_diagnosis_fix_args_to_planner_sets():
    from spark_tui.ui.screens.run import fix_to_set

    assert fix_to_set({"flag": "--max-model-len", "value": "4096"}) == "--max-model-len=4096"
    assert fix_to_set({"flag": "--enforce-eager", "value": ""}) == "--enforce-eager"
    assert fix_to_set({"flag": "--moe-backend", "value": None}) == "--moe-backend="


def test_accuracy_summary_from_profile_rows():
    from spark_tui.ui.screens.model import accuracy_summary

    assert accuracy_summary({"a": {"nvfp4": 85.0, "bf16": 85.6}, "b": {"nvfp4": 62.0, "bf16": 62.2}}) == \
        "Δ -0.4 pts (2)"
    assert accuracy_summary({}) == "n/a"


def test_phases_markup_shows_each_state():
    from spark_tui.core.runtime.vllm_log import PhaseState
    from spark_tui.ui.screens.run import phases_markup

    out = phases_markup([PhaseState("weights", "loading weights", "done", "20 GiB"),
                         PhaseState("graphs", "graphs", "active", "", 0.5),
                         PhaseState("ready", "server ready", "pending")])
    assert "✓[/] loading weights [dim](20 GiB)" in out
    assert "▶[/] graphs 50%" in out and "·[/] server ready" in out


def test_stats_lines_report_mtp_or_say_it_is_off():
    from spark_tui.core.observe.metrics import snapshots_from, window_stats
    from spark_tui.ui.screens.dashboard import stats_lines

    data = Path(__file__).resolve().parents[1] / "data"
    scrapes = sorted((data / "metrics").glob("*"))
    assert scrapes, "recorded scrapes (monitor helper) missing"
    s = None
    for p in scrapes:
        if p.suffix in (".txt", ".prom"):
            snaps = snapshots_from([(0.0, p.read_text())])
            s = window_stats(snaps)
            lines = stats_lines(s)
            if s.spec is None:
                assert "MTP off" in lines["mtp"]
            else:
                assert "MTP acceptance" in lines["mtp"]
    assert s is not None


# ------------------------------------------------------------------------------------------------ Ablation
def _saved_ablation(home: Path) -> Path:
    """A state file as `spark-tui ablate` writes it, from the H200 visit's run (bench/results/h200-ablation.json)."""
    import json

    from spark_tui.core.observe.ablate import AblationState, save_state

    rep = json.loads((Path(__file__).parents[2] / "bench" / "results" / "h200-ablation.json").read_text())
    st = AblationState.from_dict({"plan_argv": rep["plan_argv"], "config": rep["config"], "results": rep["results"]})
    path = home / "data" / "ablate" / "0123456789abcdef.json"
    save_state(path, st)
    return path


async def test_ablation_screen_shows_saved_results(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_TUI_HOME", str(tmp_path))
    app = SparkApp(probe=load_probe("h200"), live_probe=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("9")
        await settle(app, pilot)
        assert app.current_mode == "ablate"
        assert "no ablation saved" in text(app, "#ablate-status")  # nothing claimed before anything ran
        path = _saved_ablation(tmp_path)
        (path.parent / "junk.json").write_text("{not json")  # a foreign file is named, not fatal
        await pilot.press("r")
        await settle(app, pilot)
        status = text(app, "#ablate-status")
        assert "1 ablation(s)" in status and "skipped junk.json" in status
        t = app.screen.query_one("#ablate-table", DataTable)
        rows = [[str(c) for c in t.get_row_at(i)] for i in range(t.row_count)]
        assert rows[0][:5] == ["baseline", "1", "1", "224.3", "1.000"]
        mtp3 = next(r for r in rows if r[0] == "mtp-3" and r[1] == "16" and r[2] == "0")
        assert mtp3[3] == "3497.5" and mtp3[4] == "1.453" and mtp3[7] == "100%"
        found = text(app, "#ablate-findings")
        assert "KV cache mtp-2: logged 264,129, predicted 264,129 (+0.0%)" in found
        assert "MTP model: max error 27.8% over 16 runs" in found
