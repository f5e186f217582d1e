"""The vLLM log parser and startup tracker against real logs (tests/data/logs, sources in SOURCES.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spark_tui.core.runtime import vllm_log as vl

DATA = Path(__file__).resolve().parents[1] / "data" / "logs"


def load(name: str) -> str:
    return (DATA / name).read_bytes().decode("utf-8")


def parse(name: str):
    lines, events = vl.parse_text(load(name))
    return lines, events, vl.StartupTracker().observe_all(lines, events)


def of(events, cls):
    return [e for e in events if isinstance(e, cls)]


# --- prefixes ------------------------------------------------------------------------------------------------

def test_prefix_with_process_name():
    ll = vl.parse_line("(EngineCore pid=125) INFO 05-03 17:52:22 [default_loader.py:384] Loading weights took 122.79 "
                       "seconds", 7)
    assert (ll.process, ll.pid, ll.level, ll.time, ll.source) == ("EngineCore", 125, "INFO", "05-03 17:52:22",
                                                                  "default_loader.py:384")
    assert ll.message == "Loading weights took 122.79 seconds" and ll.number == 7


def test_old_prefix_without_brackets_or_process():
    ll = vl.parse_line("INFO 01-30 03:19:14 kv_cache_utils.py:395] # GPU blocks: 1381")
    assert (ll.process, ll.level, ll.time, ll.source, ll.message) == (
        None, "INFO", "01-30 03:19:14", "kv_cache_utils.py:395", "# GPU blocks: 1381")


def test_prefix_after_ci_timestamp_and_ansi_is_stripped():
    ll = vl.parse_line("2026-05-01 21:15:25.536 | \x1b[32m(EngineCore pid=187) INFO\x1b[0m 05-01 19:15:25 "
                       "[nvfp4.py:209] Using 'VLLM_CUTLASS' NvFp4 MoE backend out of potential backends: ['MARLIN'].")
    assert ll.process == "EngineCore" and ll.source == "nvfp4.py:209"
    assert "\x1b" not in ll.raw and ll.message.startswith("Using 'VLLM_CUTLASS'")


def test_process_only_prefix_for_tqdm_and_tracebacks():
    ll = vl.parse_line("(EngineCore pid=125) Loading safetensors checkpoint shards:  33% Completed | 1/3 [01:54<03:49]")
    assert ll.process == "EngineCore" and ll.level is None and ll.message.startswith("Loading safetensors")


# --- whole real logs -------------------------------------------------------------------------------------------

def test_v020_qwen36_nvfp4_full_startup():
    lines, events, t = parse("v0.20.0-qwen36-nvfp4-redhat-startup.log")
    s = t.summary()
    assert s.vllm_version == "0.20.0" and s.model == "RedHatAI/Qwen3.6-35B-A3B-NVFP4"
    assert s.architecture == "Qwen3_5MoeForConditionalGeneration" and s.max_model_len == 262144
    assert s.quantization == "compressed-tensors" and s.kv_cache_dtype == "fp8_e4m3"
    assert s.moe_backend == "FLASHINFER_CUTLASS"
    assert s.moe_backend_candidates == ("FLASHINFER_TRTLLM", "FLASHINFER_CUTEDSL", "FLASHINFER_CUTEDSL_BATCHED",
                                        "FLASHINFER_CUTLASS", "VLLM_CUTLASS", "MARLIN", "EMULATION")
    assert s.attention_backend == "FLASHINFER"
    assert s.nvfp4_gemm_backend == "FlashInferCutlassNvFp4LinearKernel"
    assert s.attention_block_size == 2096  # FACTS §5 predicted 2096 for FP8 KV: confirmed by this real log
    assert (s.weights_gib, s.load_seconds, s.kv_cache_gib) == (21.86, 125.992893, 66.93)
    assert (s.kv_cache_tokens, s.max_concurrency) == (1754352, 25.36)
    assert (s.graph_capture_seconds, s.graph_memory_gib) == (1.0, 0.47)
    assert (s.init_engine_seconds, s.compilation_seconds) == (149.8, 62.8)
    assert s.server_url == "http://0.0.0.0:8000" and s.ready
    assert s.time_to_ready_s == 336.0  # 17:49:37 -> 17:55:13 (uvicorn's line has no time: last vLLM time before it)
    assert [p.status for p in t.phases()] == ["done"] * 6 + ["pending"]  # no stats line: it served nothing
    prog = of(events, vl.LoadProgress)
    assert [(p.percent, p.done, p.total) for p in prog] == [(0, 0, 3), (33, 1, 3), (100, 3, 3), (100, 3, 3)]
    caps = of(events, vl.GraphCaptureProgress)
    assert caps[0].desc == "mixed prefill-decode, PIECEWISE" and (caps[0].done, caps[0].total) == (1, 1)
    assert caps[-1].desc == "decode, FULL"
    weights_line = next(e.line for e in of(events, vl.WeightsLoaded))
    assert lines[weights_line - 1].source == "default_loader.py:384"


def test_v024_two_line_kv():
    _, events, t = parse("v0.24.0-qwen36-nvfp4-5090-two-line-kv.log")
    s = t.summary()
    assert (s.kv_cache_gib, s.kv_cache_tokens, s.max_concurrency, s.max_model_len) == (5.98, 567978, 4.33, 131072)
    assert of(events, vl.KvCacheSize)[0].device == "GPU"
    phases = {p.key: p.status for p in t.phases()}
    assert (phases["kv_cache"], phases["graphs"]) == ("done", "active")  # allocated: a failure now is a graph one


def test_v019_short_prefix_two_line_kv():
    lines, events, t = parse("v0.19.0-qwen35-short-prefix-two-line-kv.log")
    assert lines[0].source == "kv_cache_utils.py:1319" and lines[0].time is None
    s = t.summary()
    assert (s.kv_cache_tokens, s.max_concurrency, s.max_model_len) == (290864, 33.04, 32768)


def test_v0_gpu_blocks_form():
    _, events, t = parse("v0.6-v0-gpu-blocks-max-len-too-large.log")
    assert [(e.gpu, e.cpu) for e in of(events, vl.GpuBlocks)] == [(1478, 2048)]
    s = t.summary()
    assert (s.gpu_blocks, s.max_concurrency, s.max_model_len, s.weights_gib) == (1478, 0.82, 29000, 14.9888)
    _, events, t = parse("v0.7-v1-early-gpu-blocks-old-prefix.log")
    assert [(e.gpu, e.cpu) for e in of(events, vl.GpuBlocks)] == [(1381, None)]
    assert t.summary().max_concurrency == 10.79


def test_cpu_032_single_line_kv_and_stats():
    lines, events, t = parse("cpu-0.32.0-startup-shutdown.log")
    s = t.summary()
    assert (s.vllm_version, s.model) == ("0.32.0", "/tmp/logs-helper/models/qwen35-mtp")  # logo form, \r\n lines
    assert s.architecture == "Qwen3_5MoeForCausalLM"  # the target, not the MTP drafter resolved after it
    assert s.max_model_len == 512  # not the drafter's 2048
    kv = of(events, vl.KvCacheSize)
    assert [(k.tokens, k.device) for k in kv] == [(6528, "CPU")]
    mc = of(events, vl.MaxConcurrency)
    assert [(m.max_model_len, m.concurrency) for m in mc] == [(512, 12.75)]
    assert kv[0].line == mc[0].line  # one line in 0.32
    assert s.attention_block_size == 640 and s.init_engine_seconds == 0.08
    assert s.moe_backend == "CPU" and s.moe_backend_candidates == ("CPU",)
    assert s.server_url == "http://127.0.0.1:18377" and s.ready and s.time_to_ready_s == 45.0
    stats = of(events, vl.EngineStats)
    assert stats[0] == vl.EngineStats(stats[0].line, 0, 2.8, 29.7, 0, 0, None, 0.0, None)
    spec = of(events, vl.SpecDecodeStats)
    assert (spec[0].mean_acceptance_length, spec[0].drafted_tps, spec[0].accepted, spec[0].drafted) == (
        1.0, 29.22, 0, 315)
    assert spec[0].per_position == (0.0,) and spec[0].avg_acceptance_pct == 0.0
    sd = of(events, vl.ShutdownRequested)
    assert sd[0].signal is None and "shutdown triggered" in sd[0].text
    assert any(e.signal == "SIGTERM" for e in sd)


def test_model_card_wrapped_backend_line_short_prefix():
    _, events, _ = parse("v0.19-qwen36-nvfp4-fp8-model-card-backend-line.log")
    moe = of(events, vl.MoeBackend)
    assert [(m.backend, m.quant) for m in moe] == [("FLASHINFER_CUTLASS", "NvFp4")]


def test_explicit_attention_backend_and_drafter_backend():
    text = ("(EngineCore pid=282) INFO 06-01 21:52:09 [nvfp4.py:231] Using 'MARLIN' NvFp4 MoE backend out of "
            "potential backends: ['FLASHINFER_TRTLLM', 'MARLIN'].\n"
            "(EngineCore pid=282) INFO 06-01 21:52:09 [cuda.py:318] Using AttentionBackendEnum.FLASHINFER backend.\n"
            "(EngineCore pid=282) INFO 06-01 21:52:30 [unquantized.py:529] Using TritonExperts MoE backend\n"
            "(EngineCore pid=282) INFO 06-01 21:52:30 [unquantized.py:364] Using TRITON Unquantized MoE backend out "
            "of potential backends: ['TRITON', 'FLASHINFER_CUTLASS'].\n")
    lines, events = vl.parse_text(text)
    s = vl.StartupTracker().observe_all(lines, events).summary()
    assert (s.moe_backend, s.drafter_moe_backend, s.attention_backend) == ("MARLIN", "TRITON", "FLASHINFER")


# --- incremental feeding ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.log")))
@pytest.mark.parametrize("size", [1, 7, 4096])
def test_chunked_feeding_equals_whole(name, size):
    text = load(name)
    whole_lines, whole = vl.parse_text(text)
    p = vl.VllmLogParser()
    got = []
    for i in range(0, len(text), size):
        got += p.feed(text[i:i + size])
    got += p.close()
    assert got == whole
    assert [ll.raw for ll in p.lines] == [ll.raw for ll in whole_lines]


def test_tqdm_carriage_return_updates_give_progress_as_they_come():
    p = vl.VllmLogParser()
    t = vl.StartupTracker()
    seen = []
    for frame in ("Loading safetensors checkpoint shards:   0% Completed | 0/5 [00:00<?, ?it/s]",
                  "\rLoading safetensors checkpoint shards:  40% Completed | 2/5 [00:03<00:04,  1.5s/it]",
                  "\rLoading safetensors checkpoint shards: 100% Completed | 5/5 [00:07<00:00,  1.4s/it]", "\n"):
        for e in p.feed(frame):
            t.observe(e)
            seen.append((e.percent, e.done))
        weights = {ph.key: ph for ph in t.phases()}["weights"]
        if seen:
            assert weights.status == "active"
    # the \r that ends a frame is held until the next chunk tells whether it is \r\n: progress lags one frame
    assert seen == [(0, 0), (40, 2), (100, 5)]
    assert {ph.key: ph for ph in t.phases()}["weights"].progress == 1.0


def test_crlf_split_across_chunks_is_one_line_break():
    p = vl.VllmLogParser()
    ev = p.feed("INFO 11-23 11:10:02 [model.py:733] Resolved architecture: A\r")
    ev += p.feed("\nINFO 11-23 11:10:02 [model.py:2152] Using max model len 512\n")
    assert [type(e).__name__ for e in ev] == ["Architecture", "MaxModelLen"]
    assert len(p.lines) == 2


def test_graph_capture_progress_from_joined_tqdm_frames():
    _, events = vl.parse_text(
        "Capturing CUDA graphs (decode, FULL):   0%|          | 0/2 [00:00<?, ?it/s]"
        "Capturing CUDA graphs (decode, FULL):  50%|#####     | 1/2 [00:00<00:00, 5.0it/s]\n")
    caps = of(events, vl.GraphCaptureProgress)
    assert [(c.desc, c.percent, c.done, c.total) for c in caps] == [("decode, FULL", 50, 1, 2)]


def test_plain_banner_and_failure_marks_phase():
    lines, events = vl.parse_text("(APIServer pid=1) INFO 11-23 10:00:00 [api_utils.py:337] vLLM server version "
                                  "0.33.0, serving model nvidia/Qwen3.6-35B-A3B-NVFP4\n")
    t = vl.StartupTracker().observe_all(lines, events)
    assert (t.summary().vllm_version, t.summary().model) == ("0.33.0", "nvidia/Qwen3.6-35B-A3B-NVFP4")
    t.fail("out_of_memory")  # the banner ticked "starting": the failure belongs to the next phase
    ph = t.phases()
    assert ph[0].status == "done" and (ph[1].status, ph[1].detail) == ("failed", "out_of_memory")
    t.fail("out_of_memory", phase="weights")  # a diagnosis that knows where it stopped says so
    assert [p.status for p in t.phases()][:4] == ["done", "pending", "failed", "pending"]


# --- fuzz --------------------------------------------------------------------------------------------------------

_ALPHABET = st.sampled_from(list("\r\n\x1b[]()|%:,.' #=-_/0123456789xGiBKVMoEINFOWARNpid█▀▄") + [
    "INFO ", "ERROR ", "(EngineCore pid=1) ", "[x.py:1] ", "KV cache size: ", "Maximum concurrency for ",
    " tokens per request: ", "Capturing CUDA graphs (", "% Completed | ", "Loading safetensors checkpoint shards: ",
    "Avg prompt throughput: ", "SpecDecoding metrics: ", "Per-position acceptance rate: ", "version ", "model ",
    "non-default args: {", "Using '", "' NvFp4 MoE backend out of potential backends: [", "took ", " GiB",
    "Loading weights took ", " seconds", "Graph capturing finished in ", " secs, took ", "1.2.3", "1e999",
    "Available KV cache memory: ", "init engine (profile, create kv cache, warmup model) took ", " s",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET, max_size=80), st.integers(min_value=1, max_value=50))
def test_parser_never_raises_on_arbitrary_text(parts, size):
    text = "".join(parts)
    p = vl.VllmLogParser()
    t = vl.StartupTracker()
    for i in range(0, len(text), size):
        for ll_e in p.feed(text[i:i + size]):
            t.observe(ll_e)
    for e in p.close():
        t.observe(e)
    t.phases()
    t.summary().to_dict()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_parser_never_raises_on_unicode(text):
    vl.parse_text(text)


# --- the whole-log scanner agrees with the line-by-line parser, and stays linear -----------------------------------

@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.log")))
def test_scan_gives_the_same_summary_and_phases_as_parsing_every_line(name):
    from spark_tui.core.runtime.diagnose import diagnose_text

    text = load(name)
    lines, events = vl.parse_text(text)
    full = vl.StartupTracker().observe_all(lines, events)
    summary, _, scanned = diagnose_text(text)
    assert summary == full.summary()
    if not any(p.status == "failed" for p in scanned.phases()):
        assert scanned.phases() == full.phases()


def test_every_event_line_holds_a_needle():
    """The scanner parses only lines holding a needle: every event the full parser finds must come from one."""
    rx = vl.candidate_regex()
    for path in DATA.glob("*.log"):
        lines, events = vl.parse_text(load(path.name))
        by_number = {ll.number: ll for ll in lines}
        for ev in events:
            if not isinstance(ev, vl.Problem):
                assert rx.search(by_number[ev.line].raw), (path.name, ev)


def test_a_large_log_is_read_in_linear_time():
    import time

    from spark_tui.core.runtime.diagnose import diagnose_text

    unit = "".join(load(p.name) + "\n" for p in sorted(DATA.glob("*.log")))
    big = unit * (300_000 // unit.count("\n") + 1)  # ~300k lines; the quadratic reader took 12.5 s for 40k
    t0 = time.process_time()
    diagnose_text(big)
    assert time.process_time() - t0 < 30


def test_serving_phase_from_stats_lines_alone():
    lines, events = vl.parse_text(load("v0.3-v0-serving-stats-pending.log"))  # vllm #3094 (no trailing period)
    t = vl.StartupTracker().observe_all(lines, events)
    s = t.summary()
    assert (s.generation_tps, s.running, s.waiting, s.kv_cache_usage_pct, s.stats_lines) == (44.9, 2, 3, 82.1, 1)
    assert [p.status for p in t.phases()] == ["pending"] * 6 + ["done"]


def test_kv_phase_needs_its_own_line_and_a_zero_block_cache_is_not_allocated():
    lines, events = vl.parse_text(load("v0.7-v0-negative-kv-cache-zero-blocks.log"))  # vllm #13882
    t = vl.StartupTracker().observe_all(lines, events)
    assert t.summary().gpu_blocks == 0
    assert {p.key: p.status for p in t.phases()}["kv_cache"] == "active"  # "# cuda blocks: 0" allocated nothing
