"""Render one `Plan` as launch artifacts: bash, docker, compose, systemd, k8s, ray.

Pure functions, one per format (`to_bash(plan, opts)` ...), each returning the exact text of the files to
write, so tests assert them as strings (posting's `RequestModel.to_curl()` pattern). Rendering reads
neither the environment nor the disk; spark_tui.core.export.files writes them (atomically, all or nothing,
never onto a device node, FIFO, directory or symbolic link).

Quoting, per target:
- bash: every word through `shlex.quote`.
- YAML (compose, k8s): PyYAML's safe dumper (`to_yaml`), which quotes every string that would read as another
  type and escapes control characters, so no value can change type or structure. Compose interpolates `$` in
  values and Kubernetes expands `$(VAR)` in args; both take `$$` for a literal `$`, so literal `$` is doubled there.
- systemd: every ExecStart word double-quoted with C escapes, `%` -> `%%` (specifiers), `$` -> `$$`
  (variable expansion) (systemd.syntax(7), systemd.service(5) "Command lines").

Secrets (HF_TOKEN, the API key) appear only as references to environment variables, env files or
Kubernetes secrets, never as values. vLLM reads the API key from `VLLM_API_KEY` when `--api-key` is not
given (vllm/entrypoints/serve/middleware/register.py: `args.api_key or [envs.VLLM_API_KEY]`, checked in
the 0.32.0 CPU wheel), so the key never needs to be on a command line.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, replace

from spark_tui.core.planning.plan import Plan
from spark_tui.errors import UsageError

FORMATS = ("bash", "docker", "compose", "systemd", "k8s", "ray")

API_KEY_ENV = "VLLM_API_KEY"  # vllm/envs.py: the variable vLLM reads its API key from
HF_TOKEN_ENV = "HF_TOKEN"
# The official image. Its Dockerfile ends with `FROM vllm-openai-base AS vllm-openai` /
# `ENTRYPOINT ["vllm", "serve"]` (vllm-project/vllm docker/Dockerfile @ dead20ba), so a container's
# arguments start with the model. Tag `v<version>` matches the plan's vLLM version.
IMAGE_REPO = "vllm/vllm-openai"
DEFAULT_IMAGE_TAG = "latest"  # used only when the plan names no vLLM version
CONTAINER_HF_CACHE = "/root/.cache/huggingface"  # HF cache inside the official image (runs as root)
RAY_PORT = 6379  # `ray start --head` default GCS port, as in vLLM's examples/online_serving/multi-node-serving.sh

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# names the shell itself sets or reads while running the generated scripts: refused as plan env
_SHELL_NAMES = frozenset(
    "_ IFS PWD OLDPWD SHLVL SHELLOPTS BASHOPTS BASH_ENV ENV BASH_XTRACEFD PS4 UID EUID PPID "
    "RANDOM SECONDS LINENO BASHPID HOME PATH".split()
)
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")


@dataclass(frozen=True)
class ExportOptions:
    """Deployment details that are not part of the plan. Defaults give a reproducible output."""

    api_key_env: str | None = None  # env var holding the API key at run time; required off loopback
    env_file: str | None = None  # file of NAME=value secret lines (e.g. from --generate-api-key)
    image: str | None = None  # container image; default vllm/vllm-openai:v<plan.vllm_version>
    vllm_bin: str = "vllm"  # the vllm executable for bash/systemd/ray (a venv path, or found on PATH)
    name: str = "spark-tui-vllm"  # container / service / k8s object name
    user: str = "vllm"  # systemd User=
    working_directory: str = "/var/lib/vllm"  # systemd WorkingDirectory=
    systemd_env_file: str = "/etc/spark-tui/vllm.env"  # systemd EnvironmentFile= when env_file is unset
    namespace: str | None = None  # k8s namespace
    queue_name: str | None = None  # k8s: Kueue LocalQueue (label kueue.x-k8s.io/queue-name)
    k8s_secret: str = "spark-tui-vllm-secrets"  # k8s Secret holding HF_TOKEN / the API key
    pvc_size: str = "100Gi"  # k8s HF cache volume
    shm_size: str = "16Gi"  # k8s /dev/shm (emptyDir medium Memory)
    nodes: int | None = None  # ray: number of nodes (default plan.nodes, at least 2)
    ray_layout: str = "pp"  # ray: "pp" = TP within a node, PP across nodes (vLLM docs); "tp" = TP across
    ifname: str | None = None  # ray: NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME on every node (else from the env)
    head_ifname: str | None = None  # ray: the head's interface when it differs (wins over ifname on the head)
    worker_ifname: str | None = None  # ray: the workers' interface (wins over ifname on the workers)


@dataclass(frozen=True)
class ExportFile:
    name: str  # file name to use with -o DIR
    content: str
    executable: bool = False


# ---------------------------------------------------------------------------------------------------
# the serve command


def _pairs(plan: Plan) -> list[tuple[str, str | None]]:
    return [(f.name, f.text) for f in plan.flags]


def _get(pairs: list[tuple[str, str | None]], flag: str) -> str | None:
    for f, v in pairs:
        if f == flag:
            return v
    return None


def _has(pairs: list[tuple[str, str | None]], flag: str) -> bool:
    return any(f == flag for f, _ in pairs)


def _set(pairs: list[tuple[str, str | None]], flag: str, value: str | None) -> list[tuple[str, str | None]]:
    """Replace the value of `flag` (all occurrences) or append it."""
    if _has(pairs, flag):
        return [(f, value if f == flag else v) for f, v in pairs]
    return [*pairs, (flag, value)]


def _drop(pairs: list[tuple[str, str | None]], flag: str) -> list[tuple[str, str | None]]:
    return [(f, v) for f, v in pairs if f != flag]


def _flatten(pairs: list[tuple[str, str | None]]) -> list[str]:
    out: list[str] = []
    for f, v in pairs:
        out += [f] if v is None else [f, v]
    return out


def serve_pairs(plan: Plan) -> list[tuple[str, str | None]]:
    """The plan's flags as (flag, text) pairs, exactly as `spark-tui plan` prints them (one flag model: host, port,
    names and parallel sizes are flags of the plan, never added here)."""
    return _pairs(plan)


def serve_argv(plan: Plan, vllm_bin: str = "vllm") -> list[str]:
    """`vllm serve MODEL FLAGS...`: plan.argv() with another program name."""
    return [vllm_bin, "serve", plan.model, *_flatten(serve_pairs(plan))]


def effective_host(plan: Plan) -> str:
    return plan.host


def effective_port(plan: Plan) -> int:
    port = plan.port
    if not 0 < port < 65536:
        raise UsageError(f"port {port} is out of range", "give --port an integer 1-65535")
    return port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parallel_sizes(plan: Plan) -> tuple[int, int, int]:
    """(tensor, pipeline, data) parallel sizes of one server, from its flags (the Plan fields fill in missing ones)."""
    pairs = serve_pairs(plan)
    sizes = []
    for flag in ("--tensor-parallel-size", "--pipeline-parallel-size", "--data-parallel-size"):
        raw = _get(pairs, flag) or "1"
        if not raw.isdigit() or int(raw) < 1:
            raise UsageError(f"{flag} {raw!r} is not a GPU count", f"give {flag} a positive integer")
        sizes.append(int(raw))
    return sizes[0], sizes[1], sizes[2]


def gpus_per_replica(plan: Plan) -> int:
    """GPUs one server process uses: tensor x pipeline x data parallel (vLLM's world size times DP)."""
    tp, pp, dp = parallel_sizes(plan)
    return tp * pp * dp


# A plan pinned to GPUs carries CUDA_VISIBLE_DEVICES (NVML indices, with CUDA_DEVICE_ORDER=PCI_BUS_ID:
# spark_tui.core.hardware.gpus). A container given only those GPUs numbers them from 0, so there the pin becomes the
# device selection (docker --gpus "device=...", compose device_ids) and the variables are left out.
PIN_ENV = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")


def pinned_gpus(plan: Plan) -> list[str] | None:
    """The GPU ids (NVML indices or UUIDs) the plan pins to, or None when it uses any GPU."""
    raw = plan.env_dict().get("CUDA_VISIBLE_DEVICES")
    if raw is None or not raw.strip():
        return None
    ids = [x.strip() for x in raw.split(",") if x.strip()]
    if not all(re.fullmatch(r"[0-9]+|(GPU|MIG)-[0-9A-Za-z/-]+", x) for x in ids):
        raise UsageError(f"CUDA_VISIBLE_DEVICES={raw!r} is not a list of GPU indices or UUIDs",
                         "pin with --gpu-index N, or --set CUDA_VISIBLE_DEVICES=0,1")
    need = gpus_per_replica(plan)
    if len(ids) < need:
        raise UsageError(f"the plan pins {len(ids)} GPU(s) (CUDA_VISIBLE_DEVICES={raw}) but one server needs {need} "
                         "(tensor x pipeline x data parallel)", "pin as many GPUs as the parallel sizes multiply to")
    return ids


def container_env(plan: Plan) -> list:
    """The plan's environment inside a container: without the pin variables (see PIN_ENV)."""
    if pinned_gpus(plan) is None:
        return list(plan.env)
    return [e for e in plan.env if e.name not in PIN_ENV]


@dataclass(frozen=True)
class _Secrets:
    required: tuple[str, ...]  # names the container / process must get (the API key)
    optional: tuple[str, ...]  # passed through when set (HF_TOKEN: only gated repos need it)
    api_key_source: str | None  # the env var the user holds the API key in (maps to VLLM_API_KEY)


def _secrets(plan: Plan, opts: ExportOptions, *, force_api_key: bool = False) -> _Secrets:
    for n in plan.secret_env:
        if not _ENV_NAME.match(n):
            raise UsageError(f"{n!r} is not an environment variable name", "use letters, digits and _")
    if opts.api_key_env and not _ENV_NAME.match(opts.api_key_env):
        # not echoed: what was passed may be the key itself, and error output ends up in terminals and CI logs
        raise UsageError("--api-key-env takes the name of an environment variable, not the key itself",
                         f"e.g. --api-key-env {API_KEY_ENV} (letters, digits and _), with the key in that variable")
    host = effective_host(plan)
    need_key = force_api_key or not is_loopback(host) or opts.api_key_env is not None or API_KEY_ENV in plan.secret_env
    if not is_loopback(host) and opts.api_key_env is None and opts.env_file is None and API_KEY_ENV not in plan.secret_env:
        raise UsageError(
            f"refusing to export a server listening on {host} without an API key",
            f"add --api-key-env {API_KEY_ENV} (the variable that will hold the key at run time) or "
            "--generate-api-key, or keep the default --host 127.0.0.1",
        )
    optional = tuple(n for n in plan.secret_env if n == HF_TOKEN_ENV)
    required = tuple(n for n in plan.secret_env if n not in optional and n != API_KEY_ENV)
    if need_key:
        required = (*required, API_KEY_ENV)
    src = opts.api_key_env if (need_key and opts.api_key_env and opts.api_key_env != API_KEY_ENV) else None
    return _Secrets(required=required, optional=optional, api_key_source=src)


def _check_name(opts: ExportOptions) -> None:
    if len(opts.name) > 63 or not _K8S_NAME.match(opts.name):
        raise UsageError(f"--name {opts.name!r} is not a usable name", "use lower-case letters, digits and -")


def _check_env(plan: Plan) -> None:
    """What no target can carry: bad environment names, NUL bytes (argv and env are C strings)."""
    for e in plan.env:
        if not _ENV_NAME.match(e.name):
            raise UsageError(f"{e.name!r} is not an environment variable name", "use letters, digits and _")
        if e.name in _SHELL_NAMES:
            raise UsageError(f"{e.name} is managed by the shell, not a vLLM setting", f"remove {e.name} from the plan")
    words = [plan.model, *(e.value for e in plan.env), *(w for f in plan.flags for w in f.argv())]
    if any("\0" in w for w in words):
        raise UsageError("a plan value contains a NUL byte", "remove the NUL character from the value")


def image_for(plan: Plan, opts: ExportOptions) -> str:
    if opts.image:
        return opts.image
    if plan.vllm_version:
        v = plan.vllm_version
        return f"{IMAGE_REPO}:{v if v.startswith('v') else 'v' + v}"
    return f"{IMAGE_REPO}:{DEFAULT_IMAGE_TAG}"


def _comment(text: str) -> str:
    """One comment line's text: no line breaks or control characters can end the comment."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


def _header(plan: Plan, fmt: str, prefix: str = "# ") -> list[str]:
    from spark_tui import __version__

    lines = [
        f"Generated by spark-tui {__version__} (export --format {fmt}). Edit the plan, not this file.",
        f"Device: {plan.device.name}; checkpoint: {plan.checkpoint.repo_id}; goal: {plan.goal}; "
        f"vLLM: {plan.vllm_version or 'unspecified'}.",
    ]
    return [prefix + _comment(s) for s in lines]


# ---------------------------------------------------------------------------------------------------
# bash


def _q(s: str) -> str:
    return shlex.quote(s)


def _bash_continued(words: list[list[str]], indent: str = "  ") -> str:
    """Lines of already-quoted words joined with ` \\` continuations; the first line unindented."""
    lines = [" ".join(words[0])] + [indent + " ".join(w) for w in words[1:]]
    return " \\\n".join(lines)


def _argv_lines(first: list[str], pairs: list[tuple[str, str | None]], positional: list[str]) -> list[list[str]]:
    lines = [[_q(w) for w in first]]
    lines += [[_q(p)] for p in positional]
    lines += [[_q(f)] if v is None else [_q(f), _q(v)] for f, v in pairs]
    return lines


def _bash_secret_lines(sec: _Secrets, opts: ExportOptions) -> list[str]:
    out: list[str] = []
    if opts.env_file:
        out += [
            f"# Secrets (NAME=value lines, mode 0600) come from {_comment(opts.env_file)}.",
            "set -a",
            f"# shellcheck source=/dev/null\n. {_q(opts.env_file)}",
            "set +a",
        ]
    if sec.api_key_source:
        out.append(
            f'export {API_KEY_ENV}="${{{sec.api_key_source}:?set {sec.api_key_source} to the API key clients must send}}"'
        )
    for n in sec.required:
        if n == API_KEY_ENV and sec.api_key_source:
            continue
        # constant text only: the message is expanded by bash
        why = "the API key clients must send" if n == API_KEY_ENV else "a required secret"
        out.append(f': "${{{n}:?set {n}: {why}}}"')
    for n in sec.optional:
        out.append(f"# {n} is passed through from the environment when set (only gated repos need it).")
    return out


def to_bash(plan: Plan, opts: ExportOptions | None = None) -> str:
    """A bash script that execs `vllm serve` with the plan's argv and environment."""
    opts = opts or ExportOptions()
    _check_env(plan)
    sec = _secrets(plan, opts)
    lines = ["#!/usr/bin/env bash", *_header(plan, "bash"), "set -euo pipefail", ""]
    for e in plan.env:
        lines.append(f"export {e.name}={_q(e.value)}")
    lines += _bash_secret_lines(sec, opts)
    if lines[-1] != "":
        lines.append("")
    lines.append("exec " + _bash_continued(_argv_lines([opts.vllm_bin, "serve"], serve_pairs(plan), [plan.model])))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# docker


def container_pairs(plan: Plan) -> list[tuple[str, str | None]]:
    """Flags inside a container: vLLM must listen on all the container's interfaces for the published
    port to reach it; what the host exposes is decided by the `-p HOST:PORT:PORT` binding instead."""
    return _set(serve_pairs(plan), "--host", "0.0.0.0")


def model_mount(plan: Plan) -> str | None:
    """A local checkpoint (absolute path) is bind-mounted read-only at the same path in the container."""
    if not plan.model.startswith("/"):
        return None
    if ":" in plan.model or "," in plan.model or not plan.model.isprintable():
        raise UsageError(f"cannot bind-mount the model path {plan.model!r} into a container",
                         "move the checkpoint to a path without ':' ',' or control characters")
    return f"{plan.model}:{plan.model}:ro"


def container_args(plan: Plan) -> list[str]:
    """The container's arguments (the image's entrypoint is `vllm serve`)."""
    return [plan.model, *_flatten(container_pairs(plan))]


def _publish(host: str, port: int) -> str:
    """`-p HOST:PORT:PORT`: Docker publishes on an IP address, not a host name."""
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise UsageError(f"docker publishes ports on an IP address, not {host!r}",
                         "give --host an IP address (127.0.0.1, 0.0.0.0 or this machine's address)") from None
    h = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"{h}:{port}:{port}"


def docker_gpus(plan: Plan) -> str:
    """`--gpus` value: the pinned devices ("device=1", quoted for docker's CSV parser when several), else all."""
    ids = pinned_gpus(plan)
    if ids is None:
        return "all"
    return f'"device={",".join(ids)}"' if len(ids) > 1 else f"device={ids[0]}"


def to_docker(plan: Plan, opts: ExportOptions | None = None) -> str:
    """A bash script running the official vllm-openai image with the plan's flags."""
    opts = opts or ExportOptions()
    _check_env(plan)
    sec = _secrets(plan, opts)
    host, port = effective_host(plan), effective_port(plan)
    lines = ["#!/usr/bin/env bash", *_header(plan, "docker"), "set -euo pipefail", ""]
    if sec.api_key_source:
        lines.append(
            f'export {API_KEY_ENV}="${{{sec.api_key_source}:?set {sec.api_key_source} to the API key clients must send}}"'
        )
    for n in sec.required:
        if n == API_KEY_ENV and (sec.api_key_source or opts.env_file):
            continue
        lines.append(f': "${{{n}:?set {n} (a secret passed to the container by name)}}"')
    for n in sec.optional:
        lines.append(f"# {n} is passed through from the environment when set (only gated repos need it).")
    if lines[-1] != "":
        lines.append("")
    words: list[list[str]] = [
        ["docker", "run", "--rm", "--name", _q(opts.name)],
        ["--gpus", _q(docker_gpus(plan))],
        ["--ipc=host"],
        ["-p", _q(_publish(host, port))],
        ["-v", f'"${{HOME}}/.cache/huggingface:{CONTAINER_HF_CACHE}"'],
    ]
    if mount := model_mount(plan):
        words.append(["-v", _q(mount)])
    if opts.env_file:
        words.append(["--env-file", _q(opts.env_file)])
    for n in (*sec.optional, *sec.required):
        if opts.env_file and n == API_KEY_ENV and not sec.api_key_source:
            continue
        words.append(["-e", n])
    for e in container_env(plan):
        words.append(["-e", _q(f"{e.name}={e.value}")])
    words.append([_q(image_for(plan, opts))])
    words += [[_q(plan.model)]]
    words += [[_q(f)] if v is None else [_q(f), _q(v)] for f, v in container_pairs(plan)]
    lines.append("exec " + _bash_continued(words))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# YAML


# YAML 1.2 (what compose-go and kubectl read: Go yaml) reads these plain scalars as numbers where YAML 1.1 (PyYAML's
# resolver) reads strings: 0o17 (octal) and an exponent without a dot (1e3). The dumper below resolves them as numbers
# too, so strings that look like them are quoted and every reader sees the same string.
_YAML12_INT = re.compile(r"^[-+]?0o[0-7]+$")
_YAML12_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")


def _dumper() -> type:
    import yaml

    class Dumper(yaml.SafeDumper):
        """safe_dump's dumper (safe representers only), quoting the strings YAML 1.1 and 1.2 resolve differently,
        and writing a value used twice (the k8s probes) twice rather than as an anchor and alias."""

        def ignore_aliases(self, data: object) -> bool:
            return True

    Dumper.add_implicit_resolver("tag:yaml.org,2002:int", _YAML12_INT, list("-+0"))
    Dumper.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+.0123456789"))
    return Dumper


def to_yaml(obj: object) -> str:
    """Block-style YAML through PyYAML's safe dumper, keys in the order given, one value a line. Quoting is the
    library's: a string that would read as another type (true, null, 8000, 1e3, ...) is quoted, one with control or
    non-ASCII characters is double-quoted with escapes (the file stays ASCII: line-break characters such as U+2028
    cannot split a value for a YAML 1.2 reader), so no value can change type or structure."""
    import yaml  # lazy: `spark-tui export --format bash` and the CLI's fast paths never import it

    return yaml.dump(obj, Dumper=_dumper(), sort_keys=False, default_flow_style=False, allow_unicode=False,
                     width=1 << 30)


def dollar_escape(s: str) -> str:
    """Compose interpolation and Kubernetes $(VAR) expansion both read `$$` as a literal `$`."""
    return s.replace("$", "$$")


# ---------------------------------------------------------------------------------------------------
# compose


def compose_gpu_device(plan: Plan) -> dict[str, object]:
    """The GPU reservation: `device_ids` when the plan pins GPUs, else `count` (they exclude each other in the
    Compose spec, deploy.resources.reservations.devices)."""
    ids = pinned_gpus(plan)
    if ids is not None:
        return {"driver": "nvidia", "device_ids": ids, "capabilities": ["gpu"]}
    return {"driver": "nvidia", "count": gpus_per_replica(plan), "capabilities": ["gpu"]}


def to_compose(plan: Plan, opts: ExportOptions | None = None) -> str:
    """A docker compose file with one GPU service running the official image."""
    opts = opts or ExportOptions()
    _check_env(plan)
    sec = _secrets(plan, opts)
    host, port = effective_host(plan), effective_port(plan)
    env: dict[str, str] = {e.name: dollar_escape(e.value) for e in container_env(plan)}
    for n in sec.optional:
        env[n] = f"${{{n}:-}}"
    for n in sec.required:
        if opts.env_file and n == API_KEY_ENV and not sec.api_key_source:
            continue  # comes from env_file
        src = sec.api_key_source if (n == API_KEY_ENV and sec.api_key_source) else n
        env[n] = f"${{{src}:?set {src} (a secret read from the environment)}}"
    volumes = [f"${{HOME}}/.cache/huggingface:{CONTAINER_HF_CACHE}"]
    if mount := model_mount(plan):
        volumes.append(dollar_escape(mount))
    service: dict[str, object] = {
        "image": dollar_escape(image_for(plan, opts)),
        "container_name": opts.name,
        "command": [dollar_escape(a) for a in container_args(plan)],
        "ports": [dollar_escape(_publish(host, port))],
        "ipc": "host",
        "volumes": volumes,
    }
    if opts.env_file:
        service["env_file"] = [dollar_escape(opts.env_file)]
    service["environment"] = env
    service["deploy"] = {
        "resources": {
            "reservations": {
                "devices": [compose_gpu_device(plan)]
            }
        }
    }
    service["healthcheck"] = {
        # curl is installed in the vllm-base stage of vLLM's Dockerfile
        "test": ["CMD", "curl", "-fsS", f"http://127.0.0.1:{port}/health"],
        "interval": "30s",
        "timeout": "5s",
        "retries": 5,
        "start_period": "30m",  # download + load + CUDA graph capture of a 35B checkpoint
    }
    service["restart"] = "unless-stopped"
    head = "\n".join(_header(plan, "compose")) + "\n"
    return head + to_yaml({"services": {"vllm": service}})


# ---------------------------------------------------------------------------------------------------
# systemd


def systemd_quote(word: str) -> str:
    """One ExecStart word, double-quoted, with systemd's C escapes, `%%` and `$$`."""
    out = []
    for ch in word:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "%":
            out.append("%%")
        elif ch == "$":
            out.append("$$")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif not ch.isprintable():
            out.append(f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _systemd_env(name: str, value: str) -> str:
    """`Environment="NAME=value"`: quotes and C escapes apply, `%` is a specifier, `$` is literal."""
    q = systemd_quote(f"{name}={value}").replace("$$", "$")
    return f"Environment={q}"


def _systemd_text(s: str) -> str:
    return _comment(s).replace("%", "%%")


def _systemd_path(label: str, path: str) -> str:
    """A path setting (EnvironmentFile=, WorkingDirectory=): taken verbatim by systemd, so no quotes;
    specifiers still apply (`%%`)."""
    if not path.startswith("/") or not path.isprintable() or path != path.strip():
        raise UsageError(f"{label} {path!r} is not a usable absolute path", "give an absolute path without control characters")
    return path.replace("%", "%%")


def to_systemd(plan: Plan, opts: ExportOptions | None = None) -> str:
    """A systemd service unit running `vllm serve`; secrets come from an EnvironmentFile only."""
    opts = opts or ExportOptions()
    _check_env(plan)
    sec = _secrets(plan, opts)
    if sec.api_key_source:
        raise UsageError(
            f"systemd cannot rename {sec.api_key_source} to {API_KEY_ENV}",
            f"write {API_KEY_ENV}=... into the EnvironmentFile and use --api-key-env {API_KEY_ENV}",
        )
    env_file = opts.env_file or opts.systemd_env_file
    if not re.match(r"[a-z_][a-z0-9_-]*[$]?\Z", opts.user, re.I):
        raise UsageError(f"--user {opts.user!r} is not a user name", "give an existing system user, e.g. vllm")
    argv = serve_argv(plan, opts.vllm_bin)
    exe = [opts.vllm_bin] if opts.vllm_bin.startswith("/") else ["/usr/bin/env", opts.vllm_bin]
    words = [systemd_quote(w) for w in exe + argv[1:]]
    # a `-` prefix lets the unit start without the file when no secret is required
    env_line = f"EnvironmentFile={'' if sec.required else '-'}{_systemd_path('env file', env_file)}"
    names = ", ".join((*sec.required, *sec.optional)) or "none"
    lines = [
        *_header(plan, "systemd"),
        f"# Secrets ({names}) are read from {_comment(env_file)} (NAME=value lines, mode 0600), never stored here.",
        "[Unit]",
        f"Description=vLLM serving {_systemd_text(plan.served_model_name or plan.model)} (spark-tui)",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=exec",
        f"User={opts.user}",
        f"WorkingDirectory={_systemd_path('--workdir', opts.working_directory)}",
        *[_systemd_env(e.name, e.value) for e in plan.env],
        env_line,
        "ExecStart=" + " \\\n    ".join(words),
        "Restart=on-failure",
        "RestartSec=10",
        # vLLM shuts down cleanly on SIGINT (like Ctrl-C); give it time to stop its engine processes
        "KillSignal=SIGINT",
        "TimeoutStopSec=60",
        "TimeoutStartSec=infinity",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# kubernetes


def _k8s_checked(opts: ExportOptions) -> None:
    for label, v in (("--name", opts.name), ("--namespace", opts.namespace), ("--k8s-secret", opts.k8s_secret)):
        if v is not None and (len(v) > 63 or not _K8S_NAME.match(v)):
            raise UsageError(f"{label} {v!r} is not a Kubernetes name", "use lower-case letters, digits and -")
    if opts.queue_name is not None and (len(opts.queue_name) > 63 or not _K8S_NAME.match(opts.queue_name)):
        raise UsageError(f"--queue-name {opts.queue_name!r} is not a Kueue queue name", "use a LocalQueue name")


def to_k8s(plan: Plan, opts: ExportOptions | None = None) -> str:
    """PersistentVolumeClaim + Deployment + Service. A Service is reachable from the whole cluster, so
    the API key is always required here, from the Secret `opts.k8s_secret`."""
    opts = opts or ExportOptions()
    _check_env(plan)
    _k8s_checked(opts)
    if plan.model.startswith("/"):
        raise UsageError(f"the pod cannot see the local model path {plan.model}",
                         "export a Hugging Face repo id (--checkpoint): the pod downloads it into its cache volume")
    sec = _secrets(plan.with_flag("--host", "0.0.0.0", "a Service is reachable cluster-wide", "spark-tui"),
                   replace(opts, api_key_env=API_KEY_ENV), force_api_key=True)
    port = effective_port(plan)
    labels = {"app.kubernetes.io/name": opts.name, "app.kubernetes.io/managed-by": "spark-tui"}
    meta: dict[str, object] = {"name": opts.name}
    if opts.namespace:
        meta["namespace"] = opts.namespace
    pvc_name = f"{opts.name}-hf-cache"[:63]

    def md(name: str, extra: dict[str, str] | None = None) -> dict[str, object]:
        m: dict[str, object] = {"name": name}
        if opts.namespace:
            m["namespace"] = opts.namespace
        m["labels"] = {**labels, **(extra or {})}
        return m

    env: list[dict[str, object]] = [{"name": e.name, "value": dollar_escape(e.value)} for e in container_env(plan)]
    for n in sec.optional:
        env.append({"name": n, "valueFrom": {"secretKeyRef": {"name": opts.k8s_secret, "key": n, "optional": True}}})
    for n in sec.required:
        env.append({"name": n, "valueFrom": {"secretKeyRef": {"name": opts.k8s_secret, "key": n}}})
    probe = {"httpGet": {"path": "/health", "port": "http"}}
    container = {
        "name": "vllm",
        "image": image_for(plan, opts),
        "args": [dollar_escape(a) for a in container_args(plan)],
        "env": env,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "resources": {"limits": {"nvidia.com/gpu": gpus_per_replica(plan)}},
        # model download + load + CUDA graphs can take many minutes: startup allows 60 min
        "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": 360},
        "readinessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {**probe, "periodSeconds": 30, "failureThreshold": 5},
        "volumeMounts": [
            {"name": "hf-cache", "mountPath": CONTAINER_HF_CACHE},
            {"name": "shm", "mountPath": "/dev/shm"},
        ],
    }
    queue = {"kueue.x-k8s.io/queue-name": opts.queue_name} if opts.queue_name else None
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": md(pvc_name),
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": opts.pvc_size}}},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": md(opts.name, queue),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # one RWO cache volume, GPUs not shared between replicas
            "selector": {"matchLabels": {"app.kubernetes.io/name": opts.name}},
            "template": {
                "metadata": {"labels": {**labels, **(queue or {})}},
                "spec": {
                    "containers": [container],
                    "volumes": [
                        {"name": "hf-cache", "persistentVolumeClaim": {"claimName": pvc_name}},
                        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": opts.shm_size}},
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": md(opts.name),
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": opts.name},
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    ns = f" -n {opts.namespace}" if opts.namespace else ""
    head = _header(plan, "k8s") + [
        f"# Secrets: kubectl{ns} create secret generic {opts.k8s_secret} --from-literal={API_KEY_ENV}=... "
        f"[--from-literal={HF_TOKEN_ENV}=...]",
    ]
    pins = pinned_gpus(plan)
    if pins is not None:
        head.append(f"# The plan pins GPU {','.join(pins)} on its machine; here the NVIDIA device plugin picks the "
                    f"{gpus_per_replica(plan)} GPU(s) (pin a node with a nodeSelector).")
    docs = [to_yaml(d) for d in (pvc, deployment, service)]
    return "\n".join(head) + "\n" + "---\n".join(docs)


# ---------------------------------------------------------------------------------------------------
# ray (multi-node)


def ray_pairs(plan: Plan, opts: ExportOptions) -> list[tuple[str, str | None]]:
    """Serve flags for a Ray cluster of `nodes` nodes with `per_node` GPUs each.

    vLLM's guidance (docs/serving/parallelism_scaling.md): tensor parallel = GPUs per node, pipeline
    parallel = number of nodes, `--distributed-executor-backend ray`. layout "tp" puts tensor parallelism
    across nodes instead (what NVIDIA's two-DGX-Spark playbook does over its 200 GbE link).
    GPUs per node = the plan's tensor x pipeline parallel sizes (its flags, or the Plan fields). A plan with
    data parallel replicas is refused: for a MoE model vLLM's data parallel ranks are not independent (its
    expert layers form one DP x TP group, docs/serving/data_parallel_deployment.md), and folding them into
    tensor parallel would silently change what runs; run one server per node behind a router instead.
    """
    nodes = ray_nodes(plan, opts)
    tp0, pp0, dp = parallel_sizes(plan)
    if dp > 1:
        raise UsageError(f"the plan runs {dp} data-parallel replicas; the Ray export runs one server across nodes",
                         "for replicas run one server per node (`spark-tui export --format bash` on each) behind a "
                         "router, or plan without data parallel for a Ray cluster")
    per_node = tp0 * pp0
    pairs = _drop(_drop(serve_pairs(plan), "--data-parallel-size"), "--tensor-parallel-size")
    pairs = _drop(pairs, "--pipeline-parallel-size")
    if opts.ray_layout == "tp":
        tp, pp = per_node * nodes, 1
    elif opts.ray_layout == "pp":
        tp, pp = per_node, nodes
    else:
        raise UsageError(f"unknown ray layout {opts.ray_layout!r}", "use --ray-layout pp or tp")
    return [
        *pairs,
        ("--tensor-parallel-size", str(tp)),
        ("--pipeline-parallel-size", str(pp)),
        ("--distributed-executor-backend", "ray"),
    ]


def ray_nodes(plan: Plan, opts: ExportOptions) -> int:
    n = opts.nodes if opts.nodes is not None else max(2, plan.nodes)
    if n < 2:
        raise UsageError(f"a Ray cluster needs at least 2 nodes, got {n}", "use --nodes 2 or more")
    return n


_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,14}\Z")  # Linux IFNAMSIZ 16 incl. NUL


def ray_ifname(opts: ExportOptions, role: str) -> str | None:
    """The network interface a node's NCCL and Gloo use: the role's own (--head-ifname / --worker-ifname), else
    the common --ifname, else None (then the script requires NCCL_SOCKET_IFNAME at run time). Two DGX Sparks
    often name their ConnectX-7 ports differently (e.g. enP2p1s0f1np1 on one, enp1s0f0np0 on the other,
    vllm-project/vllm PR #40991), and one value for both nodes breaks the rendezvous."""
    name = (opts.head_ifname if role == "head" else opts.worker_ifname) or opts.ifname
    if name is not None and not _IFNAME.match(name):
        flag = {"head": "--head-ifname", "worker": "--worker-ifname"}.get(role, "--ifname")
        raise UsageError(f"{name!r} is not a network interface name", f"give {flag} a name from `ip -br addr`")
    return name


def _ray_net_lines(opts: ExportOptions, role: str) -> list[str]:
    lines = [
        f': "${{VLLM_HOST_IP:?set VLLM_HOST_IP to the IP of this {role} node on the cluster network}}"',
        "export VLLM_HOST_IP",
    ]
    ifname = ray_ifname(opts, role)
    if ifname:
        lines += [f"export NCCL_SOCKET_IFNAME={_q(ifname)}", f"export GLOO_SOCKET_IFNAME={_q(ifname)}"]
    else:
        lines += [
            f': "${{NCCL_SOCKET_IFNAME:?set NCCL_SOCKET_IFNAME to the cluster network interface of this {role} node '
            '(ip -br addr)}"',
            'export NCCL_SOCKET_IFNAME GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-$NCCL_SOCKET_IFNAME}"',
        ]
    return lines


def ray_spark_note(plan: Plan) -> list[str]:
    """Comment lines for a unified-memory (DGX Spark) plan that fits one node: spark_tui.core.planning.cluster's advice."""
    mem = plan.memory
    if not plan.device.unified_memory or mem is None or not mem.fits:
        return []
    from spark_tui.core.planning.cluster import second_spark_advice

    a = plan.second_spark or second_spark_advice(fits_one_spark=True, per_spark_concurrency=mem.max_concurrency,
                                                 max_model_len=mem.max_model_len)
    if a.recommended != "replicas":
        return []
    return [f"# Note: a second Spark {_comment(a.summary)}: {_comment(a.reason)}.",
            f"# Source: {_comment(a.evidence[0])}; {_comment(a.evidence[2])}.",
            "# This file splits one server over the nodes instead (tensor/pipeline parallel); see `spark-tui plan "
            "--nodes 2`."]


def to_ray(plan: Plan, opts: ExportOptions | None = None) -> list[ExportFile]:
    """ray-head.sh (starts the head, waits for the workers, execs vllm serve) and ray-worker.sh."""
    opts = opts or ExportOptions()
    _check_env(plan)
    sec = _secrets(plan, opts)
    nodes = ray_nodes(plan, opts)
    env_lines = [f"export {e.name}={_q(e.value)}" for e in plan.env]
    # ray and its Python: next to a venv's vllm when vllm_bin is a path, else from PATH
    bindir = opts.vllm_bin.rsplit("/", 1)[0] + "/" if "/" in opts.vllm_bin else ""
    python = _q(bindir + "python") if bindir else "python3"
    ray = _q(bindir + "ray")
    head = ["#!/usr/bin/env bash", *_header(plan, "ray"),
            f"# Head node of a {nodes}-node Ray cluster; run ray-worker.sh on the other {nodes - 1} node(s).",
            "# Every node needs the same vLLM, model files (or HF cache) and environment.",
            *ray_spark_note(plan),
            "set -euo pipefail", ""]
    head += _ray_net_lines(opts, "head")
    head += env_lines
    head += _bash_secret_lines(sec, opts)
    head += [
        "",
        f"{ray} start --head --node-ip-address=\"${{VLLM_HOST_IP}}\" --port={RAY_PORT}",
        "",
        f"# wait (at most 10 minutes) until all {nodes} nodes have joined",
        "for _ in $(seq 1 120); do",
        f'  alive=$({python} -c \'import ray; ray.init(address="auto", logging_level="ERROR"); '
        'print(sum(1 for n in ray.nodes() if n["Alive"]))\' 2>/dev/null || echo 0)',
        f'  if [[ "$alive" -ge {nodes} ]]; then break; fi',
        "  sleep 5",
        "done",
        f'if [[ "$alive" -lt {nodes} ]]; then',
        f'  echo "only $alive of {nodes} Ray nodes joined; check ray-worker.sh on the workers (ray status)" >&2',
        "  exit 1",
        "fi",
        "",
        "exec " + _bash_continued(_argv_lines([opts.vllm_bin, "serve"], ray_pairs(plan, opts), [plan.model])),
    ]
    worker = ["#!/usr/bin/env bash", *_header(plan, "ray"),
              "# Worker node: joins the Ray cluster started by ray-head.sh and stays in the foreground.",
              "set -euo pipefail", ""]
    worker += ['  : "${RAY_HEAD_IP:?set RAY_HEAD_IP to the IP of the head node on the cluster network}"'.strip()]
    worker += _ray_net_lines(opts, "worker")
    worker += env_lines
    worker += [
        "",
        f'exec {ray} start --block --address="${{RAY_HEAD_IP}}:{RAY_PORT}" --node-ip-address="${{VLLM_HOST_IP}}"',
    ]
    return [
        ExportFile("ray-head.sh", "\n".join(head) + "\n", executable=True),
        ExportFile("ray-worker.sh", "\n".join(worker) + "\n", executable=True),
    ]


# ---------------------------------------------------------------------------------------------------


def render(plan: Plan, fmt: str, opts: ExportOptions | None = None) -> list[ExportFile]:
    """The files of one format (one file for all but ray)."""
    opts = opts or ExportOptions()
    _check_name(opts)
    if fmt == "bash":
        return [ExportFile("serve.sh", to_bash(plan, opts), executable=True)]
    if fmt == "docker":
        return [ExportFile("docker-run.sh", to_docker(plan, opts), executable=True)]
    if fmt == "compose":
        return [ExportFile("compose.yaml", to_compose(plan, opts))]
    if fmt == "systemd":
        return [ExportFile(f"{opts.name}.service", to_systemd(plan, opts))]
    if fmt == "k8s":
        return [ExportFile(f"{opts.name}.yaml", to_k8s(plan, opts))]
    if fmt == "ray":
        return to_ray(plan, opts)
    raise UsageError(f"unknown export format {fmt!r}", f"use one of: {', '.join(FORMATS)}")


def combined(files: list[ExportFile]) -> str:
    """Several files as one stream, each after a `# ===== FILE: name =====` separator line."""
    if len(files) == 1:
        return files[0].content
    return "".join(f"# ===== FILE: {f.name} =====\n{f.content}" for f in files)
