"""Measured evidence the planner may act on: published benchmarks and spark-tui's own GPU runs.

A plan deviates from vLLM's defaults for speed only where a measurement says it pays (planner issue #10). The
measurements come from three places, each row with its source:
- `profiles/published.toml`: third-party figures; two rows of the same device, checkpoint and concurrency that
  differ only in MTP give MTP's measured effect there;
- `profiles/measured.toml`: spark-tui's own GPU runs (bench/results/), per flag (`[[effect]]`: output tok/s with the
  flag over vLLM's baseline, same prompts, same server otherwise) and MTP decode steps (`[[mtp_step]]`, the MTP
  speed model's input, spark_tui.core.planning.mtp_model);
- `spark-tui tune` on this machine (spark_tui.core.planning.tuned), which the planner reads itself.
Effects apply to the device they were measured on and to devices of the same SM (an H200 figure stands for sm_90).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

from spark_tui.errors import ProfileError

# The concurrencies a goal is judged at: a deviation is `measured` only if it gains at every one of them.
GOAL_CONCURRENCY: dict[str, tuple[int, ...]] = {"latency": (1,), "balanced": (1, 16), "throughput": (16, 64),
                                                "context": (1,)}


@dataclass(frozen=True)
class Effect:
    device: str  # device profile id it was measured on
    sm: int | None
    checkpoint: str  # checkpoint profile id (a synthetic checkpoint names the layout it copies)
    flag: str
    value: str | None
    concurrency: int
    ratio: float  # output tok/s with the flag / without
    ttft_ratio: float | None
    vllm: str
    source: str
    conditions: str = ""

    def describe(self) -> str:
        t = f", TTFT p50 x{self.ttft_ratio:.2f}" if self.ttft_ratio is not None else ""
        return (f"x{self.ratio:.2f} output tok/s at concurrency {self.concurrency}{t} on {self.device} "
                f"({self.checkpoint}, vLLM {self.vllm}{'; ' + self.conditions if self.conditions else ''})")


@dataclass(frozen=True)
class MtpStep:
    device: str
    sm: int | None
    checkpoint: str
    k: int
    p: float
    concurrency: int
    tok_s: float
    vllm: str
    source: str
    temperature: float | None = None


@dataclass(frozen=True)
class Measured:
    effects: tuple[Effect, ...] = ()
    mtp_steps: tuple[MtpStep, ...] = ()


def _need(row: dict[str, Any], key: str, where: str) -> Any:
    if key not in row or row[key] in (None, ""):
        raise ProfileError(f"{where}: missing '{key}'", "every measured row needs device, checkpoint, vllm and source")
    return row[key]


def parse_measured(text: str, name: str = "measured.toml") -> Measured:
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{name}: not valid TOML ({e})", "fix the file") from None
    effects, steps = [], []
    for i, r in enumerate(d.get("effect", [])):
        w = f"{name} [[effect]] #{i + 1}"
        effects.append(Effect(
            device=str(_need(r, "device", w)), sm=r.get("sm"), checkpoint=str(_need(r, "checkpoint", w)),
            flag=str(_need(r, "flag", w)), value=None if r.get("value") in (None, "") else str(r["value"]),
            concurrency=int(_need(r, "concurrency", w)), ratio=float(_need(r, "ratio", w)),
            ttft_ratio=None if r.get("ttft_ratio") is None else float(r["ttft_ratio"]), vllm=str(_need(r, "vllm", w)),
            source=str(_need(r, "source", w)), conditions=str(r.get("conditions", ""))))
    for i, r in enumerate(d.get("mtp_step", [])):
        w = f"{name} [[mtp_step]] #{i + 1}"
        steps.append(MtpStep(
            device=str(_need(r, "device", w)), sm=r.get("sm"), checkpoint=str(_need(r, "checkpoint", w)),
            k=int(_need(r, "k", w)), p=float(_need(r, "p", w)), concurrency=int(_need(r, "concurrency", w)),
            tok_s=float(_need(r, "tok_s", w)), vllm=str(_need(r, "vllm", w)), source=str(_need(r, "source", w)),
            temperature=None if r.get("temperature") is None else float(r["temperature"])))
    return Measured(tuple(effects), tuple(steps))


@lru_cache(maxsize=1)
def shipped_measured() -> Measured:
    from spark_tui.core.catalog.profiles import shipped_dir

    p = shipped_dir() / "measured.toml"
    if not p.is_file():
        return Measured()
    return parse_measured(p.read_text(), "profiles/measured.toml")


def _same_device(row_device: str, row_sm: int | None, device: str, sm: int | None) -> bool:
    return row_device == device or (row_sm is not None and sm is not None and row_sm == sm)


def effects_for(device: str, sm: int | None, checkpoint: str, flag: str, value: str | None,
                measured: Measured | None = None) -> list[Effect]:
    m = measured or shipped_measured()
    return [e for e in m.effects if _same_device(e.device, e.sm, device, sm) and e.checkpoint == checkpoint
            and e.flag == flag and (value is None or e.value == value)]


# A flag's measured effect counts as a gain only above this ratio: on the H200 (bench/results/h200-2026-12-02.md) two
# servers that differed only in flags not expected to change decode speed (--served-model-name, parsers,
# --language-model-only) differed by up to 1.08x at concurrency 1 in three runs, so smaller ratios are not a signal.
EFFECT_MARGIN = 1.10


def gains_at(effects: Sequence[Effect], concurrencies: Sequence[int], margin: float = EFFECT_MARGIN) -> bool | None:
    """True if the effects show a gain above `margin` at every concurrency, False if any shows none, None if one is
    missing."""
    by_c = {e.concurrency: e for e in effects}
    if any(c not in by_c for c in concurrencies):
        return None
    return all(by_c[c].ratio > margin for c in concurrencies)


# ------------------------------------------------------------------------------------------------------ MTP
@dataclass(frozen=True)
class MtpChoice:
    k: int
    measured: bool  # True: backed by a measurement (published pair, spark-tui run, or the fitted MTP model)
    reason: str
    source: str
    effect: str = ""


def published_mtp_pairs(device: str, checkpoint: str | None) -> list[tuple[int, int, float, str]]:
    """(concurrency, k, ratio tok/s with MTP k / without, source) from published figures of this device."""
    from spark_tui.core.catalog.published import load_figures

    figs = [f for f in load_figures() if f.device == device and (checkpoint is None or f.checkpoint == checkpoint)]
    out = []
    for f in figs:
        if f.mtp <= 0:
            continue
        base = [g for g in figs if g.mtp == 0 and g.checkpoint == f.checkpoint and g.concurrency == f.concurrency
                and g.metric == f.metric]
        for b in base:
            out.append((f.concurrency, f.mtp, f.tok_s / b.tok_s, f"{f.source}; {b.source}"))
    return out


def published_acceptance(checkpoint: str | None) -> tuple[float, str] | None:
    """The lowest published per-token MTP acceptance for this model (k = 1 rows: acceptance = accepted/drafted),
    preferring rows of this checkpoint: the conservative p for the MTP model."""
    from spark_tui.core.catalog.published import load_figures

    rows = [(f.acceptance, f.checkpoint, f.source) for f in load_figures() if f.acceptance is not None and f.mtp == 1]
    own = [r for r in rows if r[1] == checkpoint]
    pick = own or rows
    if not pick:
        return None
    p, ck, src = min(pick)
    return p, f"{src} ({ck}, k=1)"


# The MTP speed model decides only where it reproduces the runs it was fitted on within this (in-sample error, %).
MTP_MODEL_TRUST_PCT = 10.0


def mtp_fit_for(device: str, sm: int | None, checkpoint: str, measured: Measured | None = None):  # -> Fit | None
    from spark_tui.core.planning import mtp_model

    m = measured or shipped_measured()
    # this checkpoint's runs only: another checkpoint's MoE kernels (FP8 Triton vs 4-bit Marlin) step differently
    rows = [s for s in m.mtp_steps if _same_device(s.device, s.sm, device, sm) and s.checkpoint == checkpoint]
    if not rows:
        return None, ""
    try:
        f = mtp_model.fit([mtp_model.Sample(s.k, s.p, s.concurrency, s.tok_s, s.source, s.temperature)
                            for s in rows])
    except ValueError:
        return None, ""
    srcs = sorted({s.source for s in rows})
    return f, "; ".join(srcs) + f" ({rows[0].device}, {rows[0].checkpoint}, vLLM {rows[0].vllm})"


def choose_mtp(device: str, sm: int | None, checkpoint: str, goal: str, measured: Measured | None = None) -> MtpChoice:
    """MTP on only where a measurement shows a gain at every concurrency of the goal; else off."""
    cs = GOAL_CONCURRENCY.get(goal, (1,))
    # 1. a published same-setup comparison on this device
    pairs = published_mtp_pairs(device, checkpoint) or published_mtp_pairs(device, None)
    if pairs:
        at = {c: (k, r, s) for c, k, r, s in pairs}
        known = [c for c in cs if c in at]
        if known:
            losing = [c for c in known if at[c][1] <= 1.0]
            if losing:
                c = losing[0]
                k, r, s = at[c]
                return MtpChoice(0, True, f"MTP off: published MTP k={k} on {device} was x{r:.2f} the tok/s of MTP "
                                          f"off at concurrency {c}", s, f"x{r:.2f} at concurrency {c}")
            if len(known) == len(cs):
                k = max(at[c][0] for c in cs)
                eff = ", ".join(f"x{at[c][1]:.2f} at concurrency {c}" for c in cs)
                return MtpChoice(k, True, f"MTP k={k}: published measurement on {device} shows a gain ({eff})",
                                 at[cs[0]][2], eff)
    # 2. the MTP speed model fitted on spark-tui's runs of this device class, at the published acceptance
    f, fsrc = mtp_fit_for(device, sm, checkpoint, measured)
    acc = published_acceptance(checkpoint)
    if f is not None and acc is not None:
        p, asrc = acc
        err = f.worst_error_pct(cs)
        if err is None or err > MTP_MODEL_TRUST_PCT:
            miss = ("has no MTP run at every concurrency of the goal" if err is None else
                    f"misses the measured runs by up to {err:.0f} % at the goal's concurrencies")
            return MtpChoice(0, True, f"MTP off: the MTP speed model fitted on this device class's runs {miss} "
                                      f"(trusted within {MTP_MODEL_TRUST_PCT:.0f} %), so it cannot show a gain at "
                                      f"the published acceptance {p:.0%}", f"{fsrc}; {asrc}")
        k = f.best_k(p, cs, margin=1.05)
        eff = ", ".join(f"x{f.speedup(max(k, 1), p, c):.2f} at concurrency {c}" for c in cs)
        if k:
            return MtpChoice(k, True, f"MTP k={k}: the MTP speed model fitted on measured decode steps predicts "
                                      f"{eff} at the published acceptance {p:.0%}", f"{fsrc}; {asrc}", eff)
        each = "; ".join(f"k={kk}: " + ", ".join(f"x{f.speedup(kk, p, c):.2f} at concurrency {c}" for c in cs)
                         for kk in (f.measured_ks() or [1]))
        return MtpChoice(0, True, f"MTP off: the MTP speed model fitted on measured decode steps predicts no k "
                                  f"gains 5 % at every concurrency of the goal at acceptance {p:.0%} ({each})",
                         f"{fsrc}; {asrc}", each)
    return MtpChoice(0, False, "MTP off: no published or spark-tui measurement of MTP on this device class, and "
                               "vLLM's default is off", "vLLM v0.33.0 vllm/engine/arg_utils.py (speculative_config "
                               "default None)")
