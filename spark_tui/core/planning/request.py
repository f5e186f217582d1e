"""The plan request: what the user asked for (`spark-tui plan` options, the TUI's choices), checked before planning.

`validate_request` turns keyword options into a `PlanRequest` or a UsageError naming the option and the fix;
`parse_set` reads `--set` items (FLAG=VALUE, FLAG, FLAG=, ENV=VALUE); `check_bind` the bind address and port.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from spark_tui.core.catalog import vllm_compat as compat
from spark_tui.core.planning.flags import is_flag_name
from spark_tui.errors import UsageError

if TYPE_CHECKING:
    from spark_tui.core.hardware.probe import ProbeResult

GOALS = ("latency", "throughput", "context", "balanced")
PARALLEL = ("tp", "dp", "replicas")  # --parallel: spark_tui.core.hardware.gpus.compare_parallel's options
DEFAULT_SERVED_NAME = "qwen3.6-35b-a3b"
V = compat.DEFAULT_VERSION


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked for, validated."""

    device: str | None = None
    probe: ProbeResult | None = None
    checkpoint: str | None = None
    model_path: str | None = None
    context: int | None = None
    concurrency: int | None = None
    goal: str = "balanced"
    mtp: int | None = None
    sets: tuple[tuple[str, str | None, bool], ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    version: str = V
    version_given: bool = False
    served_model_name: str = DEFAULT_SERVED_NAME
    recipe: str | None = None
    gpu_index: int = 0
    include_unmeasured: bool = False
    gpu_index_given: bool = False
    parallel: str | None = None  # "tp" | "dp" | "replicas" over `gpus` identical GPUs
    gpus: int | None = None  # how many identical GPUs (default: the probe's identical GPUs; 1 for --device)
    nodes: int = 1  # machines (two DGX Sparks: --nodes 2)


# ------------------------------------------------------------------------------------------------ parse
def parse_set(items: Iterable[str]) -> list[tuple[str, str | None, bool]]:
    """`--set` items -> (name, value, remove). FLAG=VALUE sets, FLAG a switch, FLAG= removes.
    A name in UPPER_CASE without dashes is an environment variable."""
    out: list[tuple[str, str | None, bool]] = []
    for raw in items:
        name, eq, value = raw.partition("=")
        name = name.strip()
        if not name:
            raise UsageError(f"--set {raw!r}: no flag name", "write --set FLAG=VALUE, --set FLAG or --set FLAG=")
        is_env = re.fullmatch(r"[A-Z_][A-Z0-9_]*", name) is not None
        if not is_env and not name.startswith("-"):
            name = "--" + name
        if not is_env and not is_flag_name(name):
            raise UsageError(f"--set {raw!r}: {name!r} is not a flag name", "e.g. --set max-num-seqs=16")
        if not eq:
            out.append((name, None, False))
        elif value == "":
            out.append((name, None, True))
        else:
            out.append((name, value, False))
    return out


def check_bind(host: str, port: int) -> None:
    """A bind address vLLM (and every export format) can use: an IP address or a DNS name, a TCP port."""
    import ipaddress

    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is not a TCP port", "1 to 65535, e.g. --port 8000")
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if not re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*", host or ""):
        raise UsageError(f"--host {host!r} is neither an IP address nor a host name",
                         "e.g. --host 127.0.0.1 (this machine only) or --host 0.0.0.0 (all interfaces, with an API key)")


def validate_request(**kw: Any) -> PlanRequest:
    goal = kw.get("goal") or "balanced"
    if goal not in GOALS:
        raise UsageError(f"unknown goal {goal!r}", f"one of: {', '.join(GOALS)}")
    mtp = kw.get("mtp")
    if mtp is not None and not 0 <= mtp <= 8:
        raise UsageError(f"--mtp {mtp} is out of range", "0 (off) to 8 draft tokens")
    context = kw.get("context")
    if context is not None and context < 16:
        raise UsageError(f"--context {context} is too small", "at least 16 tokens")
    conc = kw.get("concurrency")
    if conc is not None and conc < 1:
        raise UsageError(f"--concurrency {conc} must be >= 1", "e.g. --concurrency 8")
    parallel = kw.get("parallel")
    if parallel is not None and parallel not in PARALLEL:
        raise UsageError(f"unknown --parallel {parallel!r}", f"one of: {', '.join(PARALLEL)}")
    gpus = kw.get("gpus")
    if gpus is not None and gpus < 1:
        raise UsageError(f"--gpus {gpus} must be >= 1", "e.g. --gpus 2")
    nodes = kw.get("nodes") or 1
    if nodes < 1:
        raise UsageError(f"--nodes {nodes} must be >= 1", "e.g. --nodes 2")
    gpu_index = kw.get("gpu_index")
    if gpu_index is not None and gpu_index < 0:
        raise UsageError(f"--gpu-index {gpu_index} is negative", "an index `spark-tui probe` lists, e.g. --gpu-index 1")
    host = "127.0.0.1" if kw.get("host") is None else kw["host"]
    port = 8000 if kw.get("port") is None else kw["port"]
    check_bind(host, port)
    version = kw.get("vllm_version")
    if version is not None and compat.parse_version(version) is None and version.strip().lower() not in ("nightly",
                                                                                                          "main"):
        raise UsageError(f"--vllm-version {version!r} is not a vLLM release", "e.g. --vllm-version 0.33.0")
    from spark_tui.core.planning.flagtypes import validate_set_items

    validate_set_items(kw.get("set_flags"), version or V)  # secrets refused, known flags' values type-checked
    return PlanRequest(
        device=kw.get("device"), probe=kw.get("probe"), checkpoint=kw.get("checkpoint"),
        model_path=kw.get("model_path"), context=context, concurrency=conc, goal=goal, mtp=mtp,
        sets=tuple(parse_set(kw.get("set_flags") or ())), host=host, port=port, version=version or V,
        version_given=version is not None, served_model_name=kw.get("served_model_name") or DEFAULT_SERVED_NAME,
        recipe=kw.get("recipe"), gpu_index=gpu_index or 0,
        include_unmeasured=bool(kw.get("include_unmeasured")), gpu_index_given=bool(kw.get("gpu_index_given")),
        parallel=parallel, gpus=gpus, nodes=nodes)
