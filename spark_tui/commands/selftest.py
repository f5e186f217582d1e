"""`spark-tui selftest`: the kernels_check self-test (see README "selftest"). Exit codes are the
self-test's: 0 native NVFP4, 1 weight-only fallback, 2 unsupported, 3 no GPU."""

from __future__ import annotations

import argparse


def add_parser(p: argparse.ArgumentParser) -> None:
    from kernels_check.cli import add_arguments

    add_arguments(p)


def run(args: argparse.Namespace) -> int:
    from kernels_check.cli import run as run_check

    return run_check(args)
