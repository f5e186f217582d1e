"""MTP / batching autotune: relaunch with candidate settings, benchmark each, keep the best.

Pure decisions (candidates, scoring, warnings, the resumable state file) live here; the driver
`run_tune` receives the side effects as callables (launch a plan and wait ready, bench a URL, stop), so
the CLI wires in the real supervisor and the tests can drive it against a real vLLM.

State: one JSON file per device + checkpoint + goal under the user data dir. Every finished candidate is
written as soon as it finishes, so an interrupted tune resumes where it stopped and every result is kept.
The winner is saved as a user override (TOML under the user config dir) that the planner shows with the
source "measured on this machine".
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

NEAR_ZERO_ACCEPTANCE = 0.05


@dataclass(frozen=True)
class Candidate:
    """A setting to try. mtp=0 means speculative decoding off."""

    mtp: int
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None

    @property
    def key(self) -> str:
        return f"mtp={self.mtp},seqs={self.max_num_seqs},mbt={self.max_num_batched_tokens}"

    def label(self) -> str:
        parts = ["MTP off" if self.mtp == 0 else f"MTP k={self.mtp}"]
        if self.max_num_seqs is not None:
            parts.append(f"max-num-seqs {self.max_num_seqs}")
        if self.max_num_batched_tokens is not None:
            parts.append(f"max-num-batched-tokens {self.max_num_batched_tokens}")
        return ", ".join(parts)

    def set_flags(self) -> list[str]:
        """The batching settings as planner `--set FLAG=VALUE` overrides (MTP goes through mtp=)."""
        out = []
        if self.max_num_seqs is not None:
            out.append(f"--max-num-seqs={self.max_num_seqs}")
        if self.max_num_batched_tokens is not None:
            out.append(f"--max-num-batched-tokens={self.max_num_batched_tokens}")
        return out


@dataclass(frozen=True)
class CandidateResult:
    candidate: Candidate
    ok: bool
    score: float | None  # the goal's figure: tok/s (higher is better)
    output_tok_s: float | None = None
    per_user_tok_s: float | None = None
    ttft_p50_s: float | None = None
    itl_p50_s: float | None = None
    acceptance_rate: float | None = None
    mean_acceptance_length: float | None = None
    concurrency: int = 1
    error: str | None = None
    finished_at: str | None = None


def make_candidates(goal: str, mtp_values: Sequence[int] = (0, 1, 2, 3, 4), base_max_num_seqs: int | None = None,
                    base_batched_tokens: int | None = None) -> list[Candidate]:
    """MTP off and k=1..4; for throughput also max-num-seqs and max-num-batched-tokens steps (with MTP off,
    and with the best MTP setting decided later — the batching steps use MTP off to isolate their effect)."""
    from spark_tui.errors import UsageError

    if goal not in ("latency", "throughput"):
        raise UsageError(f"unknown tune goal {goal!r}", "use --goal latency or --goal throughput")
    cands = [Candidate(mtp=k) for k in mtp_values]
    if goal == "throughput":
        seqs = base_max_num_seqs or 16
        mbt = base_batched_tokens or 8192
        for s in sorted({max(1, seqs // 2), seqs * 2}):
            if s != seqs:
                cands.append(Candidate(mtp=0, max_num_seqs=s))
        for b in sorted({max(256, mbt // 2), mbt * 2}):
            if b != mbt:
                cands.append(Candidate(mtp=0, max_num_batched_tokens=b))
    return cands


# ------------------------------------------------------------------------------------------------ the probe
@dataclass(frozen=True)
class ProbeDecision:
    """What `tune --probe` learned from MTP off and MTP k=K on this machine."""

    acceptance: float | None  # per-token acceptance p of this machine's prompts (from the mean accepted length)
    k: int | None  # the k the MTP speed model predicts best at p (0 = off); None: the model cannot decide here
    reason: str
    more: tuple[Candidate, ...]  # what to measure next: the predicted k, or the rest of the sweep


def probe_candidates(mtp_values: Sequence[int]) -> list[Candidate]:
    """MTP off and the largest k asked for: a run at the largest k measures the acceptance at every position."""
    ks = sorted(set(mtp_values))
    return [Candidate(mtp=0)] + ([Candidate(mtp=ks[-1])] if ks and ks[-1] > 0 else [])


def probe_decision(results: Sequence[CandidateResult], mtp_values: Sequence[int], concurrency: int,
                   fit: Any, trust_pct: float, margin: float = 1.05) -> ProbeDecision:
    """After the probe: p from the MTP run's mean accepted length (E[L] = (1 - p^(k+1)) / (1 - p) inverted), then
    the k that the MTP speed model `fit` (spark_tui.core.planning.mtp_model.Fit, fitted on this device class's
    measured runs; None if there are none) predicts best at p and this concurrency, among the k it was fitted on
    and asked for. Where the model is missing or misses its own runs at this concurrency by more than `trust_pct`,
    it decides nothing and the rest of the sweep is measured instead."""
    from spark_tui.core.planning.mtp_model import acceptance_from_length

    mtp_runs = [r for r in results if r.candidate == Candidate(mtp=r.candidate.mtp)]  # no batching change
    done = {r.candidate.mtp for r in mtp_runs}
    rest = tuple(Candidate(mtp=k) for k in sorted(set(mtp_values)) if k not in done)
    probe = next((r for r in mtp_runs if r.ok and r.candidate.mtp > 0), None)
    if probe is None or probe.mean_acceptance_length is None:
        return ProbeDecision(None, None, "the MTP probe gave no acceptance figure: measuring the rest of the sweep",
                             rest)
    k_probe = probe.candidate.mtp
    p = acceptance_from_length(k_probe, probe.mean_acceptance_length)
    if fit is None:
        return ProbeDecision(p, None, f"acceptance {p:.0%} measured, but no MTP speed model exists for this device "
                                      "class (profiles/measured.toml): measuring the rest of the sweep", rest)
    err = fit.worst_error_pct((concurrency,))
    if err is None or err > trust_pct:
        why = ("has no run at this concurrency" if err is None else f"misses its runs here by up to {err:.0f} %")
        return ProbeDecision(p, None, f"acceptance {p:.0%} measured; the MTP speed model {why} (trusted within "
                                      f"{trust_pct:.0f} %): measuring the rest of the sweep", rest)
    ks = [k for k in sorted(set(mtp_values)) if k > 0 and k in fit.measured_ks()]
    k = fit.best_k(p, (concurrency,), ks=ks, margin=margin)
    pred = ", ".join(f"k={x}: x{fit.speedup(x, p, concurrency):.2f}" for x in ks)
    more = (Candidate(mtp=k),) if k > 0 and k not in done else ()
    return ProbeDecision(p, k, f"acceptance {p:.0%} measured; the MTP speed model predicts {pred} at concurrency "
                               f"{concurrency}: " + (f"k={k}" + (" (measuring it)" if more else "") if k else
                                                     "MTP off (no k gains 5 %)"), more)


def goal_concurrency(goal: str, max_num_seqs: int | None = None) -> int:
    """Latency is judged at one user; throughput at the plan's batch (capped to stay bounded)."""
    if goal == "latency":
        return 1
    return max(2, min(max_num_seqs or 16, 32))


def score(goal: str, output_tok_s: float | None, per_user_tok_s: float | None) -> float | None:
    return per_user_tok_s if goal == "latency" else output_tok_s


def choose(results: Sequence[CandidateResult]) -> CandidateResult | None:
    ok = [r for r in results if r.ok and r.score is not None]
    if not ok:
        return None
    return max(ok, key=lambda r: r.score if r.score is not None else float("-inf"))


def warnings_for(results: Sequence[CandidateResult]) -> list[str]:
    """MTP slower than no MTP; acceptance near zero."""
    out: list[str] = []
    base = next((r for r in results if r.ok and r.candidate == Candidate(mtp=0)), None)
    for r in results:
        if not r.ok or r.candidate.mtp == 0:
            continue
        if base is not None and base.score is not None and r.score is not None and r.score < base.score:
            out.append(
                f"{r.candidate.label()} is slower than MTP off ({r.score:.1f} vs {base.score:.1f} tok/s, "
                f"{(r.score / base.score - 1):+.0%})"
            )
        if r.acceptance_rate is not None and r.acceptance_rate < NEAR_ZERO_ACCEPTANCE:
            out.append(
                f"{r.candidate.label()}: draft acceptance is near zero ({r.acceptance_rate:.1%}); the MTP head is "
                "not predicting this model's tokens"
            )
    return out


@dataclass
class TuneState:
    device: str
    checkpoint: str
    goal: str
    concurrency: int
    results: list[CandidateResult] = field(default_factory=list)

    @property
    def done_keys(self) -> set[str]:
        return {r.candidate.key for r in self.results}

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "checkpoint": self.checkpoint,
            "goal": self.goal,
            "concurrency": self.concurrency,
            "results": [asdict(r) for r in self.results],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TuneState":
        res = []
        for r in d.get("results", []):
            c = Candidate(**r["candidate"])
            res.append(CandidateResult(**{**r, "candidate": c}))
        return cls(d["device"], d["checkpoint"], d["goal"], d["concurrency"], res)


def state_path(device: str, checkpoint: str, goal: str, root: Path | None = None) -> Path:
    from spark_tui.core.paths import data_dir, safe_filename

    h = hashlib.sha1(f"{device}|{checkpoint}|{goal}".encode()).hexdigest()[:10]
    safe = safe_filename(f"{device}__{checkpoint}__{goal}")
    return (root or data_dir() / "tune") / f"{safe[-80:]}-{h}.json"


def load_state(path: Path, device: str, checkpoint: str, goal: str, concurrency: int) -> TuneState:
    if path.exists():
        try:
            st = TuneState.from_dict(json.loads(path.read_text()))
            if (st.device, st.checkpoint, st.goal, st.concurrency) == (device, checkpoint, goal, concurrency):
                return st
        except (ValueError, KeyError, TypeError):
            pass  # unreadable state: start over (the old file is replaced on the first save)
    return TuneState(device, checkpoint, goal, concurrency)


def save_state(path: Path, st: TuneState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(st.to_dict(), indent=2))
    tmp.replace(path)


def run_tune(
    st: TuneState,
    candidates: Sequence[Candidate],
    measure: Callable[[Candidate], CandidateResult],
    save: Callable[[TuneState], None],
    on_result: Callable[[CandidateResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TuneState:
    """Measure every candidate not measured yet (resumable), saving after each one."""
    for c in candidates:
        if should_stop and should_stop():
            break
        if c.key in st.done_keys:
            continue
        r = measure(c)
        st.results.append(r)
        save(st)
        if on_result:
            on_result(r)
    return st


def winner_override_toml(device: str, checkpoint: str, goal: str, best: CandidateResult) -> str:
    """The user override the planner reads: the measured winner with its figures as the source."""
    c = best.candidate
    when = best.finished_at or time.strftime("%Y-%m-%d")
    src = (
        f"measured on this machine (spark-tui tune, goal {goal}, {when}): {best.score:.1f} tok/s at "
        f"concurrency {best.concurrency}"
    )
    lines = [
        "# Written by `spark-tui tune`; delete this file to return to the shipped defaults.",
        f'device = "{device}"',
        f'checkpoint = "{checkpoint}"',
        f'goal = "{goal}"',
        f"mtp = {c.mtp}",
    ]
    if c.max_num_seqs is not None:
        lines.append(f"max_num_seqs = {c.max_num_seqs}")
    if c.max_num_batched_tokens is not None:
        lines.append(f"max_num_batched_tokens = {c.max_num_batched_tokens}")
    lines += ["", "[sources]", f"mtp = {json.dumps(src)}"]
    if c.max_num_seqs is not None:
        lines.append(f"max_num_seqs = {json.dumps(src)}")
    if c.max_num_batched_tokens is not None:
        lines.append(f"max_num_batched_tokens = {json.dumps(src)}")
    return "\n".join(lines) + "\n"
