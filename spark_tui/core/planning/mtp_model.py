"""A speed model for MTP speculative decoding: output tok/s as a function of draft tokens k, acceptance p and
concurrency c, fitted from measured decode steps.

One engine step verifies k drafted tokens per running request (plus the drafter's k passes), whatever is then
accepted, so the step time T(k, c) does not depend on acceptance; what a step yields per request is the expected
accepted length with a per-token acceptance p (each draft position accepted only if all before it were):

    E[L](k, p) = 1 + p + p^2 + ... + p^k = (1 - p^(k+1)) / (1 - p)      (E[L](0, p) = 1)
    tok/s(k, p, c) = c * E[L](k, p) / T(k, c)

T(k, c) is measured: a run at acceptance ~0 gives T = c / tok/s directly (E[L] = 1), a run at acceptance ~1 gives
T = c (1 + k) / tok/s. The fit is T(k, c) = T(0, c) * (1 + a_c k): one slope per concurrency, least squares through
the measured k > 0 points. `check()` reports each measurement's error against the fitted model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence


def expected_length(k: int, p: float) -> float:
    """Tokens a request gains per step: 1 (the bonus/verified token) + expected accepted drafts."""
    if k <= 0:
        return 1.0
    p = min(max(p, 0.0), 1.0)
    if p >= 1.0:
        return float(k + 1)
    return (1.0 - p ** (k + 1)) / (1.0 - p)


def acceptance_from_length(k: int, mean_length: float) -> float:
    """Invert expected_length for p (bisection): the per-token acceptance that gives this mean accepted length."""
    if k <= 0:
        return 0.0
    target = min(max(mean_length, 1.0), k + 1.0)
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if expected_length(k, mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class Sample:
    """One measured decode run: k draft tokens (0 = MTP off), acceptance p measured over the run (accepted /
    drafted tokens), c concurrent requests, output tok/s (all requests together)."""

    k: int
    p: float
    c: int
    tok_s: float
    label: str = ""

    @property
    def step_s(self) -> float:
        """T(k, c): seconds per engine step implied by this run."""
        return self.c * expected_length(self.k, self.p) / self.tok_s


@dataclass(frozen=True)
class Fit:
    t0: dict[int, float]  # T(0, c), seconds
    slope: dict[int, float]  # a_c: relative step-time cost per draft token
    samples: tuple[Sample, ...] = field(default=(), compare=False)

    def step_s(self, k: int, c: int) -> float:
        cs = sorted(self.t0)
        if c in self.t0:
            return self.t0[c] * (1 + self.slope[c] * k)
        # between two measured concurrencies: interpolate linearly in c; outside: the nearest one
        lo = max((x for x in cs if x < c), default=cs[0])
        hi = min((x for x in cs if x > c), default=cs[-1])
        if lo == hi:
            return self.t0[lo] * (1 + self.slope[lo] * k)
        w = (c - lo) / (hi - lo)
        a = self.t0[lo] * (1 + self.slope[lo] * k)
        b = self.t0[hi] * (1 + self.slope[hi] * k)
        return a + w * (b - a)

    def tok_s(self, k: int, p: float, c: int) -> float:
        return c * expected_length(k, p) / self.step_s(k, c)

    def speedup(self, k: int, p: float, c: int) -> float:
        """tok/s with MTP k over tok/s without, at acceptance p and concurrency c."""
        return self.tok_s(k, p, c) / self.tok_s(0, p, c)

    def best_k(self, p: float, cs: Sequence[int], ks: Iterable[int] = range(0, 5), margin: float = 1.0) -> int:
        """The k with the highest worst-case speedup over the concurrencies `cs`; 0 unless it beats MTP off by
        `margin` (e.g. 1.05 = at least 5 % faster) at every one of them."""
        best, best_s = 0, margin
        for k in ks:
            if k == 0:
                continue
            s = min(self.speedup(k, p, c) for c in cs)
            if s > best_s:
                best, best_s = k, s
        return best

    def check(self) -> list[dict]:
        """Each sample's measured vs modelled tok/s and the error in percent."""
        out = []
        for s in self.samples:
            pred = self.tok_s(s.k, s.p, s.c)
            out.append({"k": s.k, "p": round(s.p, 4), "c": s.c, "measured_tok_s": round(s.tok_s, 2),
                        "predicted_tok_s": round(pred, 2), "error_pct": round(100 * (pred - s.tok_s) / s.tok_s, 2),
                        "label": s.label})
        return out

    def max_error_pct(self) -> float:
        return max((abs(r["error_pct"]) for r in self.check()), default=0.0)


def fit(samples: Sequence[Sample]) -> Fit:
    """Fit T(k, c) = T0_c (1 + a_c k) from runs at any acceptance (each gives T directly, see Sample.step_s).
    T0_c is the mean step time of the k = 0 runs at c; a_c the least-squares slope through (k, T/T0_c - 1)."""
    by_c: dict[int, list[Sample]] = {}
    for s in samples:
        if s.tok_s <= 0 or s.c <= 0:
            raise ValueError(f"not a measurement: {s}")
        by_c.setdefault(s.c, []).append(s)
    t0: dict[int, float] = {}
    slope: dict[int, float] = {}
    for c, ss in by_c.items():
        base = [s.step_s for s in ss if s.k == 0]
        if not base:
            raise ValueError(f"no MTP-off run at concurrency {c}: the model needs T(0, c)")
        t0[c] = sum(base) / len(base)
        pts = [(s.k, s.step_s / t0[c] - 1.0) for s in ss if s.k > 0]
        den = sum(k * k for k, _ in pts)
        slope[c] = (sum(k * y for k, y in pts) / den) if den else 0.0
    return Fit(t0, slope, tuple(samples))
