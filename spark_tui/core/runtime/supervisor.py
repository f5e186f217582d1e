"""Launch supervision: start `vllm serve` for a plan, follow its log, confirm readiness, stop it cleanly.

The supervisor owns the vLLM process (the UI only subscribes). It:

- starts the server in its own process group (`start_new_session=True`), so one `killpg` reaches the API
  server and every engine/worker process it forks;
- copies its output line by line to a rotating log under `state_dir()/logs/` and to subscribers
  (callables receiving frozen events: `LogLine`, `Ready`, `Exited`);
- records a state file `state_dir()/servers/<pid>.json` (pid, pgid, port, plan summary, log path) that
  `spark-tui stop` reads;
- confirms readiness with GET /health = 200 and /v1/models listing the served model, and ends a start
  that exceeds the startup timeout by stopping the group;
- stops with SIGTERM to the group, then SIGKILL after a grace period.

No orphans when spark-tui dies (attached mode, the default):
1. SIGTERM / SIGHUP / SIGINT in spark-tui: `install_signal_handlers()` stops the group, then exits.
2. SIGKILL of spark-tui (or a crash that skips handlers): a watchdog process (`python -m
   spark_tui.core.runtime.supervisor --watchdog ...`, in its own session so a closing terminal's SIGHUP does not
   reach it) polls spark-tui's pid every 0.5 s; when it is gone it stops the server group (SIGTERM,
   then SIGKILL after the grace period) and exits. It also exits by itself once the group is gone.
3. Belt and braces: the API server is started with PR_SET_PDEATHSIG=SIGTERM (Linux prctl through ctypes in
   `preexec_fn`), so it gets SIGTERM even if the watchdog is gone too. PDEATHSIG fires when the *thread*
   that forked the child exits, not the process, so it is only set when `start()` runs on the main thread
   (a TUI worker thread that ends would otherwise kill a healthy server); the watchdog covers other threads.
   It reaches only the API server, not its children: vLLM ends its own children on SIGTERM, and the
   watchdog's killpg reaches all of them anyway.

Detached mode (`--detach`): no watchdog and no PDEATHSIG, by design: the server must outlive spark-tui.
Only `spark-tui stop` (or killing the group yourself) ends it; the state file records `detached: true`.

Keepable mode (the TUI): the watchdog guards the server exactly as in attached mode, so a SIGKILLed TUI
leaves no orphan; the output goes to the log file (as when detached, so the server can outlive the app);
`release()` (the user chose "keep running" on quit) sends the watchdog SIGUSR1, and the record becomes
detached. No PDEATHSIG: it cannot be withdrawn once the server runs, and a kept server must survive.

A state file names a process by pid, and pids are reused. Before any signal, `stop` (and `list_servers`)
checks that the pid is still the server recorded: the same start time (psutil create_time) and the same
command line (or vLLM's own `VLLM::` process title), and for the group the SPARK_TUI_SERVER_ID marker in the
environment of its processes. A record that fails the check is stale: it is dropped, nothing is signalled.

A server bound to a non-loopback address needs an API key (`supervisor_for_plan`): from VLLM_API_KEY, a
variable the caller names, or a 0600 file (`resolve_api_key`). It reaches vLLM only through the server's
environment (VLLM_API_KEY, which vLLM reads when --api-key is not given), never its command line.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_tui.errors import DownloadError, UsageError, VllmError

if TYPE_CHECKING:
    import psutil

    from spark_tui.core.catalog.checkpoint import CheckpointReport
    from spark_tui.core.planning.plan import Plan
    from spark_tui.core.runtime.vllm_log import Event, PhaseState, StartupSummary

LOG_MAX_BYTES = 20 * 1024**2  # rotate the server log at 20 MiB...
LOG_BACKUPS = 3  # ...keeping 3 old files
DEFAULT_GRACE_S = 15.0
WATCHDOG_POLL_S = 0.5
INSTANCE_ENV = "SPARK_TUI_SERVER_ID"  # in the server's environment (inherited by its children): who it is
API_KEY_ENV = "VLLM_API_KEY"  # vllm/envs.py: vLLM's API key when --api-key is not given


# ---------------------------------------------------------------------------------------------- events
@dataclass(frozen=True)
class LogLine:
    text: str
    t: float  # time.time()


@dataclass(frozen=True)
class Ready:
    url: str
    seconds: float  # since start
    models: tuple[str, ...]


@dataclass(frozen=True)
class Exited:
    returncode: int | None
    stopped_by_us: bool


@dataclass(frozen=True)
class PhaseChanged:
    """The startup checklist changed (spark_tui.core.runtime.vllm_log.StartupTracker phases)."""

    phases: tuple[PhaseState, ...]


@dataclass(frozen=True)
class LogEvent:
    """A typed event parsed from the log (vllm_log.Event: KvCacheSize, MoeBackend, EngineStats, ...)."""

    event: Event


SupervisorEvent = LogLine | PhaseChanged | LogEvent | Ready | Exited
Subscriber = Callable[[SupervisorEvent], object]  # what it returns is ignored


# ---------------------------------------------------------------------------------------------- state files
def servers_dir() -> Path:
    from spark_tui.core.paths import state_dir

    return state_dir() / "servers"


def logs_dir() -> Path:
    from spark_tui.core.paths import state_dir

    return state_dir() / "logs"


@dataclass(frozen=True)
class ServerRecord:
    pid: int
    pgid: int
    host: str
    port: int
    model: str  # what vLLM serves (repo id or path)
    served_model_name: str | None
    log_path: str
    argv: tuple[str, ...]
    started_at: float
    detached: bool
    runtime: str = "native"
    watchdog_pid: int | None = None
    parent_pid: int | None = None
    plan_summary: dict[str, Any] = field(default_factory=dict)
    create_time: float | None = None  # psutil create_time of pid: with the pid, the process's identity
    instance: str | None = None  # the INSTANCE_ENV value in the server's environment

    @property
    def url(self) -> str:
        return http_url(self.host, self.port)

    def path(self) -> Path:
        return servers_dir() / f"{self.pid}.json"

    def save(self) -> Path:
        p = self.path()
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, p: Path) -> ServerRecord:
        d = json.loads(p.read_text())
        d["argv"] = tuple(d.get("argv") or ())
        return cls(**d)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:  # noqa: BLE001 - psutil missing or the process just went away
        return True


def group_alive(pgid: int) -> bool:
    """True while a non-zombie process of the group exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        import psutil
    except ImportError:
        return True
    for p in psutil.process_iter():
        try:
            if _pgid(p) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                return True
        except psutil.Error:
            continue
    return False


def _pgid(p: psutil.Process) -> int | None:
    try:
        return os.getpgid(p.pid)
    except (ProcessLookupError, PermissionError, OSError):
        return None


def http_url(host: str, port: int) -> str:
    """The URL to reach a server bound to host: a wildcard address is reached on loopback of its family, an
    IPv6 address goes in brackets (http://[::1]:8000)."""
    h = host.strip("[]")
    if h in ("0.0.0.0", ""):
        h = "127.0.0.1"
    elif h == "::":
        h = "::1"
    try:
        if ipaddress.ip_address(h).version == 6:
            return f"http://[{h}]:{port}"
    except ValueError:
        pass
    return f"http://{h}:{port}"


def _cmdline_matches(cmdline: list[str], argv: tuple[str, ...]) -> bool:
    """The recorded argv (also behind the interpreter a `#!` script such as `vllm` runs under: [python, script,
    args]), or vLLM's own process title (`VLLM::APIServer`, vllm/utils/system_utils.py set_process_title,
    v0.32.0), which replaces the command line of the processes vLLM names."""
    cmd, want = tuple(cmdline), tuple(argv)
    return cmd == want or (bool(want) and cmd[1:] == want) or bool(cmd and cmd[0].startswith("VLLM::"))


def _has_instance(p: psutil.Process, instance: str) -> bool:
    import psutil

    try:
        return p.environ().get(INSTANCE_ENV) == instance
    except (psutil.Error, OSError):  # another user's process (AccessDenied) or gone: not ours
        return False


def identity_problem(r: ServerRecord) -> str | None:
    """Why the processes now at r.pid / r.pgid are not the server r records (pid reuse), or None when they
    are. Checked before any signal: start time, command line, the environment marker."""
    import psutil

    try:
        p = psutil.Process(r.pid)
        ct = p.create_time()
        cmd = p.cmdline()
    except psutil.NoSuchProcess:
        p = None
    except psutil.Error as e:  # AccessDenied: another user's process now has this pid
        return f"pid {r.pid} cannot be inspected ({type(e).__name__}): not a server spark-tui started"
    if p is not None:
        if r.create_time is not None:
            if abs(ct - r.create_time) > 1.0:
                return (f"pid {r.pid} was reused: it started at {time.ctime(ct)}, the server at "
                        f"{time.ctime(r.create_time)}")
        elif not (r.started_at - 2.0 <= ct <= r.started_at + 120.0):  # a record written before create_time
            return f"pid {r.pid} was reused: it started at {time.ctime(ct)}, the server at {time.ctime(r.started_at)}"
        if not _cmdline_matches(cmd, r.argv) and not (r.instance and _has_instance(p, r.instance)):
            shown = " ".join(cmd)[:80]
            return f"pid {r.pid} now runs `{shown}`, not the recorded server"
        return None
    # the leader is gone; its group lives on only in its children, which carry the marker
    for q in psutil.process_iter():
        try:
            if _pgid(q) != r.pgid or q.status() == psutil.STATUS_ZOMBIE:
                continue
            ours = _has_instance(q, r.instance) if r.instance else q.create_time() >= r.started_at - 2.0
        except psutil.Error:
            continue
        if not ours:
            return f"process group {r.pgid} now holds processes spark-tui did not start (pid {q.pid})"
    return None


def list_servers(prune: bool = True) -> list[ServerRecord]:
    """Recorded servers whose process group is still alive and still theirs (stale files, also those whose
    pid was reused by another program, are removed when prune)."""
    out: list[ServerRecord] = []
    d = servers_dir()
    if not d.is_dir():
        return out
    for p in sorted(d.glob("*.json")):
        try:
            r = ServerRecord.load(p)
        except (OSError, ValueError, TypeError):
            if prune:
                p.unlink(missing_ok=True)
            continue
        if group_alive(r.pgid) and identity_problem(r) is None:
            out.append(r)
        elif prune:
            p.unlink(missing_ok=True)
    return out


def stop_server(r: ServerRecord, grace_s: float = DEFAULT_GRACE_S) -> str:
    """Stop a recorded server after checking, right before the first signal, that its pid and group are
    still the ones recorded. Returns "clean" / "killed" / "gone" / "stale" (pid reused: nothing signalled)."""
    if not group_alive(r.pgid):
        return "gone"
    if identity_problem(r) is not None:
        return "stale"
    return stop_group(r.pgid, grace_s)


def stop_group(pgid: int, grace_s: float = DEFAULT_GRACE_S, first: int = signal.SIGTERM) -> str:
    """Signal the group, wait up to grace_s for it to vanish, then SIGKILL. Returns "clean" / "killed" / "gone"."""
    try:
        os.killpg(pgid, first)
    except ProcessLookupError:
        return "gone"
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return "clean"
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return "clean"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and group_alive(pgid):
        time.sleep(0.05)
    return "killed"


# ---------------------------------------------------------------------------------------------- command line
def resolve_vllm() -> list[str]:
    """$SPARK_TUI_VLLM, else `vllm` on PATH, else this Python's `-m vllm.entrypoints.cli.main`."""
    env = os.environ.get("SPARK_TUI_VLLM")
    if env:
        import shlex

        try:
            parts = shlex.split(env)
        except ValueError as e:  # an unbalanced quote or a trailing backslash
            raise VllmError(f"SPARK_TUI_VLLM={env!r} cannot be split into words ({e})",
                            "quote it as a shell would, e.g. SPARK_TUI_VLLM='\"/opt/my vllm/bin/vllm\"', "
                            "or point it at the `vllm` program without quotes") from None
        if not parts or not (shutil.which(parts[0]) or os.access(parts[0], os.X_OK)):
            raise VllmError(f"SPARK_TUI_VLLM={env!r} is not an executable", "point it at the `vllm` program")
        return parts
    exe = shutil.which("vllm")
    if exe:
        return [exe]
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        return [sys.executable, "-m", "vllm.entrypoints.cli.main"]
    raise VllmError("vLLM is not installed (no `vllm` on PATH, no vllm module in this Python)",
                    "install it (`pip install 'spark-tui[vllm]'`), or set SPARK_TUI_VLLM=/path/to/vllm, "
                    "or use --runtime docker")


def _with_port(plan: Plan, port: int | None) -> Plan:
    """The plan serving on another port (tune's candidates, a caller's explicit port): the --port flag changes,
    so argv, exports and the supervisor keep agreeing."""
    if port is None or port == plan.port:
        return plan
    return plan.with_flag("--port", port, "port chosen by the caller", "spark-tui")


def native_argv(plan: Plan, vllm_cmd: list[str], port: int | None = None) -> list[str]:
    """The export helper's `serve_argv` (plan.argv() + missing --host/--port/parallel flags), run by the
    resolved vLLM command (which may be several words: python -m vllm.entrypoints.cli.main)."""
    from spark_tui.core.export.formats import serve_argv

    return list(vllm_cmd) + serve_argv(_with_port(plan, port))[1:]


def docker_argv(plan: Plan, port: int | None = None, image: str | None = None, name: str = "spark-tui-vllm",
                secret_names: tuple[str, ...] = ()) -> list[str]:
    """`docker run` for the plan as an argv, from the export helper's pieces (the same container flags,
    image and port publishing as `spark-tui export --format docker`). Secrets are passed by name only."""
    from spark_tui.core.export import formats as ex

    plan = _with_port(plan, port)
    host, p = ex.effective_host(plan), ex.effective_port(plan)
    # a pinned plan (CUDA_VISIBLE_DEVICES) becomes docker's device selection, as in the docker export
    argv = ["docker", "run", "--rm", "--name", name, "--gpus", ex.docker_gpus(plan), "--ipc=host", "-p",
            ex._publish(host, p), "-v", f"{os.path.expanduser('~')}/.cache/huggingface:{ex.CONTAINER_HF_CACHE}"]
    for s in (*plan.secret_env, *(n for n in secret_names if n not in plan.secret_env)):
        argv += ["-e", s]  # `-e NAME` copies the value from our environment; it never appears in argv
    for e in ex.container_env(plan):
        argv += ["-e", f"{e.name}={e.value}"]
    args = ex.container_args(plan)
    if os.path.isdir(plan.model):  # a local checkpoint: mount it read-only at the same path
        argv += ["-v", f"{os.path.abspath(plan.model)}:{os.path.abspath(plan.model)}:ro"]
    argv.append(ex.image_for(plan, ex.ExportOptions(image=image)))
    return argv + args


# ---------------------------------------------------------------------------------------------- preflight
def check_port_free(host: str, port: int) -> None:
    """Bind host:port in every address family the host resolves to (IPv6 for ::1 and ::, IPv4 for 127.0.0.1
    and 0.0.0.0, both for localhost), as the server will; VllmError when one is taken."""
    h = host.strip("[]") or "0.0.0.0"
    try:
        infos = socket.getaddrinfo(h, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise UsageError(f"cannot bind {host!r}: the address does not resolve ({e})",
                         "give --host an IP address of this machine (default 127.0.0.1)") from None
    seen = set()
    for family, stype, proto, _, addr in infos:
        if (family, addr[:2]) in seen or family not in (socket.AF_INET, socket.AF_INET6):
            continue
        seen.add((family, addr[:2]))
        with socket.socket(family, stype, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            try:
                s.bind(addr)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise VllmError(f"port {port} on {host} is already in use ({e.strerror})",
                                    "stop what uses it (`spark-tui stop --all` for a server spark-tui started) "
                                    "or choose another with --port") from None
                raise UsageError(f"cannot bind {host} port {port} ({e.strerror})",
                                 "give --host an address of this machine (default 127.0.0.1)") from None


def mem_available_bytes(meminfo: str = "/proc/meminfo") -> int | None:
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001
        return None


def check_memory(plan: Plan, available: int | None = None) -> str | None:
    """On unified memory (GB10) vLLM's own processes start first, then its startup check wants MemAvailable >=
    ceil(utilization x total) (vllm v0.32.0 vllm/v1/worker/utils.py:724-726, 761-770), and the server then holds the
    plan's budget. So MemAvailable now must cover vLLM's process overhead (spark_tui.core.hardware.unified.vllm_overhead)
    plus the larger of the two. Raises VllmError when short; returns a note otherwise (None when not applicable)."""
    import math

    from spark_tui.core.hardware.unified import vllm_overhead

    mem = getattr(plan, "memory", None)
    dev = getattr(plan, "device", None)
    if mem is None or dev is None or not getattr(dev, "unified_memory", False):
        return None
    avail = mem_available_bytes() if available is None else available
    if avail is None:
        return "MemAvailable unknown: memory check skipped"
    gib = 1024**3
    flags = getattr(plan, "flags", None)
    util_value = flags.value("--gpu-memory-utilization") if flags is not None else None
    util = float(util_value) if util_value is not None else None
    requested = math.ceil(mem.device_total_bytes * util) if util is not None else 0
    need_vllm = max(mem.budget_bytes, requested)
    what = (f"ceil({util:g} x {mem.device_total_bytes / gib:.1f} GiB) for vLLM's startup check"
            if util is not None and requested >= mem.budget_bytes else
            f"its budget (gpu-memory-utilization x {mem.device_total_bytes / gib:.1f} GiB, or the KV pool + weights + "
            "overhead)")
    proc = vllm_overhead().bytes
    need = need_vllm + proc
    if avail < need:
        raise VllmError(
            f"not enough free memory: the plan needs {need / gib:.1f} GiB ({need_vllm / gib:.1f} GiB: {what}, + "
            f"{proc / gib:.1f} GiB for vLLM's own processes, which start first) but MemAvailable is "
            f"{avail / gib:.1f} GiB ({(need - avail) / gib:.1f} GiB short)",
            "close other programs, drop the page cache (`sync; echo 3 | sudo tee /proc/sys/vm/drop_caches`), "
            "or plan again here (`spark-tui plan` sizes --gpu-memory-utilization from MemAvailable now)",
        )
    return (f"MemAvailable {avail / gib:.1f} GiB >= {need / gib:.1f} GiB (vLLM {need_vllm / gib:.1f} GiB + its processes "
            f"{proc / gib:.1f} GiB)")


def check_checkpoint(plan: Plan) -> tuple[CheckpointReport | None, str | None]:
    """Completeness + quantization of the checkpoint vLLM will load (part 1): a local directory, or the HF
    cache snapshot of a repo id. Returns (report or None, note); raises DownloadError (exit 7) only for
    what vLLM cannot load (missing/truncated shards, a quantization config vLLM rejects, a `--quantization`
    that contradicts the checkpoint), naming the reason; another format than the plan's is a warning."""
    from spark_tui.core.catalog import checkpoint as ck

    fmt = getattr(getattr(plan, "checkpoint", None), "format", None) or None
    model = str(plan.model)
    where = model if os.path.isdir(model) else None
    if where is None and model.count("/") == 1:
        from spark_tui.core.runtime.download import find_cached_snapshot

        snap = find_cached_snapshot(model, getattr(plan.checkpoint, "revision", None))
        if snap is None:
            return None, (f"{model} is not in the Hugging Face cache: vLLM will download it while starting "
                          f"(`spark-tui download {model}` first checks disk space and resumes)")
        where = str(snap)
    if where is None:
        raise DownloadError(f"checkpoint {model} is neither a local directory nor a Hugging Face repo id",
                            "give --model-path an existing checkpoint folder")
    qflag = plan.flag("--quantization") if hasattr(plan, "flag") else None
    rep = ck.verify_checkpoint(where, expected_format=fmt, quantization_flag=getattr(qflag, "value", None))
    ck.require_complete(rep)
    return rep, None


# ---------------------------------------------------------------------------------------------- verification
@dataclass(frozen=True)
class Verification:
    predicted_kv_tokens: int | None
    actual_kv_tokens: int | None
    kv_error_pct: float | None  # (actual - predicted) / predicted x 100
    planned_moe_backend: str | None
    actual_moe_backend: str | None
    mismatches: tuple[str, ...]

    def lines(self) -> list[str]:
        out = []
        if self.actual_kv_tokens is not None:
            pred = f"{self.predicted_kv_tokens:,}" if self.predicted_kv_tokens is not None else "no prediction"
            err = f" ({self.kv_error_pct:+.1f}%)" if self.kv_error_pct is not None else ""
            out.append(f"KV cache: {self.actual_kv_tokens:,} tokens, plan predicted {pred}{err}")
        if self.actual_moe_backend or self.planned_moe_backend:
            out.append(f"MoE backend: {self.actual_moe_backend or 'not logged'}"
                       f" (plan: {self.planned_moe_backend or 'auto'})")
        return out + [f"MISMATCH: {m}" for m in self.mismatches]


def _norm_backend(s: str | None) -> str | None:
    return None if s is None else s.strip().lower().replace("-", "_")


def verify_against_plan(plan: Plan, summary: StartupSummary, kv_tolerance_pct: float = 10.0) -> Verification:
    """Compare what vLLM logged (a vllm_log.StartupSummary: kv_cache_tokens, moe_backend) with the plan."""
    mem = getattr(plan, "memory", None)
    pred = getattr(mem, "kv_cache_tokens", None) if mem is not None else None
    actual = summary.kv_cache_tokens
    err = None
    mismatches = []
    if pred and actual is not None:
        err = (actual - pred) / pred * 100.0
        if abs(err) > kv_tolerance_pct:
            mismatches.append(f"KV cache is {actual:,} tokens, the plan predicted {pred:,} ({err:+.1f}%)")
    fc = plan.flag("--moe-backend") if hasattr(plan, "flag") else None
    planned = fc.text if fc is not None else None
    base = getattr(plan, "baseline", None)
    predicted = None if planned else getattr(base, "moe_backend", None)
    chosen = summary.moe_backend
    if planned and _norm_backend(planned) != "auto" and chosen is not None:
        if _norm_backend(planned) != _norm_backend(chosen):
            mismatches.append(f"vLLM chose MoE backend {chosen}, the plan asked for {planned}")
    elif predicted and chosen is not None and _norm_backend(predicted) != _norm_backend(chosen):
        mismatches.append(f"vLLM chose MoE backend {chosen}, the plan predicted {predicted} for its automatic choice")
    planned = planned or (f"{predicted} (predicted auto)" if predicted else None)
    return Verification(pred, actual, err, planned, chosen, tuple(mismatches))


# ---------------------------------------------------------------------------------------------- log file
class RotatingLog:
    def __init__(self, path: Path, max_bytes: int = LOG_MAX_BYTES, backups: int = LOG_BACKUPS) -> None:
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "ab")

    def write(self, data: bytes) -> None:
        if self.f.tell() + len(data) > self.max_bytes and self.f.tell() > 0:
            self.f.close()
            for i in range(self.backups - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
            self.f = open(self.path, "ab")
        self.f.write(data)
        self.f.flush()

    def close(self) -> None:
        self.f.close()


# ---------------------------------------------------------------------------------------------- the process
def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except OSError:
        pass


def start_watchdog(parent_pid: int, pgid: int, grace_s: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "spark_tui.core.runtime.supervisor", "--watchdog", str(parent_pid), str(pgid), str(grace_s)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
    )


def watchdog_main(parent_pid: int, pgid: int, grace_s: float) -> int:
    """Stop the server group when spark-tui (parent_pid) is gone; exit when the group is gone, or at once on
    SIGUSR1 (Supervisor.release: the user keeps the server)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, lambda signum, frame: os._exit(0))
    while True:
        if not group_alive(pgid):
            return 0
        if not pid_alive(parent_pid):
            stop_group(pgid, grace_s)
            return 0
        time.sleep(WATCHDOG_POLL_S)


class Supervisor:
    """One vLLM server process (group). Thread-safe subscribe; `start()` then `wait_ready()`."""

    def __init__(self, argv: list[str], *, host: str, port: int, model: str, served_model_name: str | None = None,
                 env: dict[str, str] | None = None, log_path: Path | None = None, detach: bool = False,
                 runtime: str = "native", plan_summary: dict[str, Any] | None = None,
                 grace_s: float = DEFAULT_GRACE_S, cwd: str | None = None, keepable: bool = False,
                 api_key: str | None = None) -> None:
        self.argv = list(argv)
        self.host, self.port, self.model = host, port, model
        self.served_model_name = served_model_name
        self.env = env
        self.detach = detach
        self.keepable = keepable and not detach  # watchdog now, `release()` later (the TUI)
        self._api_key = api_key  # for the readiness probe's bearer header only; never stored or shown
        self.runtime = runtime
        self.plan_summary = plan_summary or {}
        self.grace_s = grace_s
        self.cwd = cwd
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_path = Path(log_path) if log_path else logs_dir() / f"vllm-{stamp}-{port}.log"
        from spark_tui.core.runtime.vllm_log import StartupTracker, VllmLogParser

        self.parser = VllmLogParser(max_lines=5000)
        self.tracker = StartupTracker()
        self._phase_sig: tuple = ()
        self.proc: subprocess.Popen | None = None
        self.watchdog: subprocess.Popen | None = None
        self.record: ServerRecord | None = None
        self.started_at = 0.0
        self._subs: list[Subscriber] = []
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._stopped_by_us = False
        self.tail: list[str] = []  # last lines, for diagnosis

    # -- subscribers
    def subscribe(self, fn: Subscriber) -> None:
        with self._lock:
            self._subs.append(fn)

    def _emit(self, ev: SupervisorEvent) -> None:
        with self._lock:
            subs = list(self._subs)
        for s in subs:
            try:
                s(ev)
            except Exception:  # noqa: BLE001 - a broken subscriber must not kill the log pump
                pass

    @property
    def url(self) -> str:
        return http_url(self.host, self.port)

    def start(self) -> ServerRecord:
        import uuid

        instance = uuid.uuid4().hex
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1", INSTANCE_ENV: instance}
        main_thread = threading.current_thread() is threading.main_thread()
        use_pdeathsig = not self.detach and not self.keepable and main_thread and sys.platform.startswith("linux")
        log = RotatingLog(self.log_path)
        log.write(("+ " + " ".join(self.argv) + "\n").encode())
        self.started_at = time.time()
        # attached: output through a pipe we pump (rotating log + subscribers). Detached: straight into the
        # log file, because a pipe would break (EPIPE/SIGPIPE in vLLM) once spark-tui exits; we follow the
        # file for subscribers while we live (the file is then not rotated).
        to_file = self.detach or self.keepable
        out = subprocess.PIPE if not to_file else log.f
        try:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=self.cwd, start_new_session=True, preexec_fn=_set_pdeathsig if use_pdeathsig else None,
            )
        except OSError as e:
            log.close()
            raise VllmError(f"cannot start {self.argv[0]}: {e.strerror}", "check the vLLM installation "
                            "(SPARK_TUI_VLLM) or --runtime") from None
        pgid = os.getpgid(self.proc.pid)
        create_time = None
        try:
            import psutil

            create_time = psutil.Process(self.proc.pid).create_time()
        except Exception:  # noqa: BLE001 - gone already: the reader reports the exit
            pass
        if not self.detach:
            self.watchdog = start_watchdog(os.getpid(), pgid, self.grace_s)
        self.record = ServerRecord(
            pid=self.proc.pid, pgid=pgid, host=self.host, port=self.port, model=self.model,
            served_model_name=self.served_model_name, log_path=str(self.log_path), argv=tuple(self.argv),
            started_at=self.started_at, detached=self.detach, runtime=self.runtime,
            watchdog_pid=self.watchdog.pid if self.watchdog else None, parent_pid=os.getpid(),
            plan_summary=self.plan_summary, create_time=create_time, instance=instance,
        )
        self.record.save()
        target = self._pump if not to_file else self._follow
        self._reader = threading.Thread(target=target, args=(self.proc, log), daemon=True, name="vllm-log")
        self._reader.start()
        return self.record

    def _line(self, raw: bytes) -> None:
        decoded = raw.decode("utf-8", "replace")
        text = decoded.rstrip("\r\n").rsplit("\r", 1)[-1]  # a tqdm bar redrawn with \r: its last state
        self.tail.append(text)
        if len(self.tail) > 400:
            del self.tail[:200]
        self._emit(LogLine(text, time.time()))
        n0 = self.parser._count
        events = self.parser.feed(decoded if decoded.endswith("\n") else decoded + "\n")
        for ll in self.parser.lines[-(self.parser._count - n0):] if self.parser._count > n0 else ():
            self.tracker.observe_line(ll)
        for ev in events:
            self.tracker.observe(ev)
            self._emit(LogEvent(ev))
        sig = tuple((p.key, p.status, p.detail) for p in self.tracker.phases())
        if sig != self._phase_sig:
            self._phase_sig = sig
            self._emit(PhaseChanged(tuple(self.tracker.phases())))

    def summary(self) -> StartupSummary:
        """What the log said so far (vllm_log.StartupSummary)."""
        return self.tracker.summary()

    def _follow(self, proc: subprocess.Popen, log: RotatingLog) -> None:
        """Detached: read the log file the server writes, line by line, until it exits."""
        log.close()
        with open(self.log_path, "rb") as f:
            f.readline()  # our "+ argv" line
            buf = b""
            while True:
                chunk = f.readline()
                if chunk:
                    buf += chunk
                    if buf.endswith(b"\n"):
                        self._line(buf)
                        buf = b""
                    continue
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        self._emit(Exited(proc.returncode, self._stopped_by_us))

    def _pump(self, proc: subprocess.Popen, log: RotatingLog) -> None:
        assert proc.stdout is not None
        try:
            for raw in iter(proc.stdout.readline, b""):
                log.write(raw)
                self._line(raw)
        finally:
            rc = proc.wait()
            log.write(f"[spark-tui] vLLM exited with {rc}\n".encode())
            log.close()
            if self.record is not None and not group_alive(self.record.pgid):
                self.record.path().unlink(missing_ok=True)
            self._emit(Exited(rc, self._stopped_by_us))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def release(self) -> ServerRecord | None:
        """Let a keepable server outlive us: the watchdog stands down (SIGUSR1) and the record says detached,
        so only `spark-tui stop` ends it. Returns the record (None when nothing was started)."""
        if self.watchdog is not None:
            try:
                self.watchdog.send_signal(signal.SIGUSR1)
                self.watchdog.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.watchdog.kill()
            self.watchdog = None
        self.detach, self.keepable = True, False
        if self.record is not None:
            self.record = replace(self.record, detached=True, watchdog_pid=None)
            self.record.save()
        return self.record

    def probe_ready(self, timeout: float = 2.0) -> tuple[str, ...] | None:
        """The served model ids when /health is 200 and /v1/models lists the model, else None."""
        import httpx

        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        try:
            with httpx.Client(timeout=timeout, headers=headers) as c:
                if c.get(self.url + "/health").status_code != 200:
                    return None
                r = c.get(self.url + "/v1/models")
                if r.status_code != 200:
                    return None
                ids = tuple(m.get("id") for m in r.json().get("data", []))
        except (httpx.HTTPError, ValueError):
            return None
        want = self.served_model_name or self.model
        return ids if want in ids or (not self.served_model_name and ids) else None

    def wait_ready(self, timeout_s: float, poll_s: float = 0.5,
                   diagnose: Callable[[list[str]], str | None] | None = None) -> Ready:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                if self._reader:
                    self._reader.join(timeout=5)
                rc = self.proc.returncode if self.proc else None
                raise VllmError(f"vLLM exited with code {rc} during startup{self._diagnosis(diagnose)}",
                                f"full log: {self.log_path}")
            ids = self.probe_ready()
            if ids is not None:
                ev = Ready(self.url, time.time() - self.started_at, ids)
                self._emit(ev)
                return ev
            time.sleep(poll_s)
        tail = self.log_lines()
        self.stop()
        raise VllmError(f"vLLM did not become ready within {timeout_s:.0f} s; it was stopped"
                        f"{self._diagnosis(diagnose, tail)}",
                        f"raise --startup-timeout if it was still making progress; full log: {self.log_path}")

    def log_lines(self, max_bytes: int = 2 * 1024**2) -> list[str]:
        """The end of the server log (the file when readable, else the in-memory tail)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - max_bytes))
                return f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return list(self.tail)

    def _diagnosis(self, diagnose: Callable[[list[str]], str | None] | None, tail: list[str] | None = None) -> str:
        lines = self.log_lines() if tail is None else list(tail)
        if diagnose is not None:
            try:
                d = diagnose(lines)
                if d:
                    return "\n" + d
            except Exception:  # noqa: BLE001 - a diagnosis must never hide the failure
                pass
        last = [ln for ln in lines if ln.strip()][-8:]
        return ("\nlast log lines:\n  " + "\n  ".join(last)) if last else ""

    def stop(self, grace_s: float | None = None) -> str:
        """SIGTERM the group, SIGKILL after the grace period; remove the state file; end the watchdog."""
        if self.proc is None:
            return "gone"
        self._stopped_by_us = True
        grace = self.grace_s if grace_s is None else grace_s
        if self.alive():
            how = stop_group(os.getpgid(self.proc.pid), grace)
        elif self.record is not None:  # the leader is reaped: its pgid may be free for reuse, so check first
            how = stop_server(self.record, grace)
        else:
            how = "gone"
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if self._reader:
            self._reader.join(timeout=5)
        if self.watchdog is not None:
            try:
                self.watchdog.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.watchdog.kill()
                self.watchdog.wait(timeout=2)
        if self.record is not None:
            self.record.path().unlink(missing_ok=True)
        return how


def plan_summary(plan: Plan) -> dict[str, Any]:
    """What the state file and the plan check keep of a plan."""
    mem = plan.memory
    fc = plan.flag("--moe-backend")
    base = getattr(plan, "baseline", None)
    return {"device": plan.device.id, "checkpoint": plan.checkpoint.repo_id, "format": plan.checkpoint.format,
            "goal": plan.goal, "kv_cache_tokens": getattr(mem, "kv_cache_tokens", None),
            "moe_backend": fc.text if fc else (base.moe_backend if base is not None else None)}


def plan_env(plan: Plan) -> dict[str, str]:
    """The environment a plan's server gets on top of ours: the plan's env, and loopback internals."""
    env = dict(plan.env_dict())
    if plan.host in ("127.0.0.1", "localhost") and "VLLM_HOST_IP" not in os.environ:
        env["VLLM_HOST_IP"] = "127.0.0.1"  # keep vLLM's internal sockets on loopback too
    return env


def resolve_api_key(env_name: str | None = API_KEY_ENV, key_file: str | None = None) -> str | None:
    """The API key for a server: from key_file (a regular file of yours, mode 0600, holding the key or a
    `VLLM_API_KEY=key` line as `spark-tui export --generate-api-key` writes), else from the variable env_name.
    None when neither gives one. Never echoes the key, nor a name that may be one."""
    import re
    import stat

    if key_file:
        try:
            st = os.stat(key_file)
        except OSError as e:
            raise UsageError(f"cannot read the API key file {key_file} ({e.strerror})", "give an existing file") from None
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"the API key file {key_file} is not a regular file", "give a file holding the key")
        if st.st_mode & 0o077 or st.st_uid != os.getuid():
            raise UsageError(f"the API key file {key_file} is readable by others (mode {stat.S_IMODE(st.st_mode):o}) "
                             "or not yours", f"chmod 600 {key_file} (and own it)")
        try:
            with open(key_file, encoding="utf-8") as f:
                text = f.read(4097)
        except (OSError, UnicodeDecodeError):
            raise UsageError(f"cannot read the API key file {key_file}", "it must be a short UTF-8 text file") from None
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        key = lines[0] if len(lines) == 1 and len(text) <= 4096 else ""
        if key.startswith(API_KEY_ENV + "="):
            key = key[len(API_KEY_ENV) + 1:].strip().strip("'\"")
        if not key or any(c.isspace() or not c.isprintable() for c in key):
            raise UsageError(f"the API key file {key_file} does not hold one key",
                             f"write the key alone on one line, or {API_KEY_ENV}=<key>")
        return key
    if not env_name:
        return None
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env_name):
        raise UsageError("--api-key-env takes the name of an environment variable, not the key itself",
                         f"e.g. --api-key-env {API_KEY_ENV}, with the key in that variable")
    from_env = os.environ.get(env_name)
    if from_env is None and env_name != API_KEY_ENV:
        raise UsageError("the variable given to --api-key-env is not set", "export it with the API key first")
    return from_env or None


def supervisor_for_plan(plan: Plan, *, port: int | None = None, runtime: str = "native", detach: bool = False,
                        image: str | None = None, keepable: bool = False, api_key: str | None = None) -> "Supervisor":
    """A Supervisor (not started) for a plan: the argv for the runtime, the plan's env, loopback internals.
    `spark-tui launch`, `spark-tui tune` and the TUI's Run screen all start servers through this.

    A non-loopback bind (0.0.0.0, ::, a LAN address) needs an API key: `api_key`, else $VLLM_API_KEY;
    UsageError (exit 2) without one, as `spark-tui export` refuses. The key goes into the server's
    environment as VLLM_API_KEY (docker: `-e VLLM_API_KEY`, by name), never onto a command line."""
    from spark_tui.core.export import formats as ex

    port = port or plan.port
    host = ex.effective_host(plan)
    key = api_key or os.environ.get(API_KEY_ENV) or None
    if not ex.is_loopback(host) and not key:
        raise UsageError(
            f"refusing to serve on {host} without an API key: anyone who can reach this machine could use it",
            f"export {API_KEY_ENV}=<key> (vLLM reads it from its environment; clients send 'Authorization: Bearer "
            "<key>'), or pass --api-key-file FILE (mode 0600) or --api-key-env NAME; or keep --host 127.0.0.1")
    if runtime == "docker":
        if shutil.which("docker") is None:
            raise VllmError("docker is not installed or not on PATH", "install docker, or use --runtime native")
        argv = docker_argv(plan, port=port, image=image, name=f"spark-tui-vllm-{port}",
                           secret_names=(API_KEY_ENV,) if key else ())
    else:
        argv = native_argv(plan, resolve_vllm(), port=port)
    env = plan_env(plan)
    if key:
        env[API_KEY_ENV] = key
    return Supervisor(argv, host=host, port=port, model=plan.model, served_model_name=plan.served_model_name,
                      env=env, detach=detach, runtime=runtime, plan_summary=plan_summary(plan), keepable=keepable,
                      api_key=key)


def install_signal_handlers(sup: Supervisor, interrupt_exit_code: int = 0) -> None:
    """SIGTERM / SIGHUP (terminal closed) / SIGINT (Ctrl-C) in spark-tui stop the server group, then exit.

    Done in the handler itself, then os._exit: a Ctrl-C that lands inside a library call, an import or a lock must not
    leave the process to unwind through code that may hold what the stop needs, nor to wait at interpreter exit for
    threads (a foreground `launch` was once seen not to exit 40 s after SIGINT under a loaded test run). SIGINT exits
    with `interrupt_exit_code` (a Ctrl-C is how a foreground launch is meant to end), the others with 128 + signal."""

    def say(text: str) -> None:
        try:
            os.write(2, text.encode())
        except OSError:
            pass

    def handler(signum: int, frame: Any) -> None:
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        if signum == signal.SIGINT:
            say("\nstopping vLLM...\n")
        how = "not stopped"
        try:
            how = sup.stop()
        finally:
            say(f"vLLM stopped ({how})\n")
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError, RuntimeError):
                    pass
            os._exit(interrupt_exit_code if signum == signal.SIGINT else 128 + signum)

    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, handler)


def find_servers(pid: int | None = None) -> list[ServerRecord]:
    recs = list_servers()
    if pid is None:
        return recs
    found = [r for r in recs if r.pid == pid or r.pgid == pid]
    if not found:
        raise UsageError(f"no running server launched by spark-tui has pid {pid}",
                         "list them with `spark-tui stop` (no arguments)")
    return found


def _main(argv: Iterable[str]) -> int:
    args = list(argv)
    if len(args) == 4 and args[0] == "--watchdog":
        return watchdog_main(int(args[1]), int(args[2]), float(args[3]))
    print("usage: python -m spark_tui.core.runtime.supervisor --watchdog PARENT_PID PGID GRACE_S", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
