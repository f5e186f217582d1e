"""Helpers (no tests) for the export tests: run generated scripts against PATH stubs, parse systemd units."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

STUB = """#!/bin/sh
printf '%s\\0' "$@" > "$STUB_OUT/$(basename "$0").args"
env -0 > "$STUB_OUT/$(basename "$0").env"
"""


def run_with_stubs(script: str, tmp: Path, names: tuple[str, ...], env: dict[str, str] | None = None) -> dict:
    """Run `script` with bash, PATH stubs for `names` recording argv and environment (NUL-separated)."""
    bindir = tmp / "stubbin"
    bindir.mkdir(exist_ok=True)
    for n in names:
        (bindir / n).write_text(STUB)
        (bindir / n).chmod(0o755)
    path = tmp / "script.sh"
    path.write_text(script, encoding="utf-8")
    run_env = {"PATH": f"{bindir}:/usr/bin:/bin", "STUB_OUT": str(tmp), "HOME": str(tmp), "LC_ALL": "C.UTF-8"}
    run_env.update(env or {})
    r = subprocess.run(["bash", str(path)], env=run_env, capture_output=True, timeout=20)
    out: dict = {"rc": r.returncode, "stderr": r.stderr.decode("utf-8", "replace")}
    for n in names:
        a = tmp / f"{n}.args"
        if a.exists():
            out[n] = [w.decode("utf-8", "surrogateescape") for w in a.read_bytes().split(b"\0")[:-1]]
            e = (tmp / f"{n}.env").read_bytes().split(b"\0")[:-1]
            out[n + ".env"] = dict(x.decode("utf-8", "surrogateescape").split("=", 1) for x in e)
            a.unlink()
    return out


def shellcheck(text: str, tmp: Path) -> None:
    """Fail on any shellcheck finding; skip when shellcheck is missing, except under CI."""
    exe = shutil.which("shellcheck")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("shellcheck is not installed (CI installs it: apt-get install shellcheck)")
        pytest.skip("shellcheck not installed")
    p = tmp / "check.sh"
    p.write_text(text, encoding="utf-8")
    r = subprocess.run([exe, "--shell=bash", "--severity=style", str(p)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# --- systemd -----------------------------------------------------------------------------------------

_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
           "\\": "\\", '"': '"', "'": "'", "s": " "}


def systemd_specifiers(s: str) -> str:
    """Resolve specifiers: only `%%` is allowed in what we generate."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "%":
            assert s[i + 1 : i + 2] == "%", f"unexpected specifier in {s!r}"
            out.append("%")
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def systemd_words(s: str) -> list[str]:
    """Split a command line as systemd does (extract_first_word with UNQUOTE|CUNESCAPE), after
    specifier resolution; then `$$` -> `$` per word (a lone `$` would be variable expansion: fail)."""
    words: list[str] = []
    i, n = 0, len(s)
    while True:
        while i < n and s[i] in " \t\n":
            i += 1
        if i >= n:
            return words
        cur: list[str] = []
        quote = None
        while i < n:
            c = s[i]
            if quote is None and c in " \t\n":
                break
            if c in "\"'" and quote is None:
                quote = c
                i += 1
                continue
            if c == quote:
                quote = None
                i += 1
                continue
            if c == "\\":
                e = s[i + 1]
                if e in _SIMPLE:
                    cur.append(_SIMPLE[e])
                    i += 2
                elif e == "x":
                    cur.append(chr(int(s[i + 2 : i + 4], 16)))
                    i += 4
                elif e == "u":
                    cur.append(chr(int(s[i + 2 : i + 6], 16)))
                    i += 6
                elif e == "U":
                    cur.append(chr(int(s[i + 2 : i + 10], 16)))
                    i += 10
                else:
                    raise AssertionError(f"unknown escape \\{e} in {s!r}")
                continue
            cur.append(c)
            i += 1
        assert quote is None, f"unterminated quote in {s!r}"
        words.append(_dollars("".join(cur)))


def _dollars(w: str) -> str:
    out, i = [], 0
    while i < len(w):
        if w[i] == "$":
            assert w[i + 1 : i + 2] == "$", f"unescaped $ (variable expansion) in {w!r}"
            out.append("$")
            i += 2
        else:
            out.append(w[i])
            i += 1
    return "".join(out)


def parse_unit(text: str) -> dict[str, list[str]]:
    """KEY -> [raw values] of a unit file; comments dropped, `\\` line continuations joined."""
    joined = text.replace("\\\n", " ")
    out: dict[str, list[str]] = {}
    for line in joined.splitlines():
        if not line.strip() or line.startswith(("#", ";", "[")):
            continue
        k, v = line.split("=", 1)
        out.setdefault(k.strip(), []).append(v.strip())
    return out


def unit_exec_argv(text: str) -> list[str]:
    (v,) = parse_unit(text)["ExecStart"]
    return systemd_words(systemd_specifiers(v))


def unit_environment(text: str) -> dict[str, str]:
    env = {}
    for v in parse_unit(text).get("Environment", []):
        for w in systemd_words(systemd_specifiers(v).replace("$", "$$")):  # `$` is literal in Environment=
            k, val = w.split("=", 1)
            env[k] = val
    return env
