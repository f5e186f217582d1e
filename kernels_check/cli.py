"""`python -m kernels_check [--json | --markdown] [--list] [--quick] [--no-vllm] [--out FILE] [--from REPORT]`.

Exit codes (also `spark-tui selftest`): 0 native NVFP4, 1 NVFP4 only via a weight-only fallback,
2 unsupported, 3 no torch / no CUDA GPU (nothing ran). `--list` exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the report as JSON (the documented API)")
    fmt.add_argument("--markdown", action="store_true", help="print a Markdown report to paste into an issue")
    p.add_argument("--list", action="store_true", help="list the checks and whether each will run here; run nothing")
    p.add_argument("--quick", action="store_true", help="smaller GEMMs and fewer repeats (2048^3 timing)")
    p.add_argument("--no-vllm", action="store_true", help="skip the checks that need vLLM even if it is installed")
    p.add_argument("--only", action="append", metavar="CHECK", help="run only this check (repeatable)")
    p.add_argument("--from", dest="from_file", metavar="REPORT.json",
                   help="render a saved --json report (text, --markdown or --json) instead of running; exits with its code")
    p.add_argument("--out", metavar="FILE", help="also write the report to FILE (format from --json/--markdown)")
    p.add_argument("--progress", action="store_true", help="print each check's status to stderr as it finishes")


def run(args: argparse.Namespace) -> int:
    from kernels_check.checks import CHECKS, Options
    from kernels_check.render import render_json, render_markdown, render_text
    from kernels_check.runner import plan_selftest, run_selftest

    opts = Options.quick() if args.quick else Options()
    opts.use_vllm = not args.no_vllm
    known = {c.name for c in CHECKS}
    bad = [n for n in (args.only or []) if n not in known]
    if bad:
        print(f"kernels_check: error: unknown check {', '.join(bad)}; known: {', '.join(sorted(known))}", file=sys.stderr)
        return 2
    if args.out and not args.list and not _out_writable(args.out):
        return 2  # said why; checked before a run that may take minutes
    if args.from_file:
        from kernels_check.model import Report

        try:
            report = Report.load(args.from_file)
        except KeyError as e:
            print(f"kernels_check: error: cannot read report {args.from_file}: no {e} field "
                  "(pass a file written by --json)", file=sys.stderr)
            return 2
        except (OSError, ValueError, TypeError, AttributeError) as e:
            print(f"kernels_check: error: cannot read report {args.from_file}: {e} (pass a file written by --json)",
                  file=sys.stderr)
            return 2
        text = render_json(report) if args.json else render_markdown(report) if args.markdown else render_text(report)
        sys.stdout.write(text)
        if args.out and not _write_out(args.out, text):
            return 2
        return report.exit_code
    if args.list:
        planned = plan_selftest(opts)
        if args.json:
            print(json.dumps([{"name": p.name, "title": p.title, "will_run": p.will_run, "reason": p.reason}
                              for p in planned], indent=2))
        else:
            w = max([17] + [len(p.name) for p in planned])
            for p in planned:
                print(f"{'run ' if p.will_run else 'skip'}  {p.name:<{w}} {p.title}" + ("" if p.will_run else f"  ({p.reason})"))
        return 0

    def progress(r):
        print(f"kernels_check: {r.name}: {r.status.value} ({r.seconds:.1f}s)", file=sys.stderr, flush=True)

    report = run_selftest(opts, on_result=progress if args.progress else None, only=args.only)
    text = render_json(report) if args.json else render_markdown(report) if args.markdown else render_text(report)
    sys.stdout.write(text)
    if args.out and not _write_out(args.out, text):
        return 2
    return report.exit_code


def _out_writable(out: str) -> bool:
    p = Path(out)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        print(f"kernels_check: error: cannot write --out {out} (a directory, or not writable there)", file=sys.stderr)
        return False
    return True


def _write_out(out: str, text: str) -> bool:
    """Write --out, but only to a regular file or a new path: opening a FIFO to write blocks until a reader comes, and
    a device or a link is not a report file. (kernels_check runs without spark_tui too, so it does not use its writer.)"""
    import stat

    try:
        st = os.lstat(out)
    except FileNotFoundError:
        st = None
    except (OSError, ValueError) as e:
        print(f"kernels_check: error: cannot write --out {out}: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
        return False
    if st is not None and not stat.S_ISREG(st.st_mode):
        print(f"kernels_check: error: cannot write --out {out}: not a regular file (a directory, link, device or FIFO)",
              file=sys.stderr)
        return False
    try:
        Path(out).write_text(text)
    except OSError as e:
        print(f"kernels_check: error: cannot write --out {out}: {e.strerror or e}", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kernels_check",
                                description="Hardware-compatibility self-test: runs BF16 / FP8 / NVFP4 kernels and "
                                "vLLM's MoE and KV-cache ops, checks them against float64 references.",
                                epilog="exit codes: 0 native NVFP4, 1 weight-only fallback, 2 unsupported, 3 no GPU")
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("kernels_check: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
