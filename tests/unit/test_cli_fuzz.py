"""Property-based fuzz of the whole CLI (issue #14): hypothesis draws argv for every subcommand from its
documented options (read from the real argparse parsers, so a new option is fuzzed the day it is added)
and a hostile alphabet (NaN, huge, negative, unicode, shell metacharacters, paths to devices, directories,
FIFOs and links), and runs the real `spark_tui.cli.main` in-process. Every run must:

- end without a traceback, with an exit code from the documented table (README "Exit codes");
- never show a secret from the environment (HF_TOKEN, VLLM_API_KEY, ...) on stdout/stderr or in any
  file it wrote.

Sandbox: SPARK_TUI_HOME, the HF cache and the working directory are in a temporary directory; writing
options only ever get paths inside it; SPARK_TUI_VLLM is the fake vLLM (tests/support/fake_vllm.py, a real
process); the Hugging Face hub is offline and sockets may connect only to a server this run launched
(anything else is refused, as on a machine without network).

SPARK_TUI_FUZZ_SCALE multiplies the example counts (default 1: about 2 minutes on 2 busy cores).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import huggingface_hub.constants  # noqa: F401  # imported before the sandbox patches the environment: its
# module-level HF_HUB_OFFLINE / cache paths must hold the real values once the sandbox is undone
from spark_tui.cli import COMMANDS, build_parser, main
from spark_tui.errors import ExitCode
from tests.support.fake_vllm import tiny_model, write_fake_vllm

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTED = {int(c) for c in ExitCode}  # 0-7 and 130, as the README's table
SECRETS = {
    "HF_TOKEN": "hf_FuzzSecretTokenAbcdefghijklmnopqrstu",
    "HUGGING_FACE_HUB_TOKEN": "hf_FuzzHubTokenZyxwvutsrqponmlkjihgf",
    "VLLM_API_KEY": "sk-fuzz-api-key-5b2c8e1d9f3a7c6b",
    "AWS_SECRET_ACCESS_KEY": "fuzzAwsSecretKey/1234567890abcdefXYZ",
}
SCALE = float(os.environ.get("SPARK_TUI_FUZZ_SCALE", "1"))
# examples per command: the cheap ones get many, the ones that start (fake) servers a few
EXAMPLES = {"plan": 150, "export": 150, "probe": 40, "devices": 5, "checkpoints": 20, "download": 40, "launch": 60,
            "stop": 30, "diagnose": 40, "monitor": 40, "bench": 40, "tune": 15, "selftest": 12, "ablate": 20}

HOSTILE = ["", " ", "-", "--", "nan", "NaN", "inf", "-inf", "1e309", "-1", "0", "1", "2", "-0", "0x1f", "1.5", "1e3",
           "65536", "99999", "9" * 40, "abc", "ünïcødé", "日本語", "\u202e\u200b", "😀" * 3, "a\nb", "a\rb", "\x1b[31m",
           "$(reboot)", "`id`", "; rm -rf /", "' \" \\", "%s%n%x", "${HOME}", "*", "~", "../../etc/passwd", "-x",
           "A" * 5000]


class Sandbox:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.home = base / "home"
        self.out = base / "out"  # the only place writing options point at
        self.out.mkdir(parents=True)
        self.model = tiny_model(base / "tiny")
        self.fake = write_fake_vllm(base / "vllm")
        self.probe = base / "probe.json"
        shutil.copy(ROOT / "tests" / "data" / "probes" / "gb10" / "probe.json", self.probe)
        self.log = base / "vllm.log"
        shutil.copy(ROOT / "tests" / "data" / "logs" / "cpu-0.32.0-startup-shutdown.log", self.log)
        self.binary = base / "binary.bin"
        self.binary.write_bytes(bytes(range(256)) * 64)
        self.key600 = base / "key600.env"
        self.key600.write_text("VLLM_API_KEY=sk-from-a-file-0123456789\n")
        self.key600.chmod(0o600)
        self.key644 = base / "key644.env"
        self.key644.write_text("sk-readable-by-others\n")
        self.key644.chmod(0o644)
        self.dir = base / "a-directory"
        self.dir.mkdir()
        (self.out / "existing.sh").write_text("keep\n")
        (self.out / "existing-dir").mkdir()
        os.mkfifo(self.out / "fifo")
        (self.out / "link").symlink_to(self.out / "existing.sh")
        self.allowed_ports: set[int] = set()


def read_paths(sb: Sandbox, devices: bool = True) -> list[str]:
    paths = [str(sb.probe), str(sb.log), str(sb.model), str(sb.binary), str(sb.dir), str(sb.base / "missing"),
             str(sb.key600), str(sb.key644), "/etc/passwd", "/proc/self/status", "/", ""]
    return paths + (["/dev/null", "/dev/zero"] if devices else ["/dev/null"])


def write_paths(sb: Sandbox) -> list[str]:
    o = sb.out
    return [str(o / "new.sh"), str(o / "existing.sh"), str(o / "existing-dir"), str(o / "existing-dir") + "/",
            str(o / "fifo"), str(o / "link"), str(o / "a" / "b" / "c.yaml"), str(o / "ünï cødé;$(x).sh"),
            str(sb.key600) + "/x", str(o)]


def values_for(opt: str, sb: Sandbox) -> st.SearchStrategy[str]:
    """Good values of a documented option (so runs get deep) mixed with the hostile alphabet."""
    from spark_tui.core.catalog.profiles import catalog

    cat = catalog()
    good: dict[str, list[str]] = {
        "--device": sorted(cat.devices) + ["cpu-test"] * 4,
        "--checkpoint": sorted(cat.checkpoints) + ["nvidia/Qwen3.6-35B-A3B-NVFP4", "org/unknown"],
        "checkpoint": ["nvidia/Qwen3.6-35B-A3B-NVFP4", "org/unknown", "not a repo"],
        "--probe-file": read_paths(sb), "--model-path": read_paths(sb, devices=False),
        "logfile": read_paths(sb, devices=False) + ["-"], "--from": read_paths(sb, devices=False),
        "--api-key-file": read_paths(sb, devices=False),
        "--save": write_paths(sb), "--output": write_paths(sb), "-o": write_paths(sb), "--out": write_paths(sb),
        "--dir": write_paths(sb), "--env-file": write_paths(sb) + ["/etc/spark-tui/vllm.env"],
        "--set": ["max-num-seqs=16", "max-num-seqs=abc", "gpu-memory-utilization=nan", "gpu-memory-utilization=0.5",
                  "port=99999", "port=abc", "kv-cache-dtype=fp8", "kv-cache-dtype=fp9", "moe-backend=marlin",
                  "speculative-config={\"method\":\"mtp\"}", "speculative-config=[1", "enable-prefix-caching",
                  "enable-prefix-caching=1", "max-model-len=", "HF_TOKEN=hf_x", "VLLM_API_KEY=k", "api-key=k",
                  "VLLM_USE_DEEP_GEMM=0", "X=a\nb", "=", "--", "frobnicate=1", "host=0.0.0.0", "max-model-len=auto"],
        "--host": ["127.0.0.1", "0.0.0.0", "::1", "::", "[::1]", "localhost", "192.0.2.1", "example.invalid"],
        "--port": ["8000", "0", "-1", "65535", "65536", "99999"] + [str(p) for p in range(47100, 47110)],
        "--url": ["http://127.0.0.1:9", "http://[::1]:9", "http://127.0.0.1:9/v1", "http://u:pw@127.0.0.1:9",
                  "file:///etc/passwd", "ftp://127.0.0.1/x", "http://127.0.0.1:99999", "http://example.invalid",
                  "https://10.255.255.1:8000", "javascript:alert(1)"],
        "--vllm-version": ["0.32.0", "0.19.0", "0.33.0", "nightly", "0.32.0+cpu", "v0.24", "banana"],
        "--goal": ["latency", "throughput", "context", "balanced"],
        "--format": ["bash", "docker", "compose", "systemd", "k8s", "ray"], "-f": ["bash", "k8s", "ray"],
        "--runtime": ["native", "docker"], "--ray-layout": ["pp", "tp"],
        "--prompts": ["synthetic", "realistic"],
        "--api-key-env": ["VLLM_API_KEY", "HF_TOKEN", "NOT_SET_ANYWHERE", "sk-looks-like-a-key", "lower_case"],
        "--concurrency": ["1", "1,4", "0", "1,,2", "-4", "32"], "--mtp-values": ["0", "0,1", "-1", "5,x"],
        "--expect-format": ["bf16", "modelopt_fp4", "nope"], "--only": ["bf16_gemm", "nvfp4_reference", "nope"],
        "--recipe": ["model-card-spark", "nope"], "--image": ["vllm/vllm-openai:v0.32.0", "x y"],
        "--name": ["spark-tui-vllm", "Bad_Name", "x" * 70],
        "pid": [str(os.getpid()), "1", "0", "-5", "999999999"],
    }
    pool = good.get(opt, [])
    if not pool:
        return st.sampled_from(HOSTILE)
    # mostly good values (so a run gets past argparse into the command), often hostile ones
    return st.sampled_from(pool * max(1, (2 * len(HOSTILE)) // len(pool)) + HOSTILE)


def documented_options(command: str) -> list[argparse.Action]:
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    return [a for a in sub.choices[command]._actions if not isinstance(a, argparse._HelpAction)]  # noqa: SLF001


def bases(command: str, sb: Sandbox) -> list[list[str]]:
    if command in ("plan", "export", "launch", "tune"):
        return [["--device", "cpu-test", "--model-path", str(sb.model)]] * 3 + [
            ["--device", "rtx-5090"], ["--device", "dgx-spark"], ["--probe-file", str(sb.probe)], ["--device", "h100"]]
    return {
        "diagnose": [[str(sb.log)], ["-"], ["--json", "-"]],
        "download": [["--model-path", str(sb.model), "--verify-only"], ["nvidia/Qwen3.6-35B-A3B-NVFP4"]],
        "stop": [["--list"], ["--all"]],
        "monitor": [["--once"], ["--once", "--json"]],
        "bench": [["--requests", "1"], ["--duration", "1"]],
        "probe": [["--probe-file", str(sb.probe)], ["--json"]],
        "selftest": [["--list"], ["--json", "--quick"], ["--from", str(sb.binary)]],
    }.get(command, [[]])


# options that would make one run take minutes by design (foreground launch: until Ctrl-C)
SKIP = {("launch", "--foreground")}


@st.composite
def argv_for(draw, command: str, sb: Sandbox) -> list[str]:
    actions = [a for a in documented_options(command)
               if not any((command, s) in SKIP for s in a.option_strings)]
    argv = [command]
    if draw(st.integers(0, 3)) > 0:  # usually a sensible base, so the run reaches the command's own checks
        argv += list(draw(st.sampled_from(bases(command, sb))))
        if command == "export":
            argv += ["--format", draw(st.sampled_from(["bash", "docker", "compose", "systemd", "k8s", "ray"]))]
    for a in draw(st.lists(st.sampled_from(actions), max_size=5)):
        if not a.option_strings:  # a positional
            argv.append(draw(values_for(a.dest, sb)))
            continue
        opt = draw(st.sampled_from(a.option_strings))
        if a.nargs == 0:
            argv.append(opt)
        else:
            argv += [opt, draw(values_for(opt, sb))]
    if draw(st.booleans()):
        argv.append(draw(st.sampled_from(["--help", "--json", "-h", "extra", "--no-such-option"])))
    # bounds on runs that start servers (each value drawn above is still parsed and checked by argparse)
    if command == "launch":
        argv += ["--detach", "--startup-timeout", "30"]
    elif command == "tune":
        argv += ["--mtp-values", "0", "--requests", "1", "--startup-timeout", "30"]
    elif command == "monitor":
        argv += ["--count", "1"]
    elif command == "ablate":  # variants, preflight and plan only: the runs are tests/e2e/test_ablate_cpu.py's
        argv += ["--list"]
    return argv


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    sb = Sandbox(tmp_path_factory.mktemp("fuzz"))
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo
    local = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::", ""}

    def getaddrinfo(host, *a, **kw):  # no DNS: numeric addresses and localhost only
        h = host.decode() if isinstance(host, bytes) else (host or "")
        if h not in local:
            try:
                import ipaddress

                ipaddress.ip_address(h.strip("[]"))
            except ValueError:
                raise socket.gaierror(socket.EAI_NONAME, "fuzz sandbox: no DNS") from None
        return real_getaddrinfo(host, *a, **kw)

    def connect(self, address):  # only to a server this run started
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host, port = address[0], address[1]
            if host not in ("127.0.0.1", "::1", "localhost") or port not in sb.allowed_ports:
                raise ConnectionRefusedError(111, "fuzz sandbox: no network")
        return real_connect(self, address)

    env = {**{k: v for k, v in os.environ.items() if k not in ("SPARK_TUI_PROBE_FILE", "SPARK_TUI_VLLM_VENV")},
           **SECRETS, "SPARK_TUI_HOME": str(sb.home), "SPARK_TUI_VLLM": str(sb.fake), "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(sb.base / "hf"), "HF_HUB_CACHE": str(sb.base / "hf" / "hub"), "VLLM_NO_USAGE_STATS": "1"}
    with pytest.MonkeyPatch.context() as mp:
        for k in list(os.environ):
            if k not in env:
                mp.delenv(k)
        for k, v in env.items():
            mp.setenv(k, v)
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        mp.chdir(sb.out)
        from huggingface_hub import constants

        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        mp.setattr(constants, "HF_HUB_CACHE", str(sb.base / "hf" / "hub"))
        from spark_tui.core.catalog import profiles

        profiles._cached.cache_clear()
        yield sb
        profiles._cached.cache_clear()
        _stop_servers()


def _stop_servers() -> None:
    from spark_tui.core.runtime import supervisor as sv

    for r in sv.list_servers():
        sv.stop_server(r, 2.0)


def _port_of(argv: list[str]) -> int:
    port = 8000
    for i, a in enumerate(argv[:-1]):
        if a == "--port" and argv[i + 1].isdigit():
            port = int(argv[i + 1])
    return port


def run_once(sb: Sandbox, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    stdin = io.TextIOWrapper(io.BytesIO(sb.log.read_bytes()))  # for `diagnose -`
    old_stdin = sys.stdin
    sys.stdin = stdin
    sb.allowed_ports = {_port_of(argv)} if argv[0] in ("launch", "tune") else set()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(list(argv))
            except SystemExit as e:  # argparse: 2 for a usage error, 0 for --help
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    finally:
        sys.stdin = old_stdin
        _stop_servers()
    return rc, out.getvalue(), err.getvalue()


def written_since(sb: Sandbox, t0: float) -> list[Path]:
    files = []
    for root in (sb.home, sb.out, sb.base / "hf"):
        if not root.exists():
            continue
        for p in root.rglob("*"):
            try:
                if p.is_file() and not p.is_symlink() and p.stat().st_mtime >= t0 - 1:
                    files.append(p)
            except OSError:
                continue
    return files


RCS: dict[str, list[int]] = {}


def check(sb: Sandbox, argv: list[str]) -> None:
    t0 = time.time()
    rc, out, err = run_once(sb, argv)
    RCS.setdefault(argv[0], []).append(rc)
    shown = f"argv={argv!r} rc={rc}\nstdout: {out[-1500:]}\nstderr: {err[-3000:]}"
    assert "Traceback (most recent call last)" not in out + err, shown
    assert rc in DOCUMENTED, shown
    for name, secret in SECRETS.items():
        assert secret not in out and secret not in err, f"{name} leaked in the output of {argv!r}"
    for f in written_since(sb, t0):
        data = f.read_bytes()
        for name, secret in SECRETS.items():
            assert secret.encode() not in data, f"{name} leaked into {f} by {argv!r}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cli_fuzz(sandbox, command):
    n = max(1, int(EXAMPLES.get(command, 8) * SCALE))

    @settings(max_examples=n, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(argv=argv_for(command, sandbox))
    def fuzz(argv):
        check(sandbox, argv)

    t = time.monotonic()
    fuzz()
    rcs = RCS.get(command, [])
    hist = ", ".join(f"{c}: {rcs.count(c)}" for c in sorted(set(rcs)))
    print(f"\n{command}: {len(rcs)} runs ({n} examples) in {time.monotonic() - t:.1f} s; exit codes {{{hist}}}")


def test_the_fuzz_covers_every_subcommand_and_its_options():
    # every subcommand has a budget, and the options come from the real parsers (none hand-listed)
    assert set(EXAMPLES) == set(COMMANDS)
    for command in COMMANDS:
        assert documented_options(command) or command == "devices"
    assert sum(EXAMPLES.values()) >= 150
