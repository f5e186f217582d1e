"""Types, ranges and choices of `vllm serve` flag values, and the refusal of secrets in `--set`.

`validate_flag_value(flag, value, vllm_version)` checks one `--set FLAG=VALUE` before it reaches a plan, an
export, a state file or a command line, and returns the value as vLLM would parse it (int, float, dict,
str; None for a switch). A bad value raises UsageError (exit 2) naming the flag, the value and what is
allowed, instead of a traceback in the planner or a server that dies at startup.

Where the types come from:
- the shipped table `FLAG_TYPES` below: each entry was read from vLLM's own source at the release in
  `TABLE_VERSION` and names the file and line (github.com/vllm-project/vllm/blob/v0.32.0/<file>). Types and
  ranges (int, float in (0, 1], sizes like 16G, JSON) are the same across releases; lists of choices
  change (new kernels every release), so a choice is enforced only when the plan targets the table's
  release (or no release); for another release a value only has to look like a choice name.
- optionally (`use_installed_vllm=True`) the installed vLLM's own argparse parser, imported lazily as
  `plan --check` does (spark_tui.core.catalog.vllm_compat): its type functions and choices, plus the table's
  ranges, which the parser does not check. Used only when the installed release is the one the plan
  targets. Importing vLLM takes seconds (it imports torch), so it is never the default.

`refuse_secret_set(name, value)` refuses a `--set` that would put a credential (HF_TOKEN, VLLM_API_KEY,
--api-key, --hf-token, ...) into plans, exports, state files, logs and `ps`, and names the safe way.
Neither function ever echoes a secret value.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from spark_tui.errors import UsageError

TABLE_VERSION = "0.32.0"  # the vLLM release every entry below was read from
_SRC = "https://github.com/vllm-project/vllm/blob/v0.32.0/vllm/"


@dataclass(frozen=True)
class FlagType:
    """What one flag accepts. kind: int, float, size (vLLM human_readable_int: 16G, 25.6k), size_or_auto
    (also -1 / auto), json_object, choice, switch, str."""

    names: tuple[str, ...]  # the flag and its aliases, as vLLM spells them
    kind: str
    source: str  # the public vLLM source of the type / range / choices
    minimum: float | None = None
    maximum: float | None = None
    min_exclusive: bool = False  # True: value > minimum (vLLM Field(gt=...)); False: value >= minimum
    choices: tuple[str, ...] = ()
    normalize: bool = False  # vLLM lower-cases the value and turns '-' into '_' before the choice check
    note: str = ""  # a range that is spark-tui's own rule, not vLLM's, says so here

    @property
    def flag(self) -> str:
        return self.names[0]

    def allowed(self) -> str:
        """What is allowed, in words (for the error message)."""
        if self.kind == "switch":
            return f"no value: it is a switch (--set {self.flag[2:]}, or --set no-{self.flag[2:]} to turn it off)"
        if self.kind == "choice":
            return "one of: " + ", ".join(self.choices)
        if self.kind == "json_object":
            return "a JSON object, e.g. '{\"method\":\"mtp\",\"num_speculative_tokens\":1}'"
        what = {"int": "an integer", "float": "a number", "size": "an integer, or a size like 16G (binary) or "
                "16g (decimal)", "size_or_auto": "an integer, a size like 16k, or auto / -1",
                "str": "a non-empty value"}[self.kind]
        rng = []
        if self.minimum is not None:
            rng.append(f"{'>' if self.min_exclusive else '>='} {self.minimum:g}")
        if self.maximum is not None:
            rng.append(f"<= {self.maximum:g}")
        return what + (f" {' and '.join(rng)}" if rng else "")


def _t(names: str | tuple[str, ...], kind: str, src: str, **kw: Any) -> FlagType:
    return FlagType(names=(names,) if isinstance(names, str) else names, kind=kind, source=_SRC + src, **kw)


# Choice lists, copied from the Literal types vLLM builds its argparse choices from (v0.32.0).
_KV_CACHE_DTYPES = ("auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla",
                    "nvfp4_ds_mla", "turboquant_k8v4", "turboquant_4bit_nc", "turboquant_k3v4_nc",
                    "turboquant_3bit_nc", "ultraquant_4bit", "int4_per_token_head", "int8_per_token_head",
                    "fp8_per_token_head", "nvfp4", "nvfp4_4over6")
_MOE_BACKENDS = ("auto", "triton", "batched_triton", "deep_gemm", "deep_gemm_mega_moe", "cutlass", "flashinfer_trtllm",
                 "flashinfer_cutlass", "flashinfer_cutedsl", "flashinfer_moe_ep_cutedsl", "flashinfer_b12x", "b12x",
                 "flashinfer_moe_ep_mega_deep_gemm", "marlin", "humming", "triton_unfused", "aiter", "aiter_mega_moe",
                 "aiter_triton_mxfp4_bf16", "flydsl", "hpc", "emulation", "rdna3")
_LINEAR_BACKENDS = ("aiter", "auto", "b12x", "conch", "cutlass", "deep_gemm", "emulation", "exllama", "fbgemm",
                    "flashinfer_b12x", "flashinfer_cudnn", "flashinfer_cutedsl", "flashinfer_cutlass",
                    "flashinfer_trtllm", "humming", "machete", "marlin", "torch", "triton", "xpu", "xpu_woq")

FLAG_TYPES: tuple[FlagType, ...] = (
    _t("--port", "int", "entrypoints/launchers/cli_args.py#L285", minimum=1, maximum=65535,
       note="vLLM types it int; a TCP port is 1-65535 (RFC 6335 §6), and 0 would bind a random one"),
    _t("--max-num-seqs", "int", "config/scheduler.py#L62", minimum=1),
    _t("--max-num-batched-tokens", "size", "config/scheduler.py#L48 (ge=1); engine/arg_utils.py#L391-L403",
       minimum=1),
    _t("--max-model-len", "size_or_auto", "config/model.py#L245 (ge=-1); utils/argparse_utils.py#L75",
       minimum=-1),
    _t(("--gpu-memory-utilization", "--device-memory-utilization"), "float", "config/cache.py#L102",
       minimum=0, maximum=1, min_exclusive=True),
    _t("--kv-cache-memory-bytes", "size", "config/cache.py#L257; engine/arg_utils.py#L391-L403", minimum=1,
       note="vLLM sets no bound; a pool of 0 bytes (or fewer) holds no token"),
    _t("--block-size", "int", "config/cache.py#L74", minimum=0, min_exclusive=True),
    _t(("--tensor-parallel-size", "-tp"), "int", "config/parallel.py#L141", minimum=1),
    _t(("--data-parallel-size", "-dp"), "int", "config/parallel.py#L146", minimum=1),
    _t(("--pipeline-parallel-size", "-pp"), "int", "config/parallel.py#L139", minimum=1),
    _t("--cpu-offload-gb", "float", "config/offload.py#L23", minimum=0),
    _t("--max-logprobs", "int", "config/model.py#L282", minimum=-1),
    _t("--seed", "int", "config/model.py#L206"),
    _t(("--speculative-config", "-sc"), "json_object", "engine/arg_utils.py#L1826 (json.loads), "
       "config/speculative.py (SpeculativeConfig(**dict))"),
    _t("--kv-cache-dtype", "choice", "config/cache.py#L39-L59 (CacheDType)", choices=_KV_CACHE_DTYPES),
    _t("--moe-backend", "choice", "config/kernel.py#L122-L146 (MoEBackend); engine/arg_utils.py#L1806",
       choices=_MOE_BACKENDS, normalize=True),
    _t("--linear-backend", "choice", "config/kernel.py#L244 (LinearBackend); engine/arg_utils.py#L1809",
       choices=_LINEAR_BACKENDS, normalize=True),
    _t("--dtype", "choice", "config/model.py#L99 (ModelDType)",
       choices=("auto", "half", "float16", "bfloat16", "float", "float32")),
    _t("--mamba-cache-mode", "choice", "config/cache.py#L63 (MambaCacheMode)", choices=("align", "none")),
    _t(("--mamba-cache-dtype", "--mamba-ssm-cache-dtype"), "choice", "config/cache.py#L62 (MambaDType)",
       choices=("auto", "float32", "float16", "bfloat16")),
    _t("--uvicorn-log-level", "choice", "entrypoints/launchers/cli_args.py#L305",
       choices=("critical", "debug", "error", "info", "trace", "warning")),
    _t("--served-model-name", "str", "config/model.py#L325"),
    _t("--host", "str", "entrypoints/launchers/cli_args.py#L283"),
    _t("--enable-prefix-caching", "switch", "config/cache.py#L141"),
    _t("--enable-chunked-prefill", "switch", "config/scheduler.py#L134"),
    _t("--async-scheduling", "switch", "config/scheduler.py#L208"),
    _t("--language-model-only", "switch", "config/multimodal.py#L304"),
    _t("--trust-remote-code", "switch", "config/model.py#L193"),
    _t("--enforce-eager", "switch", "config/model.py#L272"),
    _t(("--enable-expert-parallel", "-ep"), "switch", "config/parallel.py#L189"),
    _t("--enable-auto-tool-choice", "switch", "entrypoints/launchers/cli_args.py#L116"),
)

_BY_NAME: dict[str, FlagType] = {n: ft for ft in FLAG_TYPES for n in ft.names}
_CHOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_HUMAN_INT = re.compile(r"(\d+(?:\.\d+)?)([kKmMgGtT])")


def canonical_flag(flag: str) -> str:
    """'max_num_seqs', 'max-num-seqs', '--max_num_seqs' -> '--max-num-seqs' (vLLM's FlexibleArgumentParser
    accepts underscores too); '-tp' stays '-tp'."""
    f = flag.strip()
    if f.startswith("-") and not f.startswith("--") and len(f) <= 3:
        return f
    return "--" + f.lstrip("-").replace("_", "-")


def flag_type(flag: str) -> FlagType | None:
    """The shipped table's entry for a flag (aliases and --no-X switches included), or None."""
    f = canonical_flag(flag)
    if f in _BY_NAME:
        return _BY_NAME[f]
    if f.startswith("--no-") and ("--" + f[5:]) in _BY_NAME and _BY_NAME["--" + f[5:]].kind == "switch":
        return _BY_NAME["--" + f[5:]]
    return None


def _show(value: str) -> str:
    """A value for an error message: printable, and short (a long value is cut)."""
    v = "".join(c if c.isprintable() else "?" for c in value)
    return repr(v if len(v) <= 60 else v[:57] + "...")


def _bad(flag: str, shown: str, allowed: str, why: str = "not a valid value") -> UsageError:
    """`shown` is the value as _show() prints it: printable and shortened, never a secret (checked first)."""
    return UsageError(f"--set {flag.lstrip('-')}: {shown} is {why} for {flag}", f"{flag} takes {allowed}")


def human_readable_int(value: str) -> int:
    """vLLM's human_readable_int (utils/argparse_utils.py#L29, v0.32.0): '25.6k' = 25600, '16G' = 16 x 2^30,
    decimals only with the decimal (lower-case) suffixes. ValueError otherwise."""
    v = value.strip()
    m = _HUMAN_INT.fullmatch(v)
    if m:
        number, suffix = m.groups()
        if suffix in "kmgt":
            return int(float(number) * 10 ** (3 * ("kmgt".index(suffix) + 1)))
        if "." in number:
            raise ValueError(f"decimals are not allowed with the binary suffix {suffix}")
        return int(number) * 2 ** (10 * ("KMGT".index(suffix) + 1))
    return int(v)


def _in_range(ft: FlagType, x: float) -> bool:
    if ft.minimum is not None and (x <= ft.minimum if ft.min_exclusive else x < ft.minimum):
        return False
    return ft.maximum is None or x <= ft.maximum


def _release(version: str | None) -> tuple[int, int] | None:
    from spark_tui.core.catalog.vllm_compat import parse_version

    v = parse_version(version)
    return None if v is None else (v[0], v[1])


def choices_enforced(vllm_version: str | None) -> bool:
    """The table's choice lists hold for its own release; with no release named the plan targets it."""
    return vllm_version is None or _release(vllm_version) == _release(TABLE_VERSION)


def _convert(ft: FlagType, flag: str, value: str | None, vllm_version: str | None) -> Any:
    if ft.kind == "switch":
        if value is not None:
            raise _bad(flag, _show(value), ft.allowed(), "not accepted (a switch takes no value)")
        return None
    if value is None or value.strip() == "":
        raise UsageError(f"--set {flag.lstrip('-')}: {flag} needs a value", f"write --set {flag.lstrip('-')}=VALUE: "
                         f"{flag} takes {ft.allowed()}")
    shown = _show(value)
    if any(c in value for c in "\0\n\r"):
        raise _bad(flag, shown, ft.allowed(), "not accepted (it holds a NUL or a line break)")
    if ft.kind in ("int", "size", "size_or_auto"):
        try:
            if ft.kind == "int":
                x: Any = int(value.strip())
            elif ft.kind == "size_or_auto" and value.strip().lower() in ("auto", "-1"):
                x = -1
            else:
                x = human_readable_int(value)
        except ValueError:
            raise _bad(flag, shown, ft.allowed()) from None
        if not _in_range(ft, x):
            raise _bad(flag, shown, ft.allowed(), "out of range")
        return x
    if ft.kind == "float":
        try:
            x = float(value)
        except ValueError:
            raise _bad(flag, shown, ft.allowed()) from None
        if not math.isfinite(x):
            raise _bad(flag, shown, ft.allowed(), "not a finite number")
        if not _in_range(ft, x):
            raise _bad(flag, shown, ft.allowed(), "out of range")
        return x
    if ft.kind == "json_object":
        try:
            obj = json.loads(value, parse_constant=_no_constant)
        except ValueError as e:
            raise _bad(flag, shown, ft.allowed(), f"not valid JSON ({e})") from None
        if not isinstance(obj, dict):
            raise _bad(flag, shown, ft.allowed(), "not a JSON object")
        return obj
    if ft.kind == "choice":
        v = value.strip()
        if ft.normalize:
            v = v.lower().replace("-", "_")
        if choices_enforced(vllm_version):
            if v not in ft.choices:
                raise _bad(flag, shown, ft.allowed() + f" (vLLM {TABLE_VERSION})")
        elif not _CHOICE_NAME.fullmatch(v):
            raise _bad(flag, shown, f"a name made of letters, digits, '_', '-' and '.' ({ft.allowed()} in vLLM "
                       f"{TABLE_VERSION})")
        return v
    return value  # str


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # json.loads accepts NaN / Infinity by default; vLLM's configs cannot


def validate_flag_value(flag: str, value: str | None, vllm_version: str | None = None, *,
                        use_installed_vllm: bool = False) -> Any:
    """Check one `--set FLAG=VALUE` (value None: given as a bare switch) and return the value as vLLM parses
    it. Raises UsageError naming the flag, the (printable, shortened) value and what is allowed.

    A flag the shipped table does not know passes unchanged (vLLM has ~300; `plan --check` validates them
    all with the installed vLLM). With use_installed_vllm, and the installed vLLM being the targeted
    release, the installed parser decides the type and choices (and refuses flags it does not know)."""
    refuse_secret_set(flag.strip().lstrip("-"), value)
    flag = canonical_flag(flag)
    ft = flag_type(flag)
    if use_installed_vllm:
        parsed = _via_installed_parser(flag, value, vllm_version)
        if parsed is not _UNAVAILABLE:
            if ft is not None and ft.kind in ("int", "float", "size", "size_or_auto") and isinstance(parsed, (int, float)):
                if isinstance(parsed, float) and not math.isfinite(parsed):
                    raise _bad(flag, _show(value or ""), ft.allowed(), "not a finite number")
                if not _in_range(ft, parsed) and not (ft.kind == "size_or_auto" and parsed == -1):
                    raise _bad(flag, _show(value or ""), ft.allowed(), "out of range")
            return parsed
    if ft is None:
        if value is not None and any(c in value for c in "\0\n\r"):
            raise UsageError(f"--set {flag[2:]}=...: a value cannot contain NUL or a line break",
                             "remove the control character")
        return value
    if flag.startswith("--no-") and ft.kind == "switch":
        return _convert(ft, flag, value, vllm_version)
    return _convert(ft, ft.flag if flag in ft.names else flag, value, vllm_version)


def validate_set_items(items: Any, vllm_version: str | None = None) -> None:
    """Every `--set` item as the planner reads them (FLAG=VALUE sets, FLAG is a switch, FLAG= removes; an
    UPPER_CASE name is an environment variable): secrets refused, values of known flags type-checked."""
    for raw in items or ():
        name, eq, value = str(raw).partition("=")
        name = name.strip()
        if not name:
            continue  # the planner names this mistake itself
        if re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):  # an environment variable
            refuse_secret_set(name, value or None)
            if any(c in value for c in "\0\n\r"):
                raise UsageError(f"--set {name}=...: a value cannot contain NUL or a line break",
                                 "remove the control character")
            continue
        if eq and value == "":
            refuse_secret_set(name, None)
            continue  # FLAG= removes the flag: no value to check
        validate_flag_value(name, value if eq else None, vllm_version)


# ----------------------------------------------------------------------------------------- secrets
_SECRET_LAST_WORDS = {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "APIKEY"}
_SECRET_ANY_WORDS = {"SECRET", "PASSWORD", "PASSWD"}
_SECRET_PAIRS = {("API", "KEY"), ("ACCESS", "KEY"), ("PRIVATE", "KEY"), ("SECRET", "KEY"), ("AUTH", "KEY")}
# a Hugging Face user access token ("hf_" + 34 letters and digits, huggingface.co/docs/hub/security-tokens)
_HF_TOKEN_VALUE = re.compile(r"\bhf_[A-Za-z0-9]{30,}")


def is_secret_name(name: str) -> bool:
    """True for a flag or environment variable that holds a credential: HF_TOKEN, HUGGING_FACE_HUB_TOKEN,
    VLLM_API_KEY, --api-key, --hf-token, *_SECRET, *_PASSWORD, AWS_SECRET_ACCESS_KEY ... and not for
    --max-num-batched-tokens, --long-prefill-token-threshold or --allow-credentials (vLLM flags)."""
    words = [w for w in re.split(r"[-_.\s]+", name.strip().lstrip("-").upper()) if w]
    if words and words[0] == "NO":  # --no-X switches off X: the same name
        words = words[1:]
    if not words:
        return False
    if words[-1] in _SECRET_LAST_WORDS or _SECRET_ANY_WORDS.intersection(words):
        return True
    return any(p in _SECRET_PAIRS for p in zip(words, words[1:]))


def refuse_secret_set(name: str, value: str | None = None) -> None:
    """Refuse a `--set` that carries a credential: it would be written in plain text into the plan JSON,
    exports, the server's state file and log, and be visible in `ps`. The hint names the safe way. The
    value is never echoed."""
    if is_secret_name(name):
        n = name.strip().lstrip("-").upper().replace("-", "_")
        if n.startswith("NO_"):
            n = n[3:]
        if "API_KEY" in n or n == "APIKEY":
            hint = ("export VLLM_API_KEY=... in the environment instead: `spark-tui launch` hands it to vLLM "
                    "through the server's environment, and `spark-tui export --api-key-env VLLM_API_KEY` (or "
                    "--generate-api-key) makes the scripts read it at run time")
        elif "TOKEN" in n:
            hint = ("export HF_TOKEN=... (or run `hf auth login`) instead: vLLM and the downloader read it from the "
                    "environment, and exports pass it through by name only")
        else:
            hint = "put it in the environment (or a 0600 file the service reads), never on the command line"
        raise UsageError(f"--set {name.strip()}: refusing a secret on the command line (it would be stored in "
                         "plans, exports, the state file and the log, and be visible in `ps`)", hint)
    if value is not None and _HF_TOKEN_VALUE.search(value):
        raise UsageError(f"--set {name.strip()}=...: the value looks like a Hugging Face access token; refusing "
                         "a secret on the command line",
                         "export HF_TOKEN=... (or run `hf auth login`) instead; the token is read from the "
                         "environment and never written into plans or exports")


# ----------------------------------------------------------------------------------------- installed vLLM
_UNAVAILABLE = object()


@lru_cache(maxsize=1)
def _installed_actions() -> tuple[str | None, dict[str, Any]] | None:
    """(installed vLLM version, {option string: argparse action}) of the installed vLLM's `vllm serve`
    parser, imported lazily (seconds: it imports torch); None when vLLM is not importable."""
    import contextlib
    import importlib.util
    import sys

    if importlib.util.find_spec("vllm") is None:
        return None
    from spark_tui.core.catalog.vllm_compat import _parser_api, installed_vllm_version

    try:
        with contextlib.redirect_stdout(sys.stderr):  # vLLM logs to stdout while importing
            parser_cls, make_arg_parser = _parser_api()
            parser = make_arg_parser(parser_cls(prog="vllm serve"))
    except Exception:  # noqa: BLE001 - a broken vLLM install means "cannot use its parser": the table decides
        return None
    actions = {s: a for a in parser._actions for s in a.option_strings}  # noqa: SLF001 - no public list
    return installed_vllm_version(), actions


def _via_installed_parser(flag: str, value: str | None, vllm_version: str | None) -> Any:
    """The value as the installed vLLM's parser converts it, or _UNAVAILABLE (no vLLM, or another release)."""
    import argparse

    got = _installed_actions()
    if got is None:
        return _UNAVAILABLE
    installed, actions = got
    if vllm_version is not None and _release(installed) != _release(vllm_version):
        return _UNAVAILABLE
    action = actions.get(flag)
    if action is None:
        raise UsageError(f"--set {flag.lstrip('-')}: {flag} is not a flag of the installed vLLM {installed}",
                         "see `vllm serve --help`, or plan for another release with --vllm-version")
    switch = action.nargs == 0
    allowed = ("no value (a switch)" if switch else
               "one of: " + ", ".join(str(c) for c in action.choices if c is not None) if action.choices else
               f"a value of type {getattr(action.type, '__name__', 'str')}")
    if switch:
        if value is not None:
            raise _bad(flag, _show(value), allowed, "not accepted (a switch takes no value)")
        return None
    if value is None or value == "":
        if action.nargs == "?":
            return None
        raise UsageError(f"--set {flag.lstrip('-')}: {flag} needs a value", f"{flag} takes {allowed}")
    words = value.split() if action.nargs in ("+", "*") else [value]
    out = []
    for w in words:
        try:
            x = action.type(w) if action.type is not None else w
        except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
            raise _bad(flag, _show(value), allowed, f"rejected by vLLM {installed} ({str(e)[:200]})") from None
        if action.choices and x not in action.choices:
            raise _bad(flag, _show(value), allowed + f" (vLLM {installed})")
        out.append(x)
    return out if action.nargs in ("+", "*") else out[0]
