"""`spark-tui export --format bash|docker|compose|systemd|k8s|ray [-o FILE|DIR] [plan options]`.

Renders the same Plan `spark-tui plan` prints (spark_tui.core.export.formats does the rendering). Writes to
stdout unless -o is given; never overwrites a file without --force, never writes onto a device node, FIFO,
directory or symbolic link, and writes all files or none (spark_tui.core.export.files.write_files). `--generate-api-key` writes a new
key to a separate 0600 env file and only says where it went.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from dataclasses import replace
from pathlib import Path

from spark_tui.errors import UsageError

API_KEY_FILE = "vllm-api-key.env"


def _add(p, *names: str, **kw) -> bool:
    """Add an option unless the plan options already define it (the plan's meaning then wins)."""
    if any(n in p._option_string_actions for n in names):  # noqa: SLF001 - argparse has no public query
        return False
    p.add_argument(*names, **kw)
    return True


def add_parser(p: argparse.ArgumentParser) -> None:
    from spark_tui.commands.plan import add_plan_arguments
    from spark_tui.core.export.formats import FORMATS

    add_plan_arguments(p)
    g = p.add_argument_group("export")
    g.add_argument("--format", "-f", required=True, choices=FORMATS, help="what to write")
    g.add_argument("-o", "--output", metavar="PATH",
                   help="write here instead of stdout (a directory for ray, or for the default file name)")
    g.add_argument("--force", action="store_true", help="overwrite existing files")
    _add(g, "--api-key-env", metavar="NAME",
         help="the environment variable holding the API key at run time (vLLM reads VLLM_API_KEY); "
         "required when --host is not a loopback address")
    _add(g, "--generate-api-key", action="store_true",
         help=f"create a new API key in a 0600 env file ({API_KEY_FILE}) next to the output; "
         "the exported files only reference it")
    _add(g, "--image", help="container image (default vllm/vllm-openai:v<plan vLLM version>)")
    _add(g, "--vllm-bin", default="vllm", help="the vllm executable for bash/systemd/ray (default: vllm on PATH)")
    _add(g, "--name", default="spark-tui-vllm", help="container / unit / Kubernetes object name")
    _add(g, "--user", help="systemd User= (default: you)")
    _add(g, "--workdir", help="systemd WorkingDirectory= (default: your home)")
    _add(g, "--env-file", metavar="PATH",
         help="secrets file (NAME=value lines) the export references (systemd default /etc/spark-tui/vllm.env)")
    _add(g, "--namespace", help="k8s namespace")
    _add(g, "--queue-name", help="k8s: Kueue LocalQueue (label kueue.x-k8s.io/queue-name)")
    _add(g, "--k8s-secret", default="spark-tui-vllm-secrets", help="k8s Secret with HF_TOKEN / VLLM_API_KEY")
    _add(g, "--pvc-size", default="100Gi", help="k8s HF cache volume size")
    owns_nodes = _add(g, "--nodes", type=int, help="ray: number of nodes (default: the plan's, at least 2)")
    p.set_defaults(export_owns_nodes=owns_nodes)
    _add(g, "--ray-layout", choices=("pp", "tp"), default="pp",
         help="ray: pp = tensor parallel within a node, pipeline across nodes (vLLM docs); tp = tensor across")
    _add(g, "--ifname", help="ray: cluster network interface for NCCL/Gloo on every node (else NCCL_SOCKET_IFNAME "
         "at run time)")
    _add(g, "--head-ifname", metavar="IF", help="ray: the head node's interface, when it differs from the workers'")
    _add(g, "--worker-ifname", metavar="IF", help="ray: the worker nodes' interface, when it differs from the head's")


def _options(args: argparse.Namespace):
    from spark_tui.core.export.formats import ExportOptions

    def get(name: str, default=None):
        return getattr(args, name, default)

    kw = dict(
        api_key_env=get("api_key_env"),
        env_file=os.path.abspath(get("env_file")) if get("env_file") else None,
        image=get("image"),
        vllm_bin=get("vllm_bin") or "vllm",
        name=get("name") or "spark-tui-vllm",
        user=get("user") or _current_user(),
        working_directory=os.path.abspath(get("workdir")) if get("workdir") else str(Path.home()),
        namespace=get("namespace"),
        queue_name=get("queue_name"),
        k8s_secret=get("k8s_secret") or "spark-tui-vllm-secrets",
        pvc_size=get("pvc_size") or "100Gi",
        nodes=get("nodes") if get("export_owns_nodes") else None,  # else the Plan carries --nodes
        ray_layout=get("ray_layout") or "pp",
        ifname=get("ifname"),
        head_ifname=get("head_ifname"),
        worker_ifname=get("worker_ifname"),
    )
    return ExportOptions(**kw)


def _current_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "vllm"


def _check_free(paths: list[Path], force: bool) -> None:
    from spark_tui.core.export.files import check_target

    for p in paths:
        check_target(p, force)


def run(args: argparse.Namespace) -> int:
    from spark_tui.commands.plan import plan_from_args
    from spark_tui.core.export.files import export_targets, write_files
    from spark_tui.core.export.formats import API_KEY_ENV, combined, render

    plan = plan_from_args(args)
    opts = _options(args)
    if opts.api_key_env is not None and opts.api_key_env != opts.api_key_env.strip():
        raise UsageError("--api-key-env takes a variable name", f"e.g. --api-key-env {API_KEY_ENV}")

    key_path: Path | None = None
    if getattr(args, "generate_api_key", False):
        if opts.env_file:
            raise UsageError("--generate-api-key and --env-file both name the secrets file", "give one of them")
        base = Path(args.output) if args.output else Path.cwd()
        if args.output and not (base.is_dir() or args.format == "ray" or args.output.endswith(os.sep)):
            base = base.parent
        key_path = (base / API_KEY_FILE).resolve()
        _check_free([key_path], args.force)
        opts = replace(opts, env_file=str(key_path), api_key_env=opts.api_key_env or API_KEY_ENV)
        if opts.api_key_env != API_KEY_ENV:
            raise UsageError("--generate-api-key writes VLLM_API_KEY", f"drop --api-key-env or use {API_KEY_ENV}")

    files = render(plan, args.format, opts)  # raises before anything is written
    targets = export_targets([f.name for f in files], args.output) if args.output else []
    _check_free(targets, args.force)

    # every file (the key file too) is written all or nothing: a full disk leaves nothing that blocks a re-run
    writes = [(path, f.content, 0o755 if f.executable else 0o644) for f, path in zip(files, targets)]
    if key_path is not None:
        writes.insert(0, (key_path, f"{API_KEY_ENV}={secrets.token_urlsafe(32)}\n", 0o600))
    if writes:
        write_files(writes, args.force)
    if key_path is not None:
        print(f"spark-tui: new API key written to {key_path} (mode 0600); clients send it as "
              "'Authorization: Bearer <key>'", file=sys.stderr)
        if args.format == "k8s":
            print(f"  load it into the cluster: kubectl create secret generic {opts.k8s_secret} "
                  f"--from-env-file={key_path}", file=sys.stderr)

    if not args.output:
        sys.stdout.write(combined(files))
        return 0
    for path in targets:
        print(f"spark-tui: wrote {path}", file=sys.stderr)
    return 0
