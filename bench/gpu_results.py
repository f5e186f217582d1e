"""Turn a GPU visit's keep/ folder (bench/gpu_visit.sh) into committed results and the planner's measured evidence.

    python bench/gpu_results.py KEEP_DIR --out bench/results [--repeat RUN.json ...] [--measured profiles/measured.toml]

Writes, from what the visit measured (nothing else):
- OUT/h200-ablation.json: the `spark-tui ablate` report as the visit wrote it;
- OUT/h200-ablation.md: the table (each variant's tok/s and TTFT at each concurrency and temperature, its ratio to
  vLLM's baseline), the KV-cache predictions against the logged values, the MTP model's fit and errors;
- OUT/h200-summary.json: the headline figures (plan vs baseline, TTFT ratio, KV prediction errors, MTP model error,
  vLLM version, checkpoint layout);
- with --measured: the `[[effect]]` and `[[mtp_step]]` rows the planner reads (spark_tui.core.catalog.evidence).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spark_tui.core.planning.mtp_model import Sample, fit  # noqa: E402



def load_report(keep: Path) -> dict:
    for name in ("ablate.json", "ablate_fallback.json"):
        p = keep / name
        if p.is_file():
            return json.loads(p.read_text())
    raise SystemExit(f"{keep}: no ablate.json (did the ablation step finish?)")


def level(res: dict, key: str, c: int, t: float) -> dict | None:
    r = res.get(key)
    if not r:
        return None
    return next((x for x in r["levels"] if x["concurrency"] == c and x["temperature"] == t), None)


LAUNCH_KV = re.compile(r"KV cache: ([\d,]+) tokens, plan predicted ([\d,]+) \(([-+\d.]+)%\)")
# `spark-tui launch` outputs the visit keeps: file under keep/ -> the setting it checked
LAUNCH_KV_CHECKS = (
    ("kv128k.out", "default plan, 131,072-token context, vLLM's memory profiling (gpu_memory_utilization 0.92)"),
    ("ct.out", "RedHatAI compressed-tensors W4A4 layout, 32,768-token context, 6 GiB pool (spark-tui launch)"),
)


def launch_kv(keep: Path, name: str, setting: str) -> dict | None:
    """A KV check `spark-tui launch` printed (logged vs predicted): the kv128k step's, issue #11's ct_serve."""
    out = keep / name
    m = LAUNCH_KV.search(out.read_text()) if out.is_file() else None
    if not m:
        return None
    return {"setting": setting, "logged": int(m.group(1).replace(",", "")),
            "predicted": int(m.group(2).replace(",", "")), "error_pct": float(m.group(3))}


def samples(rep: dict) -> list[Sample]:
    out = []
    for key, r in rep["results"].items():
        if not r.get("ok"):
            continue
        k = r.get("mtp_k", 0)
        if key != "baseline" and not key.startswith("mtp-"):
            continue
        for lv in r["levels"]:
            if not lv["output_tok_s"] or lv["errors"]:
                continue
            p = 0.0 if k == 0 else lv.get("acceptance_rate")
            if p is None:
                continue
            out.append(Sample(k, p, lv["concurrency"], lv["output_tok_s"], f"{key} T={lv['temperature']:g}",
                              lv["temperature"]))
    return out


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def r3(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("keep", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--repeat", type=Path, nargs="*", default=[],
                    help="ablate reports of repeated runs (same harness) of the baseline and the plan")
    ap.add_argument("--measured", type=Path)
    ap.add_argument("--date", default="2026-12-02")
    ap.add_argument("--layout", default="synthetic Qwen3.6-35B-A3B in NVIDIA's ModelOpt MIXED_PRECISION layout "
                                        "(W4A16_NVFP4 experts, FP8 attention/DeltaNet, BF16 MTP head), zero lm_head")
    a = ap.parse_args(argv)
    rep = load_report(a.keep)
    reps = [rep] + [json.loads(p.read_text()) for p in a.repeat]
    res = rep["results"]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "h200-ablation.json").write_text(json.dumps(rep, indent=2))
    for i, r in enumerate(reps[1:], 2):
        (a.out / f"h200-ablation-run{i}.json").write_text(json.dumps(r, indent=2))
    levels = sorted({lv["concurrency"] for r in res.values() for lv in r["levels"]})
    t_common = max({lv["temperature"] for r in res.values() for lv in r["levels"]} or {1.0})
    src = (f"bench/results/h200-summary.json (spark-tui ablate on an NVIDIA H200, {a.date}, vLLM {rep['vllm_version']}, "
           f"{a.layout})")
    plan_key = "required"  # the default plan: vLLM's baseline + its required deviations (planner v2)
    summary: dict = {"plan_vs_baseline": {}, "ttft_ratio": {}, "vllm": rep["vllm_version"], "checkpoint_layout": a.layout,
                     "plan_variant": plan_key, "temperature": t_common, "date": a.date, "runs": len(reps),
                     "harness": "every server (the baseline too): --gdn-prefill-backend triton (the carried wheels lack "
                                "the CUTLASS DSL), --kv-cache-memory-bytes 6G, --gpu-memory-utilization 0.2 and "
                                "--max-num-seqs 256 (four servers share the GPU, benchmarked one at a time), "
                                "--max-model-len 131072; 16 requests per level, 512-token prompts, 128 output tokens",
                     "ratio_method": "median over the runs of the plan / baseline ratio measured in the same run",
                     "per_run": {}, "deviations": {}}
    for c in levels:
        tok, ttft = [], []
        for i, r in enumerate(reps, 1):
            b, p = level(r["results"], "baseline", c, t_common), level(r["results"], plan_key, c, t_common)
            if b and p and b["output_tok_s"] and p["output_tok_s"]:
                tok.append(p["output_tok_s"] / b["output_tok_s"])
                t = p["ttft_p50_s"] / b["ttft_p50_s"] if b["ttft_p50_s"] and p["ttft_p50_s"] else None
                if t is not None:
                    ttft.append(t)
                summary["per_run"].setdefault(str(c), []).append(
                    {"run": i, "baseline_tok_s": round(b["output_tok_s"], 1), "plan_tok_s": round(p["output_tok_s"], 1),
                     "ratio": r3(p["output_tok_s"] / b["output_tok_s"]), "baseline_ttft_ms": round(b["ttft_p50_s"] * 1000),
                     "plan_ttft_ms": round(p["ttft_p50_s"] * 1000), "ttft_ratio": r3(t)})
        if tok:
            summary["plan_vs_baseline"][str(c)] = r3(median(tok))
        if ttft:
            summary["ttft_ratio"][str(c)] = r3(median(ttft))

    def base_tok(c: int, t: float) -> tuple[float, float] | None:  # median baseline tok/s and TTFT over the runs
        bs = [level(r["results"], "baseline", c, t) for r in reps]
        bs = [b for b in bs if b and b["output_tok_s"]]
        if not bs:
            return None
        return median([b["output_tok_s"] for b in bs]), median([b["ttft_p50_s"] for b in bs])

    for v in rep["variants"]:
        if v["key"] == "baseline":
            continue
        eff = {}
        for c in levels:
            for t in sorted({lv["temperature"] for lv in res.get(v["key"], {}).get("levels", [])}):
                b, x = base_tok(c, t), level(res, v["key"], c, t)
                if b and x and x["output_tok_s"]:
                    eff[f"c={c} T={t:g}"] = {"ratio": r3(x["output_tok_s"] / b[0]),
                                              "ttft_ratio": r3(x["ttft_p50_s"] / b[1]) if x["ttft_p50_s"] else None,
                                              "acceptance": x.get("acceptance_rate")}
        summary["deviations"][v["key"]] = {"adds": v["adds"], "effect": eff, "vs": "median baseline of the runs",
                                           "error": res.get(v["key"], {}).get("error")}
    kv = [k | {"run": i} for i, r in enumerate(reps, 1) for k in r.get("kv_cache", []) if k.get("error_pct") is not None]
    launched = [launch_kv(a.keep, name, setting) for name, setting in LAUNCH_KV_CHECKS]
    summary["kv_prediction"] = kv + [k for k in launched if k]
    summary["kv_prediction_error_pct"] = [k["error_pct"] for k in summary["kv_prediction"]]
    ss = samples(rep)
    if any(s.k for s in ss):
        f = fit(ss)
        summary["mtp_model"] = {"form": "T(k, p, c) = T0_c,T + F_c + d_c k + v_c (E[L] - 1); tok/s = c E[L] / T",
                                "t0_s": {f"{c} T={t:g}": v for (c, t), v in sorted(f.t0_at.items())},
                                "coef_s": {str(c): dict(zip(("F", "d", "v"), v)) for c, v in f.coef.items()},
                                "check": f.check(), "holdout": f.holdout_check()}
        summary["mtp_model_max_error_pct"] = round(f.max_error_pct(), 2)
        summary["mtp_model_max_error_pct_by_c"] = {str(c): f.worst_error_pct((c,)) for c in sorted(f.t0)}
        summary["mtp_model_holdout_max_error_pct"] = round(max(abs(r["error_pct"]) for r in f.holdout_check()), 2) \
            if f.holdout_check() else None
    (a.out / "h200-summary.json").write_text(json.dumps(summary, indent=2))

    md = [f"# H200 ablation, {a.date}: vLLM {rep['vllm_version']}, {a.layout}", "",
          f"Harness: {summary['harness']}.", "", "Run 1 (every variant; ratios against this run's baseline):", "",
          "| variant | c | T | output tok/s | x baseline | TTFT p50 | x baseline | acceptance | start s |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        def f_(v, spec, scale=1.0):
            return "n/a" if v is None else format(v * scale, spec)
        md.append(f"| {r['variant']} | {r['concurrency']} | {r['temperature']:g} | {f_(r['output_tok_s'], '.1f')} | "
                  f"{f_(r['ratio'], '.3f')} | {f_(r['ttft_p50_s'], '.0f', 1000)} ms | {f_(r['ttft_ratio'], '.3f')} | "
                  f"{f_(r['acceptance_rate'], '.1%')} | {f_(r['startup_s'], '.0f')} |")
    md += ["", f"The plan ({plan_key}) against vLLM's baseline, each run (T={t_common:g}):", "",
           "| c | run | baseline tok/s | plan tok/s | x | baseline TTFT ms | plan TTFT ms | x |",
           "|---|---|---|---|---|---|---|---|"]
    for c, runs in summary["per_run"].items():
        md += [f"| {c} | {x['run']} | {x['baseline_tok_s']} | {x['plan_tok_s']} | {x['ratio']} | {x['baseline_ttft_ms']} | "
               f"{x['plan_ttft_ms']} | {x['ttft_ratio']} |" for x in runs]
    md += ["", f"Median: tok/s {summary['plan_vs_baseline']}, TTFT {summary['ttft_ratio']}.", "",
           "KV cache, predicted vs logged:", ""]
    md += [f"- {k.get('variant', k.get('setting'))}{' (run %d)' % k['run'] if k.get('run', 1) > 1 else ''}: logged "
           f"{k['logged']:,}, predicted {k['predicted']:,} ({k['error_pct']:+.2f}%)" for k in summary["kv_prediction"]]
    if "mtp_model" in summary:
        md += ["", f"MTP model ({summary['mtp_model']['form']}), fitted on run 1's MTP runs: max error "
                   f"{summary['mtp_model_max_error_pct']:.1f}% (by concurrency: {summary['mtp_model_max_error_pct_by_c']}); "
                   f"each k predicted from the other k (held out): max error "
                   f"{summary['mtp_model_holdout_max_error_pct']}%", "",
               "| run | k | acceptance | c | measured tok/s | predicted tok/s | error % | held out: predicted | error % |",
               "|---|---|---|---|---|---|---|---|---|"]
        ho = {(r["label"], r["c"]): r for r in summary["mtp_model"]["holdout"]}
        for r in summary["mtp_model"]["check"]:
            h = ho.get((r["label"], r["c"]))
            md.append(f"| {r['label']} | {r['k']} | {r['p']:.3f} | {r['c']} | {r['measured_tok_s']} | "
                      f"{r['predicted_tok_s']} | {r['error_pct']:+.2f} | {h['predicted_tok_s'] if h else '-'} | "
                      f"{format(h['error_pct'], '+.2f') if h else '-'} |")
    (a.out / "h200-ablation.md").write_text("\n".join(md) + "\n")

    if a.measured:
        rows = ["# Measured by spark-tui on real GPUs (bench/results/): what the planner may act on", "#",
                "# [[effect]]: output tok/s of vLLM's baseline plus one flag over the baseline alone (median of the",
                "# visit's baseline runs), same prompts, same server otherwise (spark-tui ablate). [[mtp_step]]: MTP",
                "# decode runs, the MTP speed model's input. Written by bench/gpu_results.py; every row names its source.",
                ""]
        for v in rep["variants"]:
            key = v["key"]
            if key in ("baseline", "required", "plan") or key.startswith("mtp-") or len(v["adds"]) != 1:
                continue
            flag, _, value = key.partition("=")
            for c in levels:
                b, x = base_tok(c, t_common), level(res, key, c, t_common)
                if not (b and x and x["output_tok_s"]):
                    continue
                rows += ["[[effect]]", 'device = "h200"', "sm = 90", 'checkpoint = "nvidia-nvfp4"', f'flag = "{flag}"',
                         f'value = "{value}"', f"concurrency = {c}", f"ratio = {x['output_tok_s'] / b[0]:.4f}",
                         f"ttft_ratio = {x['ttft_p50_s'] / b[1]:.4f}" if x["ttft_p50_s"] else "",
                         f'vllm = "{rep["vllm_version"]}"', f'source = "{src}"',
                         f'conditions = "temperature {t_common:g}, 512-token prompts, 128 output tokens"', ""]
        for s in ss:
            rows += ["[[mtp_step]]", 'device = "h200"', "sm = 90", 'checkpoint = "nvidia-nvfp4"', f"k = {s.k}",
                     f"p = {s.p:.4f}", f"concurrency = {s.c}", f"tok_s = {s.tok_s:.2f}", f"temperature = {s.temperature:g}",
                     f'vllm = "{rep["vllm_version"]}"', f'source = "{src}"', f'run = "{s.label}"', ""]
        a.measured.write_text("\n".join(r for r in rows if r is not None) + "\n")
    print(json.dumps({k: summary[k] for k in ("plan_vs_baseline", "ttft_ratio", "kv_prediction_error_pct")}
                     | {"mtp_model_max_error_pct": summary.get("mtp_model_max_error_pct")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
