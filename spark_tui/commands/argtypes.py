"""argparse `type=` checks shared by the commands: a bad number is refused by argparse itself (exit 2, with
the option named) before anything is planned, launched or measured."""

from __future__ import annotations

import argparse
import math


def _shown(s: str) -> str:
    return repr("".join(c if c.isprintable() else "?" for c in s)[:40])


def positive_float(unit: str):
    """A type: a positive, finite number of `unit` (not 0, nan, inf or negative: a timeout of nan never ends)."""

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_shown(s)} is not a number of {unit}") from None
        if not (math.isfinite(v) and v > 0):
            raise argparse.ArgumentTypeError(f"{_shown(s)}: give a positive, finite number of {unit}")
        return v

    parse.__name__ = f"positive_{unit}"
    return parse


positive_seconds = positive_float("seconds")
positive_minutes = positive_float("minutes")


def positive_int(s: str) -> int:
    """An integer >= 1."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{_shown(s)} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{_shown(s)}: give an integer >= 1")
    return v
