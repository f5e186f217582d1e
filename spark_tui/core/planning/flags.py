"""One flag model for a `vllm serve` command: an ordered set of typed flags, each with reason, source and evidence.

Every other shape (the argv, the exports, `plan --json`, the TUI table) is rendered from `Flags`; values are
kept typed (int, float, dict for JSON flags, str) and turned into text only when the argv is rendered.

Evidence classes (planner issue #10): a flag the plan adds to what `vllm serve <checkpoint>` does by itself is a
deviation, and each deviation is one of
- `required`: the server cannot start, or cannot do what the user asked, without it;
- `measured`: a measured gain for this device class at the goal's concurrency (a published benchmark or a
  measurement on this machine), with the figure;
- `unmeasured`: everything else. Unmeasured deviations are left out of the default plan.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator, Union

from spark_tui.errors import UsageError

EVIDENCE = ("required", "measured", "unmeasured")
Value = Union[None, int, float, str, dict]

# flags whose values the plan keeps typed; every other flag keeps its text
INT_FLAGS = frozenset({"--max-model-len", "--max-num-seqs", "--max-num-batched-tokens", "--port",
                       "--tensor-parallel-size", "--data-parallel-size", "--pipeline-parallel-size",
                       "--max-cudagraph-capture-size", "--seed"})
FLOAT_FLAGS = frozenset({"--gpu-memory-utilization"})
JSON_FLAGS = frozenset({"--speculative-config", "--compilation-config", "--limit-mm-per-prompt",
                        "--hf-overrides", "--kv-transfer-config"})


def render(value: Value) -> str | None:
    """The argv text of a typed value (None stays None: a switch)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _int(name: str, text: str) -> int:
    from spark_tui.core.planning.sizes import parse_size

    try:
        return int(text)
    except ValueError:
        pass
    if name == "--max-model-len":  # vLLM accepts human-readable lengths: 32k, 32K, 1m
        try:
            return parse_size(text)
        except UsageError:
            pass
    raise UsageError(f"{name} {text!r} is not an integer", f"e.g. {name} 8192")


def coerce(name: str, text: str | None) -> Value:
    """A flag's argv text -> its typed value. Raises UsageError naming the flag when the text has the wrong type."""
    if text is None:
        return None
    if name in INT_FLAGS:
        v = _int(name, text.strip())
        if name == "--port" and not 1 <= v <= 65535:
            raise UsageError(f"--port {v} is not a TCP port", "1 to 65535, e.g. --port 8000")
        if name != "--seed" and v < 1 and not (name == "--max-model-len" and v == -1):
            raise UsageError(f"{name} {v} must be at least 1", f"e.g. {name} 8")
        return v
    if name in FLOAT_FLAGS:
        try:
            frac = float(text)
        except ValueError:
            raise UsageError(f"{name} {text!r} is not a number", f"e.g. {name} 0.9") from None
        if not math.isfinite(frac) or not 0 < frac <= 1:
            raise UsageError(f"{name} {text!r} is out of range", "a fraction in (0, 1], e.g. 0.9")
        return frac
    if name in JSON_FLAGS:
        try:
            obj = json.loads(text)
        except ValueError:
            raise UsageError(f"{name} is not valid JSON: {text!r}",
                             f"e.g. {name} '{{\"method\":\"mtp\",\"num_speculative_tokens\":1}}'") from None
        if not isinstance(obj, dict):
            raise UsageError(f"{name} must be a JSON object, not {text!r}", "e.g. '{\"key\": value}'")
        return obj
    return text


@dataclass(frozen=True)
class Flag:
    """One `vllm serve` flag: typed value (None for a switch), why, where from, and its evidence class."""

    name: str  # "--max-model-len"
    value: Value = None
    reason: str = ""
    source: str = ""
    evidence: str = "required"
    effect: str = ""  # the expected effect and its figure, for measured deviations

    @property
    def flag(self) -> str:  # the name under its older attribute
        return self.name

    @property
    def text(self) -> str | None:
        return render(self.value)

    def argv(self) -> list[str]:
        t = self.text
        return [self.name] if t is None else [self.name, t]

    def to_dict(self) -> dict[str, Any]:
        return {"flag": self.name, "value": self.text, "reason": self.reason, "source": self.source,
                "evidence": self.evidence, "effect": self.effect or None}


def opposite(name: str) -> str:
    """--enable-x <-> --no-enable-x."""
    return "--" + name[5:] if name.startswith("--no-") else "--no-" + name[2:]


class Flags:
    """An ordered set of flags: at most one per name, set in place (a replaced flag keeps its position)."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[Flag] = ()) -> None:
        self._items: list[Flag] = []
        for f in items:
            self.put(f)

    # ---- reading
    def __iter__(self) -> Iterator[Flag]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return any(f.name == name for f in self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Flags) and self._items == other._items

    def __repr__(self) -> str:
        return f"Flags({self.argv()!r})"

    def get(self, name: str) -> Flag | None:
        return next((f for f in self._items if f.name == name), None)

    def value(self, name: str, default: Value = None) -> Value:
        f = self.get(name)
        return default if f is None or f.value is None else f.value

    def text(self, name: str) -> str | None:
        f = self.get(name)
        return None if f is None else f.text

    def names(self) -> list[str]:
        return [f.name for f in self._items]

    def argv(self) -> list[str]:
        out: list[str] = []
        for f in self._items:
            out += f.argv()
        return out

    def copy(self) -> "Flags":
        return Flags(self._items)

    # ---- writing
    def put(self, flag: Flag) -> None:
        for i, f in enumerate(self._items):
            if f.name == flag.name:
                self._items[i] = flag
                return
        self._items.append(flag)

    def set(self, name: str, value: Value = None, reason: str = "", source: str = "", evidence: str = "required",
            effect: str = "") -> Flag:
        if evidence not in EVIDENCE:
            raise ValueError(f"unknown evidence class {evidence!r}")
        f = Flag(name, value, reason, source, evidence, effect)
        self.put(f)
        return f

    def drop(self, name: str) -> Flag | None:
        f = self.get(name)
        self._items = [x for x in self._items if x.name != name]
        return f

    def restamp(self, name: str, **changes: Any) -> None:
        f = self.get(name)
        if f is not None:
            self.put(replace(f, **changes))

    # ---- parsing
    @classmethod
    def from_argv(cls, tokens: Iterable[str], reason: str = "", source: str = "", evidence: str = "required") -> "Flags":
        out = cls()
        for name, text in split_args(tokens):
            out.set(name, coerce(name, text), reason, source, evidence)
        return out


def split_args(args: Iterable[str]) -> list[tuple[str, str | None]]:
    """['--a', '1', '--b', '--c=2'] -> [('--a', '1'), ('--b', None), ('--c', '2')]. A token after a flag is its value
    unless it starts with '--' (vLLM's negative numbers such as `--max-model-len -1` are values too)."""
    out: list[tuple[str, str | None]] = []
    toks = list(args)
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.startswith("--") and "=" in t:
            k, _, v = t.partition("=")
            out.append((k, v))
            i += 1
        elif i + 1 < len(toks) and not toks[i + 1].startswith("--"):
            out.append((t, toks[i + 1]))
            i += 2
        else:
            out.append((t, None))
            i += 1
    return out


_FLAG_NAME = re.compile(r"--[A-Za-z0-9][A-Za-z0-9_.-]*")


def is_flag_name(name: str) -> bool:
    return _FLAG_NAME.fullmatch(name) is not None
