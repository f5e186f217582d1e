"""`spark-tui ablate`: from one plan, vLLM's baseline, each deviation alone and the full plan, benchmarked side by side.

Exit codes: 0 every variant measured; 1 a variant failed to start or to serve; 2 bad input; 4 bad profile;
5 no plan; 6 vLLM missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spark_tui.core.observe.ablate import AblationState, Variant
    from spark_tui.core.planning.flags import Flag
    from spark_tui.core.planning.plan import Plan


def _float_list(text: str) -> tuple[float, ...]:
    import math

    try:
        vals = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers (e.g. 0,1)") from None
    if not vals or any(not math.isfinite(v) or not 0 <= v <= 10 for v in vals):
        raise argparse.ArgumentTypeError(f"{text!r}: temperatures from 0 to 10, e.g. 0,1")
    return vals


def add_parser(p: argparse.ArgumentParser) -> None:
    from spark_tui.commands.bench import int_list
    from spark_tui.commands.plan import add_plan_arguments

    add_plan_arguments(p)
    a = p.add_argument_group("ablate")
    a.add_argument("--levels", type=int_list(1, "1,16"), default=(1, 16), metavar="LIST",
                   help="concurrency levels every variant is benchmarked at (default 1,16; --concurrency is the "
                        "plan's request cap)")
    a.add_argument("--temperatures", type=_float_list, default=(0.0,), metavar="LIST",
                   help="sampling temperatures every variant is benchmarked at (default 0)")
    a.add_argument("--mtp-temperatures", type=_float_list, metavar="LIST",
                   help="extra temperatures for the baseline and the MTP variants (acceptance depends on them)")
    a.add_argument("--mtp-values", type=int_list(1, "1,2,3"), default=(), metavar="LIST",
                   help="also measure MTP with these draft-token counts, alone on the baseline (the MTP model's input)")
    a.add_argument("--requests", type=int, default=16, help="requests per level (default 16)")
    a.add_argument("--prompt-tokens", type=int, default=512, help="prompt length in tokens (default 512)")
    a.add_argument("--output-tokens", type=int, default=256, help="output length in tokens (default 256)")
    a.add_argument("--startup-timeout", type=float, default=1800.0, help="seconds to wait for each server")
    a.add_argument("--servers", type=int, default=1, metavar="N",
                   help="start up to N servers at once on one GPU (give each a share with --set-all "
                        "kv-cache-memory-bytes=... and gpu-memory-utilization=...); they are benchmarked one at a time")
    a.add_argument("--set-all", action="append", default=[], metavar="FLAG=VALUE",
                   help="a harness flag every variant gets, the baseline too (repeatable)")
    a.add_argument("--skip", action="append", default=[], metavar="FLAG",
                   help="do not measure this deviation alone (e.g. --skip load-format: start time only)")
    a.add_argument("--list", action="store_true", help="print the variants and exit without starting anything")
    a.add_argument("--restart", action="store_true", help="forget earlier results of this ablation")
    a.add_argument("--out", metavar="FILE", help="also write the JSON report to FILE")
    a.add_argument("--json", action="store_true", help="print the report as JSON")


def _harness(items: list[str]) -> list[Flag]:
    from spark_tui.core.planning.flags import Flag, coerce
    from spark_tui.core.planning.request import parse_set
    from spark_tui.errors import UsageError

    out = []
    for name, value, remove in parse_set(items):
        if remove or not name.startswith("--"):
            raise UsageError(f"--set-all {name}: give a vLLM flag with a value or a switch",
                             "e.g. --set-all kv-cache-memory-bytes=6G")
        out.append(Flag(name, coerce(name, value), "harness flag (spark-tui ablate --set-all)", "user --set-all"))
    return out


def report(plan: Plan, vs: list[Variant], st: AblationState) -> dict[str, Any]:
    from spark_tui.core.observe import ablate
    from spark_tui.core.planning import mtp_model

    order = [v.key for v in vs]
    rows = ablate.ratios(st, order)
    samples = ablate.mtp_samples(st)
    mtp: dict[str, Any] | None = None
    if any(s.k for s in samples):
        try:
            f = mtp_model.fit(samples)
            mtp = {"t0_s": f.t0, "coef_s": {c: dict(zip(("F", "d", "v"), v)) for c, v in f.coef.items()},
                   "check": f.check(), "holdout": f.holdout_check(), "max_error_pct": f.max_error_pct()}
        except ValueError as e:
            mtp = {"error": str(e)}
    kv = ablate.kv_cache_checks(st)
    return {"schema_version": 1, "plan_argv": plan.argv(), "baseline_argv": list(plan.baseline.argv)
            if plan.baseline else None, "vllm_version": plan.vllm_version, "device": plan.device.id,
            "checkpoint": plan.checkpoint.id, "config": st.config,
            "variants": [{"key": v.key, "label": v.label, "adds": list(v.adds), "argv_flags": v.argv_flags(),
                          "mtp_k": v.mtp_k} for v in vs],
            "results": {k: r.__dict__ | {"levels": [lv.__dict__ for lv in r.levels]} for k, r in st.results.items()},
            "rows": rows, "kv_cache": kv, "mtp_model": mtp}


def _preflight(plan: Plan, vs: list[Variant]) -> None:
    """Refuse, before any server starts, a variant vLLM would refuse: a hybrid model's decode CUDA graphs need one
    KV-pool block per sequence (the first H200 ablation lost every server to it)."""
    from spark_tui.core.planning.flags import Flags
    from spark_tui.core.planning.planner import graph_seqs_problem, memory_for_flags
    from spark_tui.errors import UsageError

    bad = []
    for v in vs:
        try:
            m = memory_for_flags(plan, Flags(v.flags))
        except Exception:  # noqa: BLE001 - no prediction: nothing to refuse
            continue
        p = graph_seqs_problem(m, "--enforce-eager" in Flags(v.flags))
        if p:
            bad.append((v.key, m.num_blocks))
    if bad:
        lo = min(b for _, b in bad)
        raise UsageError("vLLM would refuse to start " + ", ".join(f"{k} ({b} KV blocks)" for k, b in bad)
                         + ": its default --max-num-seqs is above the pool's blocks, and a hybrid model's decode CUDA "
                           "graphs need one block per sequence",
                         f"add --set-all max-num-seqs={lo} (or a larger --set-all kv-cache-memory-bytes)")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace as dc_replace

    from spark_tui.commands.plan import plan_from_args
    from spark_tui.core.observe import ablate
    from spark_tui.core.planning.flags import Flags
    from spark_tui.core.planning.planner import memory_for_flags
    from spark_tui.errors import UsageError

    if args.servers < 1 or args.requests < 1:
        raise UsageError("--servers and --requests must be at least 1", "e.g. --servers 1 --requests 16")
    if args.startup_timeout <= 0 or args.startup_timeout != args.startup_timeout:
        raise UsageError("--startup-timeout must be a positive number of seconds", "e.g. --startup-timeout 900")
    plan = plan_from_args(args)
    mtp_plans = {k: plan_from_args(argparse.Namespace(**{**vars(args), "mtp": k, "include_unmeasured": False}))
                 for k in args.mtp_values}
    harness = _harness(args.set_all)
    skip = ["--" + s.lstrip("-") for s in args.skip]
    vs = ablate.variants(plan, mtp_plans, harness, skip)
    _preflight(plan, vs)
    if args.list:
        for v in vs:
            print(f"{v.key}: {v.label}\n  vllm serve {plan.model} {' '.join(v.argv_flags())}")
        return 0
    cfg = ablate.AblationConfig(concurrency=tuple(args.levels), temperatures=tuple(args.temperatures),
                                mtp_temperatures=args.mtp_temperatures, prompt_tokens=args.prompt_tokens,
                                output_tokens=args.output_tokens, requests=args.requests,
                                startup_timeout_s=args.startup_timeout, parallel=args.servers)
    conf = {k: v for k, v in vars(cfg).items() if k != "startup_timeout_s"}
    conf["variants"] = [[v.key, v.argv_flags()] for v in vs]
    path = ablate.state_path(plan.argv(), conf)
    st = ablate.AblationState(plan.argv(), conf) if args.restart else ablate.load_state(path, plan.argv(), conf)

    def predict(v: Variant) -> int | None:
        try:
            return memory_for_flags(dc_replace(plan), Flags(v.flags)).kv_cache_tokens
        except Exception:  # noqa: BLE001 - a prediction that cannot be made is reported as missing
            return None

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    ablate.run_ablation(plan, vs, st, path, cfg, log=log, predict=predict)
    rep = report(plan, vs, st)
    if args.out:  # replaced atomically; never written onto a FIFO (which would block), a device, a folder or a link
        from pathlib import Path

        from spark_tui.core.export.files import write_files

        write_files([(Path(args.out), json.dumps(rep, indent=2, default=str), 0o644)], force=True)
    if args.json:
        print(json.dumps(rep, indent=2, default=str))
    else:
        print(ablate.render_table(st, [v.key for v in vs]))
        if rep["mtp_model"] and "max_error_pct" in rep["mtp_model"]:
            print(f"MTP model: max error {rep['mtp_model']['max_error_pct']:.1f}% over {len(rep['mtp_model']['check'])} runs")
        print(f"state: {path}")
    return 0 if all(r.ok for r in st.results.values()) and len(st.results) >= len(vs) else 1
