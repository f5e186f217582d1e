"""vLLM's human-readable sizes (`--kv-cache-memory-bytes 16G`, `--max-model-len 32k`)."""

from __future__ import annotations

import re

from spark_tui.errors import UsageError

GiB = 2**30


def parse_size(s: str) -> int:
    """16M = 16 MiB (upper case: binary), 16m = 16e6 (lower case: decimal), plain digits are bytes/tokens.
    The rule of vLLM's own parser (vllm/utils/argparse_utils.py `human_readable_int`)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*", str(s))
    if not m:
        raise UsageError(f"not a size: {s!r}", "write bytes, or a number with K/M/G/T (binary) or k/m/g/t (decimal)")
    num, unit = float(m.group(1)), m.group(2)
    if not unit:
        return int(num)
    power = "kmgt".index(unit.lower()) + 1
    return int(num * ((1024 if unit.isupper() else 1000) ** power))


def format_size(n: int) -> str:
    """Bytes as vLLM accepts them, exact: '84G' when a whole number of GiB, else the byte count."""
    return f"{n // GiB}G" if n % GiB == 0 and n > 0 else str(n)
