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
from typing import Any

from spark_tui.core.plan import Plan


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
    g.add_argument("--gpu-index", type=int, default=0, metavar="N", help="which probed GPU to plan for (default 0)")
    g.add_argument("--checkpoint", metavar="ID", help="checkpoint profile id or HF repo id (see `spark-tui checkpoints`)")
    g.add_argument("--model-path", metavar="DIR", type=model_dir_arg, help="serve a local checkpoint dir (its config.json drives the memory model)")
    g.add_argument("--context", type=int, metavar="N", help="--max-model-len (default: the longest that fits, up to 262144)")
    g.add_argument("--concurrency", type=int, metavar="N", help="--max-num-seqs (default by goal)")
    g.add_argument("--goal", choices=("latency", "throughput", "context", "balanced"), default="balanced",
                   help="what to optimise (default balanced)")
    g.add_argument("--mtp", type=int, metavar="K", help="MTP draft tokens, 0 = off (default 3; throughput 1)")
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
    p.add_argument("--check", action="store_true",
                   help="validate the argv with the installed vLLM's own argument parser (if vLLM is importable)")


def _probe_here() -> Any:
    try:
        from spark_tui.core.probe import take_probe  # type: ignore[attr-defined]
    except ImportError:
        from spark_tui.errors import PlanError

        raise PlanError("this spark-tui cannot probe the GPU (no take_probe)", "pass --device ID or --probe-file FILE") from None
    return take_probe()


def plan_from_args(args: argparse.Namespace) -> Plan:
    from spark_tui.core.flagtypes import validate_set_items
    from spark_tui.core.planner import make_plan
    from spark_tui.core.probe import ProbeResult
    from spark_tui.core.vllm_compat import installed_release  # the flags follow the vLLM that will run them

    version = getattr(args, "vllm_version", None) or installed_release()
    validate_set_items(getattr(args, "set_flags", None), version)  # secrets refused, values type-checked

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
        recipe=getattr(args, "recipe", None), gpu_index=getattr(args, "gpu_index", 0) or 0)


def shell_command(plan: Plan) -> str:
    """The copy-pasteable command: env assignments, then the shell-quoted argv, one flag per line."""
    parts = [f"{e.name}={shlex.quote(e.value)}" for e in plan.env]
    head = " ".join(parts + [shlex.quote(a) for a in plan.argv()[:3]])
    lines = [head] + ["  " + " ".join(shlex.quote(x) for x in f.argv()) for f in plan.flags]
    return " \\\n".join(lines)


def _gib(b: int) -> str:
    return f"{b / 2**30:.1f} GiB"


def render(plan: Plan) -> str:
    out = [f"# {plan.device.name} ({plan.device.id}{', sm_' + str(plan.device.sm) if plan.device.sm else ''}; "
           f"{plan.match or plan.device.source}) -> {plan.checkpoint.repo_id}",
           f"# checkpoint: {plan.checkpoint_reason} [{plan.checkpoint_source}]" if plan.checkpoint_reason else "",
           shell_command(plan), ""]
    rows = [(f.flag, "" if f.value is None else f.value, f.reason, f.source) for f in plan.flags]
    rows += [(f"env {e.name}", e.value, e.reason, e.source) for e in plan.env]
    w0 = max(len(r[0]) for r in rows)
    w1 = min(max(len(r[1]) for r in rows), 40)
    out.append(f"{'flag':<{w0}}  {'value':<{w1}}  reason [source]")
    for f, v, r, s in rows:
        v = v if len(v) <= 40 else v[:37] + "..."
        out.append(f"{f:<{w0}}  {v:<{w1}}  {r} [{s}]")
    m = plan.memory
    if m is not None:
        out += ["", "memory (" + ("KV pool exact" if m.exact_kv_pool else "estimate") + "):"]
        for label, b in m.bar():
            out.append(f"  {label:<15} {_gib(b):>10}")
        out.append(f"  predicted vLLM log: GPU KV cache size: {m.kv_cache_tokens:,} tokens, Maximum concurrency for "
                   f"{m.max_model_len:,} tokens per request: {m.max_concurrency:.2f}x")
        out.append(f"  attention block {m.block_size_tokens} tokens; {m.num_blocks:,} blocks of {m.bytes_per_block / 2**20:.1f} MiB; "
                   f"KV {m.kv_bytes_per_token:,} B/token; DeltaNet state {m.state_bytes_per_seq / 2**20:.0f} MiB/request "
                   f"({m.mamba_slots_per_seq} slots)")
        for n in m.notes:
            out.append(f"  note: {n}")
    if plan.warnings:
        out += ["", "warnings:"] + [f"  - {w}" for w in plan.warnings]
    if plan.differences:
        out += ["", "differences from the published recipe:"] + [f"  - {d}" for d in plan.differences]
    return "\n".join(x for x in out if x is not None)


def run(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)
    check = None
    if getattr(args, "check", False):
        from spark_tui.core.vllm_compat import check_argv

        check = check_argv(plan.argv())
    if args.json:
        d = plan.to_dict()
        if check is not None:
            d["check"] = check
        json.dump(d, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render(plan))
        if check is not None:
            print("\ncheck: " + check["message"])
            for prob in check.get("problems", []):
                print(f"  - {prob}")
    if check is not None and check["status"] == "invalid":
        return 1
    return 0
