"""Plain `spark-tui`: open the Textual app (the only command module that imports textual)."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from spark_tui.ui.app import SparkApp

    SparkApp(url=getattr(args, "url", None)).run()
    return 0
