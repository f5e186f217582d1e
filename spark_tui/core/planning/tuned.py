"""Settings measured by `spark-tui tune` on this machine, read back by the planner.

`spark-tui tune` writes one TOML file per device + checkpoint + goal under `<config dir>/tuned/` (see
spark_tui.core.observe.tune.winner_override_toml). Like every profile number, each value carries its source — here
"measured on this machine (spark-tui tune, goal …, date): N tok/s at concurrency C" — and a file whose
numbers lack a source is rejected with its path named.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from spark_tui.errors import ProfileError


@dataclass(frozen=True)
class Tuned:
    device: str
    checkpoint: str
    goal: str
    mtp: int
    mtp_source: str
    max_num_seqs: int | None = None
    max_num_seqs_source: str = ""
    max_num_batched_tokens: int | None = None
    max_num_batched_tokens_source: str = ""
    path: str = ""


def tuned_dir() -> Path:
    from spark_tui.core.paths import config_dir

    return config_dir() / "tuned"


def _read(p: Path) -> Tuned:
    try:
        d = tomllib.loads(p.read_text())
        src = d.get("sources", {})
        for key in ("mtp", "max_num_seqs", "max_num_batched_tokens"):
            if key in d and not src.get(key):
                raise ProfileError(f"{p}: '{key}' has no source", "delete the file and run `spark-tui tune` again")
        return Tuned(
            device=str(d["device"]), checkpoint=str(d["checkpoint"]), goal=str(d["goal"]), mtp=int(d["mtp"]),
            mtp_source=str(src["mtp"]), max_num_seqs=d.get("max_num_seqs"),
            max_num_seqs_source=str(src.get("max_num_seqs", "")), max_num_batched_tokens=d.get("max_num_batched_tokens"),
            max_num_batched_tokens_source=str(src.get("max_num_batched_tokens", "")), path=str(p),
        )
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as e:
        raise ProfileError(f"{p}: not a valid tune result ({type(e).__name__}: {e})",
                           "delete the file and run `spark-tui tune` again") from None


def load_tuned(device: str, checkpoint: str, goal: str, directory: Path | None = None) -> Tuned | None:
    """The tune result for this device + checkpoint + goal; a balanced plan takes the latency result (both
    serve few users at a time)."""
    d = directory or tuned_dir()
    if not d.is_dir():
        return None
    found = {}
    for p in sorted(d.glob("*.toml")):
        t = _read(p)
        if t.device == device and t.checkpoint == checkpoint:
            found[t.goal] = t
    return found.get(goal) or (found.get("latency") if goal == "balanced" else None)
