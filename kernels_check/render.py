"""Renderers of a Report: a terminal table, Markdown for an issue, JSON (the API). Pure Python."""

from __future__ import annotations

from typing import Any

from kernels_check.model import CheckResult, Report

KEY_FIELDS = [("gpu", "GPU"), ("sm", "SM"), ("driver", "driver"), ("cuda_driver", "CUDA (driver)"),
              ("torch", "torch"), ("torch_cuda", "torch CUDA"), ("vllm", "vLLM"), ("flashinfer", "FlashInfer")]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return str(v)
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def summary_line(c: CheckResult) -> str:
    """The figures that matter for one check, in one line."""
    d = c.details
    parts = []
    if c.name == "environment":
        gpus = d.get("gpus") or []
        if gpus:
            parts.append(", ".join(f"{g['name']} ({g['sm']})" for g in gpus))
        for k, label in (("driver_version", "driver"), ("cuda_driver_version", "CUDA"), ("torch_version", "torch"),
                         ("torch_cuda", "built for CUDA"), ("vllm_version", "vLLM"), ("flashinfer_version", "FlashInfer")):
            if d.get(k):
                parts.append(f"{label} {d[k]}")
    elif c.name == "torch_arch" and d:
        parts.append(f"{d.get('sm')}: {d.get('match')} {d.get('entry') or ''}".strip())
    elif c.name == "moe_backends" and d.get("backends"):
        ok = [b["flag"] + ("" if b.get("w4a4") else " (w4a16)") for b in d["backends"] if b.get("w4a4") or b.get("w4a16")]
        parts.append("supported: " + (", ".join(dict.fromkeys(ok)) or "none"))
        if d.get("auto_pick_w4a4") or d.get("auto_pick_w4a16"):
            parts.append(f"auto: W4A4 {d.get('auto_pick_w4a4') or '-'}, W4A16 {d.get('auto_pick_w4a16') or '-'}")
    elif c.name == "moe_nvfp4_agree" and d.get("runs"):
        for r in d["runs"]:
            what = f"{r.get('flag')} {r.get('scheme')}"
            if r.get("rel_error") is not None and r.get("status") in ("pass", "fail"):
                ms = f", {_fmt(r['median_ms'])} ms" if r.get("median_ms") is not None else ""
                bad = "" if r["status"] == "pass" else " FAIL"
                parts.append(f"{what}{bad}: err {_fmt(r['rel_error'])}{ms}")
            else:
                parts.append(f"{what}: {r.get('status')}")
        spread = (d.get("summary") or {}).get("max_spread") or {}
        if spread:
            parts.append("spread " + ", ".join(f"{a} {_fmt(v)}" for a, v in spread.items()))
    elif c.name == "nvfp4_marlin" and d.get("runs"):
        for r in d["runs"]:
            m, n, k = r["shape_mnk"]
            parts.append(f"M={m}: err {_fmt(r['rel_error'])}, {_fmt(r['median_ms'])} ms, {_fmt(r['tflops'])} TFLOP/s")
    else:
        for k, label in (("rel_error", "err"), ("rowwise_rel_error", "row-wise err"), ("rel_error_k", "err k"),
                         ("rel_error_v", "err v"), ("tflops", "TFLOP/s"), ("ratio_to_bf16", "x BF16"),
                         ("median_ms", "ms")):
            if d.get(k) is not None:
                parts.append(f"{label} {_fmt(d[k])}")
    if c.reason:
        parts.append(c.reason)
    return "; ".join(parts)


def render_text(report: Report) -> str:
    rows = [(c.status.symbol, c.name, f"{c.seconds:.1f}s", summary_line(c)) for c in report.checks]
    w0 = max([len(r[0]) for r in rows] + [6])
    w1 = max([len(r[1]) for r in rows] + [5])
    lines = [f"kernels_check: {_fmt(report.environment.get('gpu'))} {_fmt(report.environment.get('sm'))}", ""]
    lines.append(f"{'STATUS':<{w0}}  {'CHECK':<{w1}}  {'TIME':>6}  DETAILS")
    for s, n, t, det in rows:
        lines.append(f"{s:<{w0}}  {n:<{w1}}  {t:>6}  {det}")
    r = report.recommendation
    lines += ["", f"Verdict: {r.verdict.label} (exit {r.exit_code})", f"  {r.summary}"]
    if r.checkpoint:
        lines.append(f"  checkpoint: {r.checkpoint}")
    if r.moe_backend:
        lines.append(f"  --moe-backend: {r.moe_backend}")
    for n in r.notes:
        lines.append(f"  - {n}")
    lines.append(f"({report.seconds:.1f} s)")
    return "\n".join(lines) + "\n"


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report) -> str:
    e = report.environment
    r = report.recommendation
    out = [f"### spark-tui self-test: {r.verdict.label}", ""]
    out.append("| " + " | ".join(label for _, label in KEY_FIELDS) + " |")
    out.append("|" + "---|" * len(KEY_FIELDS))
    out.append("| " + " | ".join(_md_cell(_fmt(e.get(k))) for k, _ in KEY_FIELDS) + " |")
    out += ["", "| check | status | time | details |", "|---|---|---|---|"]
    for c in report.checks:
        out.append(f"| `{c.name}` | {c.status.symbol} | {c.seconds:.1f}s | {_md_cell(summary_line(c))} |")
    out += ["", f"**Verdict:** {r.verdict.label} (exit {r.exit_code}). {r.summary}"]
    if r.checkpoint or r.moe_backend:
        out.append(f"Recommended: `{r.checkpoint or '-'}` with `--moe-backend {r.moe_backend or 'auto'}`.")
    for n in r.notes:
        out.append(f"- {n}")
    out += ["", f"<sub>kernels_check schema {report.schema_version}, started {report.started_at}, "
            f"{report.seconds:.1f} s; full data: `python -m kernels_check --json`</sub>"]
    return "\n".join(out) + "\n"


def render_json(report: Report) -> str:
    return report.to_json() + "\n"
