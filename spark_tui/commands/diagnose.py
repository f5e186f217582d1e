"""`spark-tui diagnose LOGFILE [--json]`: startup summary, phases and failure diagnoses of a vLLM log.

Exit codes: 0 no failure found, 1 a failure was diagnosed, 2 the input could not be read.
The JSON output is an API (README "diagnose"): {"schema": 1, "file", "summary", "phases", "diagnoses", "failed"}.
"""

from __future__ import annotations

import argparse
import json
import sys

from spark_tui.errors import ExitCode, UsageError

SCHEMA_VERSION = 1
MAX_BYTES = 512 * 1024 * 1024  # refuse to slurp more than this (a log that large is not a vLLM startup log)


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("logfile", metavar="LOGFILE", help="vLLM stdout/stderr log file, or - for standard input")
    p.add_argument("--json", action="store_true", help="print a JSON document (see README) instead of text")


def _read(path: str) -> str:
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_BYTES + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_BYTES + 1)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read {path!r}: {getattr(e, 'strerror', None) or e}",
                         "pass a readable vLLM log file, or - to read standard input") from None
    if len(data) > MAX_BYTES:
        raise UsageError(f"{path!r} is larger than {MAX_BYTES // 2**20} MiB",
                         "pass the part of the log that covers the server's start (e.g. `tail -c 100M`)")
    return data.decode("utf-8", errors="replace")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _serving_rows(s) -> list[tuple[str, str]]:
    rows = []
    if s.generation_tps is not None:
        rows.append(("throughput", f"generation {s.generation_tps:g} tok/s, prompt {s.prompt_tps:g} tok/s"))
    if s.running is not None or s.waiting is not None:
        rows.append(("requests", f"running {_fmt(s.running) if s.running is not None else 'n/a'}, "
                                 f"waiting {_fmt(s.waiting) if s.waiting is not None else 'n/a'}"))
    if s.kv_cache_usage_pct is not None:
        rows.append(("KV cache use", f"{s.kv_cache_usage_pct:g}%"))
    if s.prefix_cache_hit_pct is not None:
        rows.append(("prefix cache hits", f"{s.prefix_cache_hit_pct:g}%"))
    if s.spec_acceptance_pct is not None:
        extra = [f"k={s.spec_k}"] if s.spec_k else []
        if s.spec_mean_acceptance_length is not None:
            extra.append(f"mean length {s.spec_mean_acceptance_length:.2f}")
        if s.spec_per_position:
            extra.append("per position " + ", ".join(f"{p:.2f}" for p in s.spec_per_position))
        rows.append(("drafts accepted", f"{s.spec_acceptance_pct:.1f}% of {s.spec_drafted_tokens:,} tokens"
                     + (f" ({'; '.join(extra)})" if extra else "")))
    return rows


def _text(summary, phases, diags) -> str:
    s = summary
    rows = [
        ("vLLM", s.vllm_version), ("model", s.model), ("architecture", s.architecture),
        ("max model len", s.max_model_len), ("quantization", s.quantization), ("KV cache dtype", s.kv_cache_dtype),
        ("MoE backend", s.moe_backend), ("drafter MoE backend", s.drafter_moe_backend),
        ("attention backend", s.attention_backend), ("NVFP4 GEMM", s.nvfp4_gemm_backend),
        ("attention block size", s.attention_block_size),
        ("max batched tokens", s.max_num_batched_tokens),
        ("weights", f"{s.weights_gib:g} GiB" if s.weights_gib is not None else None),
        ("model load", f"{s.load_seconds:g} s" if s.load_seconds is not None else None),
        ("KV cache memory", f"{s.kv_cache_gib:g} GiB" if s.kv_cache_gib is not None else None),
        ("KV cache", f"{s.kv_cache_tokens:,} tokens" if s.kv_cache_tokens is not None else None),
        ("max concurrency", f"{s.max_concurrency:g}x" if s.max_concurrency is not None else None),
        ("GPU blocks (V0)", s.gpu_blocks),
        ("CUDA graphs", f"{s.graph_capture_seconds:g} s, {s.graph_memory_gib:g} GiB"
         if s.graph_capture_seconds is not None else None),
        ("engine init", (f"{s.init_engine_seconds:g} s" + (f" (compilation {s.compilation_seconds:g} s)"
                                                          if s.compilation_seconds else ""))
         if s.init_engine_seconds is not None else None),
        ("server", s.server_url),
        ("time to ready", f"{s.time_to_ready_s:g} s" if s.time_to_ready_s is not None else None),
    ]
    out = ["Startup"]
    out += [f"  {k:<22}{_fmt(v)}" for k, v in rows if v is not None] or ["  (no startup lines in this log)"]
    serving = _serving_rows(s)
    if serving:
        out.append("Serving (last stats line" + ("; drafts over the whole log" if s.spec_drafted_tokens else "") + ")")
        out += [f"  {k:<22}{v}" for k, v in serving]
    marks = {"done": "[x]", "active": "[~]", "failed": "[!]", "pending": "[ ]"}
    out.append("Phases")
    for ph in phases:
        extra = f"  {ph.detail}" if ph.detail else ""
        out.append(f"  {marks[ph.status]} {ph.title}{extra}")
    out.append("Diagnosis")
    if not diags:
        out.append("  no failure found")
    for d in diags:
        out.append(f"  {d.severity.upper()} {d.kind}: {d.cause}")
        out.append(f"    fix: {d.fix}")
        for a in d.fix_args:
            val = a.get("value")
            out.append(f"    apply: {a['flag']}" + (" (remove)" if val is None else (f" {val}" if val else "")))
        for n, line in zip(d.evidence_lines, d.evidence):
            out.append(f"    line {n}: {line[:300]}")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from spark_tui.core.runtime.diagnose import diagnose_text, has_failure

    text = _read(args.logfile)
    summary, diags, tracker = diagnose_text(text)
    failed = has_failure(diags)
    phases = tracker.phases()
    if args.json:
        doc = {
            "schema": SCHEMA_VERSION,
            "file": args.logfile,
            "summary": summary.to_dict(),
            "phases": [p.__dict__ for p in phases],
            "diagnoses": [d.to_dict() for d in diags],
            "failed": failed,
        }
        print(json.dumps(doc, indent=2))
    else:
        print(_text(summary, phases, diags))
    return int(ExitCode.FAILURE if failed else ExitCode.OK)
