"""Report model of the self-test: statuses, check results, verdict, exit codes.

Pure Python (no torch): the TUI, the renderers and the tests use it without a GPU stack.
`Report.to_dict()` is the `--json` API (schema_version 1, documented in README "selftest").
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum, IntEnum
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


class Status(str, Enum):
    """Outcome of one check."""

    PASS = "pass"  # it ran and the result is right
    FAIL = "fail"  # it ran (or tried to) and the result is wrong, or it raised
    SKIPPED = "skipped"  # not run here; `reason` says why (no GPU, no vLLM, not needed)
    NOT_NATIVE = "not_native"  # this GPU has no hardware path for it; details name the fallback
    INFO = "info"  # facts only (environment, support matrices), nothing to pass or fail

    @property
    def symbol(self) -> str:
        return {"pass": "PASS", "fail": "FAIL", "skipped": "SKIP", "not_native": "NOT NATIVE", "info": "INFO"}[self.value]


class Verdict(str, Enum):
    NATIVE = "native_nvfp4"
    FALLBACK = "nvfp4_weight_only_fallback"
    UNSUPPORTED = "unsupported"
    NO_GPU = "no_gpu"

    @property
    def label(self) -> str:  # not `title`: that would shadow str.title() of this str enum
        return {
            "native_nvfp4": "native NVFP4",
            "nvfp4_weight_only_fallback": "NVFP4 via weight-only fallback",
            "unsupported": "unsupported",
            "no_gpu": "no GPU: nothing was run",
        }[self.value]


class SelftestExit(IntEnum):
    """Exit codes of `python -m kernels_check` / `spark-tui selftest` (documented in README)."""

    NATIVE = 0  # native NVFP4 GEMM ran and matched the reference
    FALLBACK = 1  # no native FP4: vLLM would use a weight-only (W4A16) fallback
    UNSUPPORTED = 2  # neither: this stack cannot serve the NVFP4 checkpoint (or a baseline check failed)
    NO_GPU = 3  # no torch, or torch sees no CUDA GPU: every GPU check skipped (same code as `probe`)


VERDICT_EXIT = {
    Verdict.NATIVE: SelftestExit.NATIVE,
    Verdict.FALLBACK: SelftestExit.FALLBACK,
    Verdict.UNSUPPORTED: SelftestExit.UNSUPPORTED,
    Verdict.NO_GPU: SelftestExit.NO_GPU,
}


@dataclass
class CheckResult:
    name: str  # stable id, e.g. "bf16_gemm"
    title: str  # one line for people
    status: Status
    reason: str = ""  # why skipped / failed / not native, one sentence
    seconds: float = 0.0  # wall time of the check itself
    details: dict[str, Any] = field(default_factory=dict)  # figures: errors, TFLOP/s, versions

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        d["seconds"] = round(self.seconds, 4)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CheckResult":
        return cls(
            name=d["name"],
            title=d.get("title", d["name"]),
            status=Status(d["status"]),
            reason=d.get("reason", ""),
            seconds=float(d.get("seconds", 0.0)),
            details=dict(d.get("details") or {}),
        )


@dataclass
class Recommendation:
    verdict: Verdict
    summary: str
    checkpoint: str | None = None
    moe_backend: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return int(VERDICT_EXIT[self.verdict])


@dataclass
class Report:
    checks: list[CheckResult]
    recommendation: Recommendation
    environment: dict[str, Any] = field(default_factory=dict)  # the key: gpu, sm, driver, cuda, torch, vllm, flashinfer
    started_at: str | None = None
    seconds: float = 0.0
    schema_version: int = SCHEMA_VERSION

    @property
    def exit_code(self) -> int:
        return self.recommendation.exit_code

    def check(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        r = self.recommendation
        return {
            "schema_version": self.schema_version,
            "tool": "kernels_check",
            "started_at": self.started_at,
            "seconds": round(self.seconds, 3),
            "environment": self.environment,
            "verdict": {
                "id": r.verdict.value,
                "title": r.verdict.label,
                "exit_code": r.exit_code,
                "summary": r.summary,
                "recommended_checkpoint": r.checkpoint,
                "recommended_moe_backend": r.moe_backend,
                "notes": list(r.notes),
            },
            "checks": [c.to_dict() for c in self.checks],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Report":
        v = d["verdict"]
        rec = Recommendation(
            verdict=Verdict(v["id"]),
            summary=v.get("summary", ""),
            checkpoint=v.get("recommended_checkpoint"),
            moe_backend=v.get("recommended_moe_backend"),
            notes=list(v.get("notes") or []),
        )
        return cls(
            checks=[CheckResult.from_dict(c) for c in d.get("checks", [])],
            recommendation=rec,
            environment=dict(d.get("environment") or {}),
            started_at=d.get("started_at"),
            seconds=float(d.get("seconds", 0.0)),
            schema_version=int(d.get("schema_version", SCHEMA_VERSION)),
        )

    @classmethod
    def load(cls, path: str | Path) -> "Report":
        return cls.from_dict(json.loads(Path(path).read_text()))
