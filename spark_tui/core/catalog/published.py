"""Published throughput figures (profiles/published.toml), shown beside `spark-tui bench` results.

Each row: device and checkpoint profile ids, concurrency, MTP draft tokens (0 = off), tok/s, metric
("per_user" or "aggregate"), the conditions it was measured under, and its source. A row missing a field or
its source fails at load, naming the file and row.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

from spark_tui.errors import ProfileError

METRICS = ("per_user", "aggregate")


@dataclass(frozen=True)
class Figure:
    device: str
    checkpoint: str
    concurrency: int
    mtp: int
    tok_s: float
    metric: str
    conditions: str
    source: str
    acceptance: float | None = None  # MTP draft acceptance (accepted / drafted tokens) reported with the figure

    def label(self) -> str:
        what = "per user" if self.metric == "per_user" else "aggregate"
        return (f"{self.tok_s:g} tok/s {what} at concurrency {self.concurrency}, "
                f"{'MTP off' if self.mtp == 0 else f'MTP k={self.mtp}'} ({self.checkpoint}; {self.conditions}) "
                f"[{self.source}]")


def load_figures(text: str | None = None, name: str = "published.toml") -> list[Figure]:
    if text is None:
        from spark_tui.core.catalog.profiles import shipped_dir

        p = shipped_dir() / "published.toml"
        name = str(p)
        text = p.read_text()
    try:
        rows = tomllib.loads(text).get("figure", [])
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{name}: not valid TOML ({e})", "fix the file") from None
    out = []
    for i, r in enumerate(rows):
        try:
            f = Figure(device=str(r["device"]), checkpoint=str(r["checkpoint"]), concurrency=int(r["concurrency"]),
                       mtp=int(r["mtp"]), tok_s=float(r["tok_s"]), metric=str(r["metric"]),
                       conditions=str(r.get("conditions", "")), source=str(r["source"]),
                       acceptance=None if r.get("acceptance") is None else float(r["acceptance"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ProfileError(f"{name}: figure #{i + 1} is missing or has a bad field ({e})",
                               "each [[figure]] needs device, checkpoint, concurrency, mtp, tok_s, metric, source") from None
        if not f.source.strip():
            raise ProfileError(f"{name}: figure #{i + 1} has no source", "every published number names its source")
        if f.acceptance is not None and not 0 <= f.acceptance <= 1:
            raise ProfileError(f"{name}: figure #{i + 1}: acceptance {f.acceptance}", "a fraction from 0 to 1")
        if f.metric not in METRICS:
            raise ProfileError(f"{name}: figure #{i + 1}: metric {f.metric!r}", f"one of {', '.join(METRICS)}")
        out.append(f)
    return out


def figures_for(device: str, checkpoint: str | None = None, figures: list[Figure] | None = None) -> list[Figure]:
    """Figures for this device (and checkpoint, when known), in concurrency order."""
    fs = load_figures() if figures is None else figures
    return sorted((f for f in fs if f.device == device and (checkpoint is None or f.checkpoint == checkpoint)),
                  key=lambda f: (f.concurrency, f.mtp))


def plot_reference(figs: list[Figure]) -> dict[int, tuple[float, str]]:
    """Aggregate figures by concurrency, for render_plot's reference bars."""
    return {f.concurrency: (f.tok_s, f"published, {'MTP off' if f.mtp == 0 else f'MTP k={f.mtp}'}")
            for f in figs if f.metric == "aggregate"}
