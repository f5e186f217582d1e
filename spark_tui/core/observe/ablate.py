"""Ablation: vLLM's baseline, each deviation of a plan alone, and the full plan, benchmarked with the same prompts.

`variants(plan, ...)` is pure: it turns a Plan into the servers to start. What every variant shares (so the
comparison is fair and every variant can start): the model, the plan's context and the memory flags a server needs
to start on this device (unified memory), the bind address and a port per variant, and the harness flags the caller
adds to all (e.g. a KV pool size so several servers share one GPU). Then:
- `baseline`: `vllm serve` with only those;
- `required`: the plan's required deviations together (names, parsers, text only: none of them is a speed setting);
- `mtp-k` variants for `mtp_values` (the MTP speed model's input);
- one variant per measured or unmeasured deviation, alone on top of the baseline;
- `plan`: every flag of the plan.
`run_ablation(...)` starts each variant through the same Supervisor as `launch`, waits until it is ready (startup
time kept apart), benchmarks it at every concurrency and temperature, stops it, and saves each result as soon as it
exists, so an interrupted ablation resumes. It never leaves a server behind: every started server is stopped in a
`finally`, also on Ctrl-C.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from spark_tui.core.planning.flags import Flag, Flags

if TYPE_CHECKING:
    from spark_tui.core.observe.bench import BenchResult
    from spark_tui.core.planning.mtp_model import Sample
    from spark_tui.core.planning.plan import Plan

SHARED_FLAGS = ("--max-model-len", "--gpu-memory-utilization", "--kv-cache-memory-bytes", "--enforce-eager")
HARNESS_HOST = "127.0.0.1"


@dataclass(frozen=True)
class Variant:
    key: str  # "baseline", "required", "--kv-cache-dtype=fp8", "mtp-2", "plan"
    label: str
    flags: tuple[Flag, ...]  # after the model, without --host/--port (added per server)
    adds: tuple[str, ...]  # the deviations this variant adds to the baseline (flag names)
    mtp_k: int = 0

    def argv_flags(self) -> list[str]:
        return Flags(self.flags).argv()


def _shared(plan: "Plan", harness: Sequence[Flag]) -> Flags:
    shared = Flags(f for f in plan.flags if f.name in SHARED_FLAGS)
    # on CPU, MTP needs prefix caching off: a start requirement of the MTP variants, shared so baseline compares
    if plan.device.id == "cpu-test" and "--no-enable-prefix-caching" in plan.flags:
        shared.put(plan.flags.get("--no-enable-prefix-caching"))  # type: ignore[arg-type]
    for h in harness:
        shared.put(h)
    return shared


def variants(plan: "Plan", mtp_plans: dict[int, "Plan"] | None = None, harness: Sequence[Flag] = (),
             skip: Iterable[str] = ()) -> list[Variant]:
    """The servers an ablation of `plan` starts, in order: baseline, required, mtp-k (in the order given), each
    deviation, the full plan. A skipped deviation is left out of the full plan too (it cannot run there)."""
    skip = set(skip)
    shared = _shared(plan, harness)
    base = list(shared)
    out = [Variant("baseline", "vLLM's defaults (" + (" ".join(shared.argv()) or "no flags") + ")", tuple(base), ())]
    own = [f for f in plan.flags if f.name not in shared and f.name not in ("--host", "--port")]
    req = [f for f in own if f.evidence == "required"]
    if req:
        out.append(Variant("required", "+ the required deviations (" + ", ".join(f.name for f in req) + ")",
                           tuple(base + req), tuple(f.name for f in req)))
    for k, p in (mtp_plans or {}).items():
        extra = [f for f in p.flags if f.name not in shared and f.name not in ("--host", "--port")
                 and (plan.flags.get(f.name) is None or plan.flags.get(f.name) != f)
                 and f.name in ("--speculative-config", "--no-enable-prefix-caching")]
        if not extra:
            continue
        out.append(Variant(f"mtp-{k}", f"+ MTP k={k}", tuple(base + extra), tuple(f.name for f in extra), k))
    for f in own:
        if f.evidence == "required" or f.name in skip:
            continue
        if f.name == "--speculative-config" and mtp_plans:
            continue  # the mtp-k variants below measure MTP alone, each as its own plan writes it
        key = f"{f.name}={f.text}" if f.text is not None else f.name
        k = 0
        if f.name == "--speculative-config" and isinstance(f.value, dict):
            k = int(f.value.get("num_speculative_tokens", 1))
        out.append(Variant(key, f"+ {' '.join(f.argv())} ({f.evidence})", tuple(base + [f]), (f.name,), k))
    full = [f for f in own if f.evidence == "required" or f.name not in skip]
    if len(full) > len(req):
        left = [f.name for f in own if f not in full]
        label = "the full plan" + (f" (without {', '.join(left)}: skipped)" if left else "")
        out.append(Variant("plan", label, tuple(base + full), tuple(f.name for f in full), plan.mtp_k))
    elif req:  # the plan is the baseline plus its required deviations: that variant is the plan
        out[1] = Variant("required", "the plan: + its required deviations (" + ", ".join(f.name for f in req) + ")",
                         out[1].flags, out[1].adds)
    return [v for v in out if v.key not in skip]


# ------------------------------------------------------------------------------------------------ results
@dataclass
class LevelFigures:
    concurrency: int
    temperature: float
    output_tok_s: float | None
    per_user_tok_s: float | None
    ttft_p50_s: float | None
    itl_p50_s: float | None
    errors: int
    acceptance_rate: float | None = None
    mean_acceptance_length: float | None = None


@dataclass
class VariantResult:
    key: str
    label: str
    argv: list[str]
    ok: bool
    startup_s: float | None = None
    levels: list[LevelFigures] = field(default_factory=list)
    kv_cache_tokens_logged: int | None = None
    kv_cache_tokens_predicted: int | None = None
    moe_backend_logged: str | None = None
    error: str | None = None
    log_path: str | None = None
    finished_at: str | None = None
    mtp_k: int = 0

    def level(self, c: int, temperature: float) -> LevelFigures | None:
        return next((x for x in self.levels if x.concurrency == c and x.temperature == temperature), None)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VariantResult":
        d = dict(d)
        d["levels"] = [LevelFigures(**x) for x in d.get("levels", [])]
        return cls(**d)


@dataclass
class AblationState:
    plan_argv: list[str]
    config: dict[str, Any]
    results: dict[str, VariantResult] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": 1, "plan_argv": self.plan_argv, "config": self.config,
                "results": {k: asdict(v) for k, v in self.results.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AblationState":
        return cls(list(d["plan_argv"]), dict(d.get("config", {})),
                   {k: VariantResult.from_dict(v) for k, v in d.get("results", {}).items()})


def state_path(plan_argv: Sequence[str], config: dict[str, Any], root: Path | None = None) -> Path:
    from spark_tui.core.paths import data_dir

    h = hashlib.sha256(json.dumps([list(plan_argv), config], sort_keys=True).encode()).hexdigest()[:16]
    return (root or data_dir() / "ablate") / f"{h}.json"


def load_state(path: Path, plan_argv: list[str], config: dict[str, Any]) -> AblationState:
    from spark_tui.errors import UsageError

    if not path.is_file():
        return AblationState(plan_argv, config)
    try:
        st = AblationState.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path}: not an ablation state file ({type(e).__name__})",
                         "delete it, or pass --restart to measure again") from None
    return st


def save_state(path: Path, st: AblationState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(st.to_dict(), indent=2))
    tmp.replace(path)


# ------------------------------------------------------------------------------------------------ analysis
def ratios(st: AblationState, variants_order: Sequence[str]) -> list[dict[str, Any]]:
    """One row per variant and level: tok/s, TTFT, ratio to the baseline's same level and temperature."""
    base = st.results.get("baseline")
    rows = []
    for key in variants_order:
        r = st.results.get(key)
        if r is None:
            continue
        for lv in r.levels:
            b = base.level(lv.concurrency, lv.temperature) if base else None
            rows.append({
                "variant": key, "label": r.label, "concurrency": lv.concurrency, "temperature": lv.temperature,
                "output_tok_s": lv.output_tok_s, "ttft_p50_s": lv.ttft_p50_s, "itl_p50_s": lv.itl_p50_s,
                "acceptance_rate": lv.acceptance_rate, "errors": lv.errors, "startup_s": r.startup_s,
                "ratio": (lv.output_tok_s / b.output_tok_s) if b and b.output_tok_s and lv.output_tok_s else None,
                "ttft_ratio": (lv.ttft_p50_s / b.ttft_p50_s) if b and b.ttft_p50_s and lv.ttft_p50_s else None,
            })
    return rows


def mtp_samples(st: AblationState) -> list[Sample]:
    """MTP speed-model samples: the baseline (k = 0) and every MTP variant, at each concurrency and temperature,
    with the acceptance the server counted over that level."""
    from spark_tui.core.planning.mtp_model import Sample

    out = []
    for key, r in st.results.items():
        if not r.ok or (key != "baseline" and (r.mtp_k == 0 or not key.startswith(("mtp-", "--speculative-config")))):
            continue
        for lv in r.levels:
            if not lv.output_tok_s or lv.errors:
                continue
            p = 0.0 if r.mtp_k == 0 else (lv.acceptance_rate if lv.acceptance_rate is not None else None)
            if p is None:
                continue
            out.append(Sample(r.mtp_k, p, lv.concurrency, lv.output_tok_s, f"{key} T={lv.temperature:g}",
                              lv.temperature))
    return out


def fmt(v: Any, spec: str, scale: float = 1.0) -> str:
    """A figure of the table, or n/a where it was not measured."""
    return "n/a" if v is None else format(v * scale, spec)


def kv_cache_checks(st: AblationState, digits: int | None = 2) -> list[dict[str, Any]]:
    """Each variant's KV cache as vLLM logged it against the plan's prediction: error in percent (rounded to
    `digits`; None where one of them is missing)."""
    out = []
    for key, r in st.results.items():
        lg, pr = r.kv_cache_tokens_logged, r.kv_cache_tokens_predicted
        err = 100 * (lg - pr) / pr if lg and pr else None
        out.append({"variant": key, "logged": lg, "predicted": pr,
                    "error_pct": round(err, digits) if err is not None and digits is not None else err})
    return out


def render_table(st: AblationState, order: Sequence[str]) -> str:
    rows = ratios(st, order)
    if not rows:
        return "no results yet"
    out = [f"{'variant':<34} {'c':>3} {'T':>3} {'tok/s':>9} {'x base':>7} {'TTFT p50':>9} {'x base':>7} "
           f"{'accept':>7} {'start s':>8}"]
    f = fmt
    for r in rows:
        out.append(f"{r['variant'][:34]:<34} {r['concurrency']:>3} {r['temperature']:>3g} {f(r['output_tok_s'], '.1f'):>9} "
                   f"{f(r['ratio'], '.2f'):>7} {f(r['ttft_p50_s'], '.0f', 1000) + ' ms':>9} {f(r['ttft_ratio'], '.2f'):>7} "
                   f"{f(r['acceptance_rate'], '.0%'):>7} {f(r['startup_s'], '.0f'):>8}")
    for key in order:
        res = st.results.get(key)
        if res is not None and not res.ok:
            out.append(f"{key}: FAILED: {res.error}")
    return "\n".join(out)


@dataclass(frozen=True)
class SavedAblation:
    path: Path
    modified: float  # seconds since the epoch
    state: AblationState

    @property
    def model(self) -> str:
        """The served model (the plan's `vllm serve` argument)."""
        argv = self.state.plan_argv
        return argv[2] if len(argv) > 2 and argv[1] == "serve" else (argv[-1] if argv else "?")


def saved_ablations(root: Path | None = None) -> tuple[list[SavedAblation], list[str]]:
    """Every ablation state file under `<data dir>/ablate` (or `root`), newest first, and one line for each file there
    that is not one (named, not fatal: a half-written or foreign file must not hide the others)."""
    from spark_tui.core.paths import data_dir

    d = root or data_dir() / "ablate"
    found: list[SavedAblation] = []
    bad: list[str] = []
    if not d.is_dir():
        return found, bad
    for p in sorted(d.glob("*.json")):
        try:
            if not p.is_file() or p.is_symlink():
                raise ValueError("not a regular file")
            st = AblationState.from_dict(json.loads(p.read_text()))
            found.append(SavedAblation(p, p.stat().st_mtime, st))
        except (OSError, ValueError, KeyError, TypeError) as e:
            bad.append(f"{p.name}: not an ablation state file ({type(e).__name__})")
    found.sort(key=lambda a: a.modified, reverse=True)
    return found, bad


def findings(st: AblationState) -> list[str]:
    """What a result shows beyond the table: failed variants, KV cache logged vs predicted, the MTP model's fit."""
    out = []
    for key, r in st.results.items():
        if not r.ok:
            out.append(f"{key}: FAILED: {r.error}")
    for kv in kv_cache_checks(st, digits=None):
        if kv["error_pct"] is not None:
            out.append(f"KV cache {kv['variant']}: logged {kv['logged']:,}, predicted {kv['predicted']:,} "
                       f"({kv['error_pct']:+.1f}%)")
    samples = mtp_samples(st)
    if any(s.k for s in samples):
        from spark_tui.core.planning.mtp_model import fit

        try:
            f = fit(samples)
        except ValueError as e:
            out.append(f"MTP model: not fitted ({e})")
        else:
            ho = f.holdout_check()
            out.append(f"MTP model: max error {f.max_error_pct():.1f}% over {len(f.check())} runs"
                       + (f"; each k predicted from the others: max {max(abs(r['error_pct']) for r in ho):.1f}%"
                          if ho else ""))
    return out


# ------------------------------------------------------------------------------------------------ running
@dataclass(frozen=True)
class AblationConfig:
    concurrency: tuple[int, ...] = (1, 16)
    temperatures: tuple[float, ...] = (0.0,)
    mtp_temperatures: tuple[float, ...] | None = None  # MTP variants (and the baseline) also at these
    prompt_tokens: int = 512
    output_tokens: int = 256
    requests: int = 16
    startup_timeout_s: float = 1800.0
    parallel: int = 1

    def temps_for(self, v: Variant) -> tuple[float, ...]:
        extra = self.mtp_temperatures or ()
        if v.mtp_k or v.key == "baseline":
            return tuple(dict.fromkeys((*self.temperatures, *extra)))
        return self.temperatures


def _bench(url: str, cfg: AblationConfig, temperature: float) -> BenchResult:
    import asyncio

    from spark_tui.core.observe.bench import read_server_snapshot
    from spark_tui.core.observe.bench import BenchConfig, run_bench

    bc = BenchConfig(url=url, concurrency=cfg.concurrency, prompt_tokens=cfg.prompt_tokens,
                     output_tokens=cfg.output_tokens, requests=cfg.requests, duration_s=None, temperature=temperature)
    return asyncio.run(run_bench(bc, lambda cl: read_server_snapshot(cl, bc.url)))


def run_ablation(plan: "Plan", vs: Sequence[Variant], st: AblationState, path: Path, cfg: AblationConfig,
                 log: Callable[[str], None] = print, predict: Callable[[Variant], int | None] | None = None,
                 ports: Callable[[], int] | None = None) -> AblationState:
    """Start, wait, bench and stop each variant not measured yet (up to `cfg.parallel` servers at once, benchmarked
    one at a time). Every server started here is stopped before this returns or raises."""
    from spark_tui.core.runtime import supervisor as sv
    from spark_tui.core.runtime.launch import wait_ready
    from spark_tui.errors import VllmError

    todo = [v for v in vs if v.key not in st.results]
    if len(todo) < len(vs):
        log(f"resuming: {len(vs) - len(todo)} variant(s) already measured ({path})")
    vllm = sv.resolve_vllm()
    free_port = ports or _free_port
    step = max(1, cfg.parallel)
    for i in range(0, len(todo), step):
        wave = todo[i:i + step]
        started: list[tuple[Variant, Any, VariantResult]] = []
        try:
            for v in wave:
                port = free_port()
                argv = list(vllm) + ["serve", plan.model, *v.argv_flags(), "--host", HARNESS_HOST, "--port", str(port)]
                env = sv.plan_env(plan)
                env["VLLM_HOST_IP"] = HARNESS_HOST
                sup = sv.Supervisor(argv, host=HARNESS_HOST, port=port, model=plan.model, env=env)
                log(f"== {v.key}: starting vLLM on port {port}")
                sup.start()
                started.append((v, sup, VariantResult(v.key, v.label, list(argv), False, mtp_k=v.mtp_k,
                                                       log_path=str(sup.log_path))))
            for v, sup, res in started:  # ready: each one's startup time is measured from its own start
                try:  # the launch sequence's wait: a server that fails is stopped at once, not after the wave
                    ready = wait_ready(sup, cfg.startup_timeout_s)
                except VllmError as e:
                    res.error = e.message.splitlines()[0]
                    log(f"   {v.key}: FAILED to start: {res.error}")
                    continue
                res.startup_s = round(ready.seconds, 1)
                summ = sup.summary()
                res.kv_cache_tokens_logged = summ.kv_cache_tokens
                res.moe_backend_logged = summ.moe_backend
                res.kv_cache_tokens_predicted = predict(v) if predict else None
                log(f"   {v.key}: ready in {ready.seconds:.0f} s; KV cache {summ.kv_cache_tokens} tokens "
                    f"(predicted {res.kv_cache_tokens_predicted}); MoE backend {summ.moe_backend}")
            for v, sup, res in started:  # benchmarked one at a time: the others sit idle
                if res.startup_s is not None:
                    try:
                        for temp in cfg.temps_for(v):
                            b = _bench(sup.url, cfg, temp)
                            for lv in b.levels:
                                res.levels.append(LevelFigures(
                                    lv.concurrency, temp, lv.output_tok_s, lv.per_user_tok_s, lv.ttft_s.p50,
                                    lv.itl_s.p50, lv.errors, lv.acceptance_rate, lv.mean_acceptance_length))
                                acc = (f", acceptance {lv.acceptance_rate:.0%}" if lv.acceptance_rate is not None
                                       else "")
                                log(f"   {v.key} c={lv.concurrency} T={temp:g}: {lv.output_tok_s:.1f} tok/s, TTFT "
                                    f"p50 {(lv.ttft_s.p50 or 0) * 1000:.0f} ms{acc}")
                        res.ok = bool(res.levels) and all(lv.errors == 0 for lv in res.levels)
                        if not res.ok:
                            res.error = "some requests failed"
                    except Exception as e:  # noqa: BLE001 - one variant's failure is recorded, the rest go on
                        res.ok, res.error = False, f"{type(e).__name__}: {e}"
                res.finished_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                st.results[v.key] = res
                save_state(path, st)
        finally:
            for _, sup, _ in started:
                if sup.alive():
                    sup.stop()
    return st


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HARNESS_HOST, 0))
        return s.getsockname()[1]
