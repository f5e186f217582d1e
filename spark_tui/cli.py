"""Command line entry point.

Plain `spark-tui` opens the TUI; subcommands are headless. Each subcommand lives in
`spark_tui/commands/<name>.py` with `add_parser(subparsers)` and `run(args) -> int`, imported only when
needed so `--help` and `plan --json` stay fast (no torch, vllm or textual import: see
tests/unit/test_import_hygiene.py and bench/cli_speed.py).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from spark_tui import __version__
from spark_tui.errors import ExitCode, SparkError

# name -> (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "probe": ("spark_tui.commands.probe", "show this machine's GPUs (NVML) and host memory"),
    "devices": ("spark_tui.commands.devices", "list device profiles"),
    "checkpoints": ("spark_tui.commands.checkpoints", "list checkpoint profiles"),
    "plan": ("spark_tui.commands.plan", "plan a tuned `vllm serve` command for a device"),
    "export": ("spark_tui.commands.export", "export the plan as bash, docker, compose, systemd, k8s or ray"),
    "download": ("spark_tui.commands.download", "download a checkpoint (resumable, disk-checked)"),
    "launch": ("spark_tui.commands.launch", "launch vLLM with the plan and follow its startup"),
    "stop": ("spark_tui.commands.stop", "stop a vLLM server spark-tui launched"),
    "diagnose": ("spark_tui.commands.diagnose", "explain a vLLM log: startup phases, failures and fixes"),
    "monitor": ("spark_tui.commands.monitor", "live tok/s, MTP acceptance, KV-cache use from /metrics"),
    "bench": ("spark_tui.commands.bench", "benchmark a served model at several concurrency levels"),
    "tune": ("spark_tui.commands.tune", "try MTP and batching settings, keep the fastest"),
    "ablate": ("spark_tui.commands.ablate", "benchmark vLLM's defaults, each deviation alone and the full plan"),
    "selftest": ("spark_tui.commands.selftest", "hardware-compatibility self-test (runs NVFP4/FP8 kernels)"),
}


def _available() -> dict[str, tuple[str, str]]:
    """Commands whose module exists (importlib.util.find_spec does not import the module)."""
    import importlib.util

    return {n: v for n, v in COMMANDS.items() if importlib.util.find_spec(v[0]) is not None}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spark-tui",
        description="Plan, launch, watch and export a tuned vLLM deployment of Qwen3.6-35B-A3B. "
        "With no command, opens the terminal UI.",
    )
    p.add_argument("--version", action="version", version=f"spark-tui {__version__}")
    p.add_argument("--url", help="TUI: watch an already running vLLM server at this URL")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (mod, help_) in _available().items():
        if only is not None and name != only:
            # register a light placeholder so `spark-tui X --help` lists every command without importing it
            sub.add_parser(name, help=help_, add_help=False)
            continue
        sp = sub.add_parser(name, help=help_, description=help_)
        importlib.import_module(mod).add_parser(sp)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # import only the chosen subcommand's module
    first = next((a for a in argv if not a.startswith("-")), None)
    only = first if first in COMMANDS else None
    if only is None and any(a in ("-h", "--help") for a in argv):
        only = ""  # top-level help: list commands without importing any of them
    parser = build_parser(only)
    try:
        args = parser.parse_args(argv)
    except SystemExit:  # --help, --version, or a usage error (exit 2): argparse wrote to stdout/stderr
        try:
            sys.stdout.flush()
        except OSError as e:
            return _output_failed(e)
        raise
    try:
        if args.command is None:
            from spark_tui.commands import tui

            return tui.run(args)
        rc = int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
        sys.stdout.flush()  # a full disk or a closed pipe shows here, not as a traceback at exit
        return rc
    except SparkError as e:
        print(f"spark-tui: error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"  hint: {e.hint}", file=sys.stderr)
        return int(e.exit_code)
    except KeyboardInterrupt:
        print("spark-tui: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except OSError as e:
        if not isinstance(e, BrokenPipeError) and e.errno not in _OUTPUT_ERRNOS:
            raise
        return _output_failed(e)


def _output_failed(e: OSError) -> int:
    _silence_stdout()  # else Python's exit-time flush fails again and prints a traceback
    if isinstance(e, BrokenPipeError):  # `spark-tui ... | head`: the reader has what it wanted
        return int(ExitCode.OK)
    where = f" {e.filename}" if e.filename else " the output"
    print(f"spark-tui: error: cannot write{where}: {e.strerror or e}", file=sys.stderr)
    print("  hint: free some space, or redirect the output to a writable file", file=sys.stderr)
    return int(ExitCode.FAILURE)


# a full disk (> /dev/full), a quota, a file too large, an I/O error: errors of writing output, not bugs
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}


def _silence_stdout() -> None:
    """Point stdout at /dev/null (and drop what is buffered) so the exit-time flush has nowhere to fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout already closed or not a real file
        pass


if __name__ == "__main__":
    raise SystemExit(main())
