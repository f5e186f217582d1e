"""`spark-tui plan`: a tuned `vllm serve` command, every flag with its reason and source.

Other commands (export, launch, tune, the TUI) reuse `add_plan_arguments(parser)` and `plan_from_args(args)`.
Exit codes: 0 ok; 1 `--check` found flags the installed vLLM rejects; 2 bad input; 4 bad profile;
5 no plan (no GPU here and no --device, unsupported GPU, does not fit).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import TYPE_CHECKING

from spark_tui.core.planning.plan import MemoryEstimate, Plan

if TYPE_CHECKING:
    from spark_tui.core.hardware.probe import ProbeResult


def vllm_version_arg(s: str) -> str:
    """argparse type of --vllm-version: a release number (0.32.0, v0.19, 0.11.0rc1, 0.32.0+cpu) or `nightly`."""
    import re

    v = s.strip()
    if v.lower() == "nightly" or re.fullmatch(r"v?\d+\.\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[A-Za-z0-9.]+)?", v):
        return v
    shown = "".join(c if c.isprintable() else "?" for c in s)[:40]
    raise argparse.ArgumentTypeError(f"{shown!r} is not a vLLM version (e.g. 0.32.0, or nightly)")


def model_dir_arg(s: str) -> str:
    """argparse type of --model-path: an existing, readable directory (a checkpoint folder)."""
    import os

    shown = "".join(c if c.isprintable() else "?" for c in s)[:200]
    if not os.path.isdir(s):
        raise argparse.ArgumentTypeError(f"{shown!r} is not a directory (give a checkpoint folder with config.json)")
    if not os.access(s, os.R_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{shown!r} is not readable")
    return s


def add_plan_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("plan")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--device", metavar="ID", help="device profile id (see `spark-tui devices`); default: probe this machine")
    src.add_argument("--probe-file", metavar="F", help="plan for the machine recorded by `spark-tui probe --json > F`")
    g.add_argument("--gpu-index", type=int, metavar="N",
                   help="which probed GPU to run on: pinned with CUDA_VISIBLE_DEVICES (default 0; pinned when the probe "
                        "has several GPUs)")
    g.add_argument("--parallel", choices=("tp", "dp", "replicas"),
                   help="several identical GPUs: tp = one server, --tensor-parallel-size; dp = one endpoint, "
                        "--data-parallel-size; replicas = one server per GPU (the plan shows the arithmetic of each)")
    g.add_argument("--gpus", type=int, metavar="N",
                   help="how many identical GPUs to plan for (default: every probed GPU like the chosen one; 1 with "
                        "--device)")
    g.add_argument("--nodes", type=int, metavar="N",
                   help="machines: with a DGX Spark, 2 says whether a second Spark helps; the ray export runs on them "
                        "(default 1)")
    g.add_argument("--checkpoint", metavar="ID", help="checkpoint profile id or HF repo id (see `spark-tui checkpoints`)")
    g.add_argument("--model-path", metavar="DIR", type=model_dir_arg, help="serve a local checkpoint dir (its config.json drives the memory model)")
    g.add_argument("--context", type=int, metavar="N", help="--max-model-len (default: the longest that fits, up to 262144)")
    g.add_argument("--concurrency", type=int, metavar="N", help="--max-num-seqs (default by goal)")
    g.add_argument("--goal", choices=("latency", "throughput", "context", "balanced"), default="balanced",
                   help="what to optimise (default balanced)")
    g.add_argument("--mtp", type=int, metavar="K",
                   help="MTP draft tokens, 0 = off (default: on only where a measurement shows it pays here)")
    g.add_argument("--include-unmeasured", action="store_true",
                   help="also add the deviations no measurement supports on this device (marked unmeasured)")
    g.add_argument("--set", dest="set_flags", action="append", default=[], metavar="FLAG=VALUE",
                   help="override a flag: FLAG=VALUE sets, FLAG a switch, FLAG= removes; UPPER_CASE names are env vars "
                        "(repeatable)")
    g.add_argument("--recipe", metavar="ID", help="reproduce a published recipe of the device verbatim (see `spark-tui devices`)")
    g.add_argument("--served-model-name", metavar="NAME", help="model name clients use (default qwen3.6-35b-a3b)")
    g.add_argument("--host", default="127.0.0.1", metavar="H", help="bind address (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=8000, metavar="P", help="port (default 8000)")
    g.add_argument("--vllm-version", metavar="V", type=vllm_version_arg, help="write flags for this vLLM release (default: the installed vLLM, else 0.33.0)")


def add_parser(p: argparse.ArgumentParser) -> None:
    add_plan_arguments(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON (an API: see README 'Plan JSON')")
    p.add_argument("--explain", action="store_true",
                   help="show vLLM's baseline and every deviation with its evidence class, effect and source")
    p.add_argument("--check", action="store_true",
                   help="validate the argv with the installed vLLM's own argument parser (if vLLM is importable)")


def _probe_here() -> ProbeResult:
    try:
        from spark_tui.core.hardware.probe import take_probe
    except ImportError:
        from spark_tui.errors import PlanError

        raise PlanError("this spark-tui cannot probe the GPU (no take_probe)", "pass --device ID or --probe-file FILE") from None
    return take_probe()


def plan_from_args(args: argparse.Namespace) -> Plan:
    from spark_tui.core.planning.planner import make_plan
    from spark_tui.core.hardware.probe import ProbeResult
    from spark_tui.core.catalog.vllm_compat import installed_release  # the flags follow the vLLM that will run them

    version = getattr(args, "vllm_version", None) or installed_release()

    probe = None
    if getattr(args, "probe_file", None):
        probe = ProbeResult.load(args.probe_file)
    elif not getattr(args, "device", None):
        probe = _probe_here()
    return make_plan(
        device=getattr(args, "device", None), probe=probe, checkpoint=getattr(args, "checkpoint", None),
        model_path=getattr(args, "model_path", None), context=getattr(args, "context", None),
        concurrency=getattr(args, "concurrency", None), goal=getattr(args, "goal", "balanced"),
        mtp=getattr(args, "mtp", None), set_flags=getattr(args, "set_flags", None) or (),
        host=getattr(args, "host", "127.0.0.1"), port=getattr(args, "port", 8000),
        vllm_version=version, served_model_name=getattr(args, "served_model_name", None),
        recipe=getattr(args, "recipe", None), gpu_index=getattr(args, "gpu_index", None),
        include_unmeasured=bool(getattr(args, "include_unmeasured", False)), parallel=getattr(args, "parallel", None),
        gpus=getattr(args, "gpus", None), nodes=getattr(args, "nodes", None) or 1)


def shell_command(plan: Plan) -> str:
    """The copy-pasteable command: env assignments, then the shell-quoted argv, one flag per line."""
    parts = [f"{e.name}={shlex.quote(e.value)}" for e in plan.env]
    head = " ".join(parts + [shlex.quote(a) for a in plan.argv()[:3]])
    lines = [head] + ["  " + " ".join(shlex.quote(x) for x in f.argv()) for f in plan.flags]
    return " \\\n".join(lines)


def _gib(b: int) -> str:
    return f"{b / 2**30:.1f} GiB"


def _memory_lines(m: MemoryEstimate) -> list[str]:
    out = ["memory (" + ("KV pool exact" if m.exact_kv_pool else "estimate") + "):"]
    for label, b in m.bar():
        out.append(f"  {label:<15} {_gib(b):>10}")
    out.append(f"  predicted vLLM log: GPU KV cache size: {m.kv_cache_tokens:,} tokens, Maximum concurrency for "
               f"{m.max_model_len:,} tokens per request: {m.max_concurrency:.2f}x")
    out.append(f"  attention block {m.block_size_tokens} tokens; {m.num_blocks:,} blocks of "
               f"{m.bytes_per_block / 2**20:.1f} MiB; KV {m.kv_bytes_per_token:,} B/token; DeltaNet state "
               f"{m.state_bytes_per_seq / 2**20:.0f} MiB/request ({m.mamba_slots_per_seq} slots)")
    out += [f"  note: {n}" for n in m.notes]
    return out


def _topology_lines(plan: Plan) -> list[str]:
    """`plan --explain`: the unified-memory arithmetic, the memory guard, TP vs DP vs replicas, two Sparks."""
    out: list[str] = []
    s = plan.unified
    if s is not None:
        out += ["", "unified memory sizing (the GPU shares the host's RAM):"] + [f"  {x}" for x in s.lines]
        out += [f"  source: {x}" for x in s.sources]
    if plan.memory_guard:
        out += [""] + list(plan.memory_guard)
    if plan.parallel is not None:
        chosen = f"chosen: {plan.parallel_choice}" if plan.parallel_choice else "not chosen: --parallel tp|dp|replicas"
        out += ["", f"several GPUs ({chosen}):"] + [f"  {x}" for x in plan.parallel.lines()]
        out += [f"  source: {x}" for x in plan.parallel.sources]
    if plan.second_spark is not None:
        out += [""] + plan.second_spark.lines()
    return out


def render(plan: Plan, explain: bool = False) -> str:
    from spark_tui.core.planning.plan import comparison

    out = [f"# {plan.device.name} ({plan.device.id}{', sm_' + str(plan.device.sm) if plan.device.sm else ''}; "
           f"{plan.match or plan.device.source}) -> {plan.checkpoint.repo_id}",
           f"# checkpoint: {plan.checkpoint_reason} [{plan.checkpoint_source}]" if plan.checkpoint_reason else "",
           shell_command(plan), ""]
    base = plan.baseline
    if base is not None:
        out.append("baseline (what `" + " ".join(shlex.quote(a) for a in base.argv) + "` does by itself here): "
                   + ("starts" if base.starts else "does NOT start"))
        out += [f"  - {p}" for p in base.problems]
        if base.moe_backend:
            out.append(f"  MoE backend vLLM will pick: {base.moe_backend} ({base.moe_backend_reason})")
        if explain:
            for d in base.defaults:
                mark = "" if d["verified"] else " (read from an older release)"
                out.append(f"  {d['key']:<24} {str(d['value']):<20} [{d['source']}]{mark}")
            if base.memory is not None:
                out += ["  " + x for x in _memory_lines(base.memory)]
        out.append("")
    rows = comparison(plan)
    if rows:
        out.append(f"deviations from the baseline ({len(rows)}):" if base is not None else "flags:")
        w0 = max(len(r["flag"]) for r in rows)
        for r in rows:
            v = r["plan"] if len(r["plan"]) <= 40 else r["plan"][:37] + "..."
            if explain:
                out.append(f"  {r['flag']:<{w0}}  {r['baseline']} -> {r['plan']}  [{r['evidence']}]")
                out.append(f"      why: {r['reason']}")
                if r["effect"]:
                    out.append(f"      measured effect: {r['effect']}")
                out.append(f"      source: {r['source']}")
            else:
                out.append(f"  {r['flag']:<{w0}}  {v:<12}  {r['evidence']:<10}  {r['reason']} [{r['source']}]")
    for e in plan.env:
        out.append(f"  env {e.name}={e.value}  {e.reason} [{e.source}]")
    if plan.omitted:
        out += ["", "left out, unmeasured on this device (add them with --include-unmeasured):"]
        for f in plan.omitted:
            out.append(f"  {' '.join(f.argv())}: {f.reason}" + (f" [{f.source}]" if explain else ""))
    if plan.notes:
        out += [""] + [f"note: {n}" for n in plan.notes]
    m = plan.memory
    if m is not None:
        out += [""] + _memory_lines(m)
    if explain:
        out += _topology_lines(plan)
    if plan.warnings:
        out += ["", "warnings:"] + [f"  - {w}" for w in plan.warnings]
    if plan.differences:
        out += ["", "differences from the published recipe:"] + [f"  - {d}" for d in plan.differences]
    return "\n".join(x for x in out if x is not None)


def run(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)
    check = None
    if getattr(args, "check", False):
        from spark_tui.core.catalog.vllm_compat import check_argv

        check = check_argv(plan.argv())
    if args.json:
        d = plan.to_dict()
        if check is not None:
            d["check"] = check
        json.dump(d, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render(plan, explain=getattr(args, "explain", False)))
        if check is not None:
            print("\ncheck: " + check["message"])
            for prob in check.get("problems", []):
                print(f"  - {prob}")
    if check is not None and check["status"] == "invalid":
        return 1
    return 0
