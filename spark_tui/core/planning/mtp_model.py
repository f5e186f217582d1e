"""A speed model for MTP speculative decoding: output tok/s as a function of draft tokens k, acceptance p and
concurrency c, fitted from measured decode runs.

What a step yields per request is the expected accepted length with a per-token acceptance p (each draft position is
accepted only if all before it were):

    E[L](k, p) = 1 + p + p^2 + ... + p^k = (1 - p^(k+1)) / (1 - p)      (E[L](0, p) = 1)
    tok/s(k, p, c) = c * E[L](k, p) / T(k, p, c)

The step time T is what the H200 runs (bench/results/h200-2026-12-02.md, vLLM 0.26.0) showed it to be: not a
constant per k (an earlier form of this model assumed T(k, c) = T0_c (1 + a_c k) and missed those runs by up to
111 %), but

    T(k, p, c) = T0_c + F_c + d_c k + v_c (E[L] - 1)          (T(0, p, c) = T0_c)

T0_c: the step without MTP, measured at each sampling temperature (the baseline's own runs; on a random-weight model
sampling at T=1 yields random text, which is slower to detokenize than greedy output, so T0 depends on it); F_c: the
fixed cost of running a drafter at all; d_c: the cost per drafted token (the drafter's passes, the verifier's extra
positions); v_c: the cost per accepted token (the drafter's catch-up over the accepted tokens). F, d, v are fitted per
concurrency by least squares over the MTP runs; with runs at one k only, d cannot be told from F and is left at 0
(likewise v with runs at one acceptance). `check()` gives each run's error; `holdout_check()` refits without each k
in turn and predicts that k's runs, an out-of-sample check.
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
    drafted tokens), c concurrent requests, output tok/s (all requests together), the sampling temperature."""

    k: int
    p: float
    c: int
    tok_s: float
    label: str = ""
    temperature: float | None = None

    @property
    def step_s(self) -> float:
        """Seconds per engine step implied by this run: c * E[L](k, p) / tok/s."""
        return self.c * expected_length(self.k, self.p) / self.tok_s


Coef = tuple[float, float, float]  # (F, d, v), seconds


def _solve(rows: list[list[float]], y: list[float]) -> list[float] | None:
    """Least squares through the normal equations (Gauss-Jordan with pivoting); None when singular."""
    n = len(rows[0])
    a = [[sum(r[i] * r[j] for r in rows) for j in range(n)] + [sum(r[i] * v for r, v in zip(rows, y))]
         for i in range(n)]
    scale = max((abs(x) for row in a for x in row[:n]), default=0.0) or 1.0
    for col in range(n):
        piv = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[piv][col]) < 1e-9 * scale:
            return None
        a[col], a[piv] = a[piv], a[col]
        for r in range(n):
            if r != col:
                m = a[r][col] / a[col][col]
                a[r] = [x - m * z for x, z in zip(a[r], a[col])]
    return [a[i][n] / a[i][i] for i in range(n)]


def _fit_coef(pts: Sequence[tuple[int, float, float]]) -> Coef:
    """(F, d, v) from (k, E[L] - 1, step time above T0) points: all three where the runs tell them apart, else the
    fewest dropped (d first: runs at one k; then v: runs at one acceptance)."""
    if not pts:
        return (0.0, 0.0, 0.0)
    y = [e for _, _, e in pts]
    for cols in ((0, 1, 2), (0, 2), (0, 1), (0,)):
        rows = [[(1.0, float(k), x)[i] for i in cols] for k, x, _ in pts]
        if len(rows) < len(cols):
            continue
        sol = _solve(rows, y)
        if sol is not None:
            out = [0.0, 0.0, 0.0]
            for i, v in zip(cols, sol):
                out[i] = v
            return (out[0], out[1], out[2])
    return (sum(y) / len(y), 0.0, 0.0)


@dataclass(frozen=True)
class Fit:
    t0: dict[int, float]  # T0_c: the step without MTP, mean over the temperatures measured
    coef: dict[int, Coef]  # (F_c, d_c, v_c)
    samples: tuple[Sample, ...] = field(default=(), compare=False)
    t0_at: dict[tuple[int, float], float] = field(default_factory=dict, compare=False)  # T0 per (c, temperature)

    def _at(self, c: int, k: int, p: float, temperature: float | None) -> float:
        t0 = self.t0_at.get((c, temperature), self.t0[c]) if temperature is not None else self.t0[c]
        if k <= 0:
            return t0
        f, d, v = self.coef[c]
        return t0 + f + d * k + v * (expected_length(k, p) - 1.0)

    def step_s(self, k: int, c: int, p: float = 1.0, temperature: float | None = None) -> float:
        """T(k, p, c); between two measured concurrencies interpolated linearly in c, outside them the nearest."""
        cs = sorted(self.t0)
        if c in self.t0:
            return self._at(c, k, p, temperature)
        lo = max((x for x in cs if x < c), default=cs[0])
        hi = min((x for x in cs if x > c), default=cs[-1])
        if lo == hi:
            return self._at(lo, k, p, temperature)
        w = (c - lo) / (hi - lo)
        a, b = self._at(lo, k, p, temperature), self._at(hi, k, p, temperature)
        return a + w * (b - a)

    def tok_s(self, k: int, p: float, c: int, temperature: float | None = None) -> float:
        return c * expected_length(k, p) / self.step_s(k, c, p, temperature)

    def speedup(self, k: int, p: float, c: int) -> float:
        """tok/s with MTP k over tok/s without, at acceptance p and concurrency c."""
        return self.tok_s(k, p, c) / self.tok_s(0, p, c)

    def measured_ks(self) -> list[int]:
        return sorted({s.k for s in self.samples if s.k > 0})

    def worst_error_pct(self, cs: Sequence[int]) -> float | None:
        """The largest in-sample error over the runs at these concurrencies (None: no MTP run at one of them)."""
        rows = self.check()
        if any(not any(r["c"] == c and r["k"] > 0 for r in rows) for c in cs):
            return None
        return max(abs(r["error_pct"]) for r in rows if r["c"] in cs)

    def best_k(self, p: float, cs: Sequence[int], ks: Iterable[int] | None = None, margin: float = 1.0) -> int:
        """The k with the highest worst-case speedup over the concurrencies `cs`; 0 unless it beats MTP off by
        `margin` (e.g. 1.05 = at least 5 % faster) at every one of them. Only k that were measured (with samples)
        are candidates: the model is not extrapolated beyond its runs."""
        if ks is None:
            ks = self.measured_ks() if self.samples else range(0, 5)
        best, best_s = 0, margin
        for k in ks:
            if k == 0:
                continue
            s = min(self.speedup(k, p, c) for c in cs)
            if s > best_s:
                best, best_s = k, s
        return best

    @staticmethod
    def _row(s: Sample, pred: float) -> dict:
        return {"k": s.k, "p": round(s.p, 4), "c": s.c, "temperature": s.temperature,
                "measured_tok_s": round(s.tok_s, 2), "predicted_tok_s": round(pred, 2),
                "error_pct": round(100 * (pred - s.tok_s) / s.tok_s, 2), "label": s.label}

    def check(self) -> list[dict]:
        """Each sample's measured vs modelled tok/s and the error in percent (in-sample)."""
        return [self._row(s, self.tok_s(s.k, s.p, s.c, s.temperature)) for s in self.samples]

    def max_error_pct(self) -> float:
        return max((abs(r["error_pct"]) for r in self.check()), default=0.0)

    def holdout_check(self) -> list[dict]:
        """Out of sample: for each k > 0, refit without that k's runs and predict them (needs runs at >= 2 other
        values of k at that concurrency to say anything; fewer give no row)."""
        out = []
        ks = sorted({s.k for s in self.samples if s.k > 0})
        for k in ks:
            rest = [s for s in self.samples if s.k != k]
            for c in sorted({s.c for s in self.samples if s.k == k}):
                if len({s.k for s in rest if s.c == c and s.k > 0}) < 2:
                    continue
                f = fit(rest)
                for s in self.samples:
                    if s.k == k and s.c == c:
                        out.append(self._row(s, f.tok_s(s.k, s.p, s.c, s.temperature)))
        return out


def fit(samples: Sequence[Sample]) -> Fit:
    """Fit T(k, p, c) = T0_c + F_c + d_c k + v_c (E[L] - 1) (module docstring) from runs at any acceptance.
    T0 is the mean step time of the k = 0 runs at c (and at c and each temperature); F, d, v least squares over the
    MTP runs' step time above the T0 of their own temperature."""
    by_c: dict[int, list[Sample]] = {}
    for s in samples:
        if s.tok_s <= 0 or s.c <= 0:
            raise ValueError(f"not a measurement: {s}")
        by_c.setdefault(s.c, []).append(s)
    t0: dict[int, float] = {}
    t0_at: dict[tuple[int, float], float] = {}
    coef: dict[int, Coef] = {}
    for c, ss in by_c.items():
        base = [s for s in ss if s.k == 0]
        if not base:
            raise ValueError(f"no MTP-off run at concurrency {c}: the model needs T(0, c)")
        t0[c] = sum(s.step_s for s in base) / len(base)
        for t in {s.temperature for s in base if s.temperature is not None}:
            xs = [s.step_s for s in base if s.temperature == t]
            t0_at[(c, t)] = sum(xs) / len(xs)

        def own_t0(s: Sample) -> float:
            return t0_at.get((c, s.temperature), t0[c]) if s.temperature is not None else t0[c]

        coef[c] = _fit_coef([(s.k, expected_length(s.k, s.p) - 1.0, s.step_s - own_t0(s)) for s in ss if s.k > 0])
    return Fit(t0, coef, tuple(samples), t0_at)
