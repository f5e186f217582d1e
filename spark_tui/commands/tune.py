"""`spark-tui tune`: relaunch vLLM with MTP off / k=1..4 (and batching steps for throughput), bench each,
keep the fastest as a user override shown in the plan as "measured on this machine"."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spark_tui.core.planning.plan import Plan


def add_parser(p: argparse.ArgumentParser) -> None:
    from spark_tui.commands.argtypes import positive_int, positive_minutes, positive_seconds
    from spark_tui.commands.bench import int_list
    from spark_tui.commands.plan import add_plan_arguments

    add_plan_arguments(p)  # --goal among them: tune takes latency or throughput, latency by default
    for a in p._actions:  # noqa: SLF001 - argparse has no public way to change another group's option
        if a.dest == "goal":
            a.default = "latency"
            a.help = "latency (default: MTP settings at concurrency 1) or throughput (also batching)"
    t = p.add_argument_group("tune")
    t.add_argument("--budget", type=positive_minutes, metavar="MINUTES", help="stop starting new candidates after this long")
    t.add_argument("--mtp-values", type=int_list(0, "0,1,2,3 (0 = MTP off)"), default=(0, 1, 2, 3, 4), metavar="LIST",
                   help="MTP draft-token counts to try, 0 = off (default 0,1,2,3,4)")
    t.add_argument("--probe", action="store_true",
                   help="measure MTP off and the largest --mtp-values k only, read this machine's acceptance from that "
                        "run, and let the MTP speed model fitted on this device class's measured runs pick k (then "
                        "measured too); where no such model is trusted, the rest of the sweep runs")
    t.add_argument("--requests", type=positive_int, default=16, help="requests per candidate (default 16)")
    t.add_argument("--prompt-tokens", type=positive_int, default=512, help="prompt length in tokens (default 512)")
    t.add_argument("--output-tokens", type=positive_int, default=256, help="output length in tokens (default 256)")
    t.add_argument("--startup-timeout", type=positive_seconds, default=900.0, help="seconds to wait for each server (default 900)")
    t.add_argument("--restart", action="store_true", help="forget earlier results of this tune and measure all again")
    t.add_argument("--no-preflight", action="store_true",
                   help="skip the port / memory / checkpoint checks before each candidate (as `launch --no-preflight`)")
    t.add_argument("--no-save", action="store_true", help="do not write the winner as a user override")
    t.add_argument("--json", action="store_true", help="print the results as JSON")


def _int_flag(plan: Plan, name: str) -> int | None:
    """The plan's integer flag (None when absent or 0)."""
    f = plan.flag(name)
    return int(f.value) if f is not None and isinstance(f.value, (int, float, str)) and f.value else None


def run(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from spark_tui.core.observe.bench import read_server_snapshot
    from spark_tui.commands.plan import plan_from_args
    from spark_tui.core.runtime import supervisor as sv
    from spark_tui.core.runtime.launch import launch
    from spark_tui.core.observe import tune
    from spark_tui.core.observe.bench import BenchConfig, run_bench
    from spark_tui.core.paths import config_dir
    from spark_tui.errors import ExitCode, UsageError

    goal = args.goal if args.goal in ("latency", "throughput") else None
    if goal is None:
        raise UsageError(f"tune needs --goal latency or --goal throughput (got {args.goal})",
                         "e.g. spark-tui tune --goal latency")
    if args.mtp is not None:
        raise UsageError("--mtp fixes what tune varies", "use --mtp-values to choose the MTP settings to try")
    base = plan_from_args(args)  # validates the device/checkpoint once, before anything is started
    seqs, mbt = _int_flag(base, "--max-num-seqs"), _int_flag(base, "--max-num-batched-tokens")
    concurrency = tune.goal_concurrency(goal, seqs)
    cands = tune.make_candidates(goal, args.mtp_values, seqs, mbt)
    if args.probe:  # MTP off and the largest k first; the MTP speed model then says which other k to measure
        cands = tune.probe_candidates(args.mtp_values) + [c for c in cands if c.mtp == 0 and c != tune.Candidate(0)]
    path = tune.state_path(base.device.id, base.checkpoint.id, goal)
    st = tune.load_state(path, base.device.id, base.checkpoint.id, goal, concurrency)
    if args.restart:
        st.results.clear()
    if st.results:
        print(f"resuming: {len(st.results)} candidate(s) already measured ({path})", file=sys.stderr)
    deadline = None if args.budget is None else time.monotonic() + args.budget * 60

    def measure(c: tune.Candidate) -> tune.CandidateResult:
        sets = list(args.set_flags or ()) + c.set_flags()
        ns = argparse.Namespace(**{**vars(args), "mtp": c.mtp, "set_flags": sets})
        plan = plan_from_args(ns)
        print(f"\n== {c.label()}: starting vLLM", file=sys.stderr, flush=True)
        sup = sv.supervisor_for_plan(plan)
        try:  # the launch sequence of `spark-tui launch`: preflight, start, ready, checked against the plan
            up = launch(plan, sup, startup_timeout_s=args.startup_timeout, checks=not args.no_preflight)
            ready = up.ready
            print(f"   ready in {ready.seconds:.0f} s; benchmarking at concurrency {concurrency}", file=sys.stderr,
                  flush=True)
            for line in up.verification.lines():
                print(f"   {line}", file=sys.stderr, flush=True)
            cfg = BenchConfig(url=ready.url, concurrency=(concurrency,), prompt_tokens=args.prompt_tokens,
                              output_tokens=args.output_tokens, requests=args.requests, duration_s=None)
            res = asyncio.run(run_bench(cfg, lambda cl: read_server_snapshot(cl, cfg.url)))
            lv = res.levels[0]
            ok = lv.errors == 0 and lv.output_tokens > 0
            return tune.CandidateResult(
                candidate=c, ok=ok, score=tune.score(goal, lv.output_tok_s, lv.per_user_tok_s) if ok else None,
                output_tok_s=lv.output_tok_s, per_user_tok_s=lv.per_user_tok_s, ttft_p50_s=lv.ttft_s.p50,
                itl_p50_s=lv.itl_s.p50, acceptance_rate=lv.acceptance_rate,
                mean_acceptance_length=lv.mean_acceptance_length, concurrency=concurrency,
                error=None if ok else (lv.first_errors[0] if lv.first_errors else "no tokens generated"),
                finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
        except Exception as e:  # a candidate that fails to start or serve is a result, not the end of the tune
            if isinstance(e, KeyboardInterrupt):
                raise
            return tune.CandidateResult(candidate=c, ok=False, score=None, concurrency=concurrency,
                                        error=str(e).splitlines()[0][:300],
                                        finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        finally:
            sup.stop()  # never leave a server this tune started

    def report(r: tune.CandidateResult) -> None:
        if r.ok:
            acc = "" if r.acceptance_rate is None else f", acceptance {r.acceptance_rate:.1%}"
            print(f"   {r.candidate.label()}: {r.score:.1f} tok/s ({goal}){acc}", file=sys.stderr, flush=True)
        else:
            print(f"   {r.candidate.label()}: failed: {r.error}", file=sys.stderr, flush=True)

    def run_some(candidates) -> None:
        tune.run_tune(st, candidates, measure, lambda s: tune.save_state(path, s), report,
                      should_stop=(lambda: time.monotonic() > deadline) if deadline else None)

    decision = None
    try:
        run_some(cands)
        if args.probe:
            from spark_tui.core.catalog import evidence

            fit, _ = evidence.mtp_fit_for(base.device.id, base.device.sm, base.checkpoint.id)
            decision = tune.probe_decision(st.results, args.mtp_values, concurrency, fit,
                                           evidence.MTP_MODEL_TRUST_PCT)
            print(f"\nprobe: {decision.reason}", file=sys.stderr, flush=True)
            run_some(decision.more)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {len(st.results)} result(s) kept in {path}; run the same command to resume",
              file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    best = tune.choose(st.results)
    warns = tune.warnings_for(st.results)
    saved = None
    if best is not None and not args.no_save:
        saved = config_dir() / "tuned" / f"{path.stem}.toml"
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(tune.winner_override_toml(base.device.id, base.checkpoint.id, goal, best))
    if args.json:
        print(json.dumps({**st.to_dict(), "best": None if best is None else best.candidate.key,
                          "probe": None if decision is None else {"acceptance": decision.acceptance, "k": decision.k,
                                                                  "reason": decision.reason},
                          "warnings": warns, "override_file": None if saved is None else str(saved),
                          "state_file": str(path)}, indent=2))
    else:
        print(f"{'candidate':40s} {'tok/s':>8} {'per user':>9} {'accept':>7}")
        for r in st.results:
            mark = "*" if best is not None and r is best else " "
            sc = "failed" if not r.ok else f"{r.output_tok_s:8.1f}"
            pu = "" if r.per_user_tok_s is None else f"{r.per_user_tok_s:9.1f}"
            acc = "" if r.acceptance_rate is None else f"{r.acceptance_rate:7.1%}"
            print(f"{mark}{r.candidate.label():39s} {sc:>8} {pu:>9} {acc:>7}")
        for w in warns:
            print(f"warning: {w}")
        if best is not None:
            print(f"best for {goal}: {best.candidate.label()}" + (f" (saved as {saved})" if saved else ""))
    if best is None:
        print("spark-tui: error: no candidate ran successfully", file=sys.stderr)
        return int(ExitCode.VLLM)
    return int(ExitCode.OK)
