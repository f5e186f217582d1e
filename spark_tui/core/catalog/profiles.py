"""Device, checkpoint and model profiles: sourced TOML data, validated as it loads.

Layout (shipped in the wheel as `spark_tui/_profiles`, from the checkout's `profiles/` otherwise):
`devices/*.toml`, `checkpoints/*.toml`, `models/*.toml`. A user directory
`config_dir()/profiles/{devices,checkpoints,models}/*.toml` adds profiles or changes fields of shipped
ones (merged by `id`, tables merged key by key).

Rules (ProfileError, exit 4, naming file and key):
- every number (int or float, also inside tables and lists) needs a source: a `[sources]` entry for
  its dotted key or for one of the key's parents (e.g. `accuracy` covers `accuracy.mmlu_pro.bf16`),
  or a `source` string in the enclosing table (recipes);
- a value that is not known is written as a string ("not verified", "not published") and reads as
  None here; `unknowns()` lists them so the UI can say so;
- required keys and their types are checked.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from spark_tui.errors import ProfileError, UsageError

KINDS = ("devices", "checkpoints", "models")
UNKNOWN_WORDS = ("not verified", "not published", "unknown", "from memavailable")


# --------------------------------------------------------------------------------------------- locate
def shipped_dir() -> Path:
    """The shipped profiles: `spark_tui/_profiles` in a wheel, else the checkout's `profiles/`."""
    try:
        from importlib.resources import files

        res = files("spark_tui").joinpath("_profiles")
        if res.is_dir():
            return Path(str(res))
    except (ModuleNotFoundError, TypeError, FileNotFoundError):  # pragma: no cover - defensive
        pass
    here = Path(__file__).resolve().parents[3] / "profiles"
    if here.is_dir():
        return here
    raise ProfileError(
        "the shipped profiles are missing (neither spark_tui/_profiles nor ../profiles exists)",
        "reinstall spark-tui; a wheel built with hatchling includes them",
    )


def user_dir() -> Path:
    from spark_tui.core.paths import config_dir

    return config_dir() / "profiles"


# --------------------------------------------------------------------------------------------- models
@dataclass(frozen=True)
class Recipe:
    id: str
    checkpoint: str
    title: str
    source: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class DeviceProfile:
    id: str
    name: str
    family: str  # sm_12x | sm_10x | sm_9x | older | cpu
    sm: int | None = None
    memory_gb: float | None = None
    cuda_total_memory_gib: float | None = None
    unified_memory: bool = False
    pci_device_ids: tuple[str, ...] = ()
    name_patterns: tuple[str, ...] = ()
    native_nvfp4: bool = False
    supported: bool = True
    refuse_reason: str = ""
    generic: bool = False
    sm_min: int | None = None
    sm_max: int | None = None
    cpu: bool = False
    kv_cache_memory_bytes: int | None = None
    max_model_len: int | None = None
    typical_mem_available_gib: float | None = None
    attention_block_size: int = 16
    attention_kernel_block_alignment: int = 16
    primary_recipe: str | None = None
    recipes: tuple[Recipe, ...] = ()
    notes: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    path: str = ""

    @property
    def memory_total_bytes(self) -> int | None:
        """What vLLM budgets from: CUDA total on unified memory, else the card's capacity (GiB)."""
        if self.cuda_total_memory_gib is not None:
            return int(self.cuda_total_memory_gib * 2**30)
        if self.memory_gb is not None:
            return int(self.memory_gb * 2**30)
        return None

    def recipe(self, rid: str | None = None) -> Recipe | None:
        rid = rid or self.primary_recipe
        return next((r for r in self.recipes if r.id == rid), None)

    def recipe_for(self, checkpoint_id: str) -> Recipe | None:
        """The recipe to compare a plan with: the primary one when it serves this checkpoint, else the first
        recipe that does."""
        prim = self.recipe()
        if prim is not None and prim.checkpoint == checkpoint_id:
            return prim
        return next((r for r in self.recipes if r.checkpoint == checkpoint_id), None)

    def source(self, key: str) -> str:
        return _source_for(self.sources, key) or f"profiles/devices/{self.id}.toml"


@dataclass(frozen=True)
class KernelFigure:
    """A published measurement of one checkpoint on one GPU (the MoE kernel it ran, when the source says)."""

    sm: tuple[int, ...]
    device: str
    what: str
    value: float
    backend: str
    source: str

    def line(self) -> str:
        return f"{self.device}: {self.value:g} {self.what} ({self.backend}; {self.source})"


@dataclass(frozen=True)
class CheckpointProfile:
    """A checkpoint and its real quantization structure. Precisions use the names of
    spark_tui/core/catalog/checkpoint.py (W4A4_NVFP4, W4A16_NVFP4, FP8_TENSOR, FP8_CHANNEL, FP8_BLOCK, BF16); None is
    "not verified"."""

    id: str
    repo_id: str
    name: str
    model: str
    format: str | None  # None: not verified (a checkpoint.py format name: modelopt_mixed, fp8, ...)
    weights: str = ""
    w4a4: str | None = None  # "yes" | "no" (routed experts W4A4), None not verified
    size_on_disk_gb: float | None = None
    min_sm_native: int | None = None  # the first SM whose MoE kernels run this checkpoint's precision natively
    hopper_path: str | None = None
    mtp_head: bool | None = None
    mtp_dtype: str | None = None
    license: str | None = None
    revision: str | None = None
    recommended_on: tuple[str, ...] = ()
    quant_method: str | None = None  # the vLLM method: modelopt_mixed | modelopt_fp4 | compressed-tensors | fp8 | none
    experts: str | None = None  # routed experts: W4A16_NVFP4 | W4A4_NVFP4 | FP8_BLOCK | BF16 (picks the MoE kernel)
    shared_expert: str | None = None
    attention: str | None = None  # full-attention q/k/v/o
    deltanet: str | None = None  # Gated DeltaNet in_proj_qkv / in_proj_z / out_proj
    lm_head: str | None = None
    group_size: int | None = None
    kv_cache_quant_algo: str | None = None  # as declared by the checkpoint ("none" when it declares none)
    kv_cache_auto: str | None = None  # what vLLM's --kv-cache-dtype auto gives for it
    kv_cache_scales: bool | None = None
    ignore: tuple[str, ...] = ()  # the published ignore / exclude list, when known
    min_sm: int | None = None  # vLLM's get_min_capability for its quantization method
    figures: tuple[KernelFigure, ...] = ()
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict, compare=False)
    perplexity: dict[str, float] = field(default_factory=dict, compare=False)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    unknown: tuple[str, ...] = ()  # keys whose value is explicitly not known
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    path: str = ""

    @property
    def is_nvfp4(self) -> bool:
        """Its routed experts are NVFP4 (W4A4 or W4A16), or its id/format says NVFP4 when not verified."""
        if self.experts is not None:
            return "NVFP4" in self.experts
        return "nvfp4" in self.id or (self.format or "").endswith("fp4") or "nvfp4" in (self.format or "")

    @property
    def native_fp4_capable(self) -> bool:
        """W4A4 experts: the checkpoint can use FP4 tensor cores where the GPU has them."""
        return self.experts == "W4A4_NVFP4"

    def figures_for(self, sm: int) -> list[KernelFigure]:
        return [f for f in self.figures if sm in f.sm]

    def structure(self) -> dict[str, str | None]:
        """The per-part precisions (None: not verified)."""
        return {"quant_method": self.quant_method, "experts": self.experts, "shared_expert": self.shared_expert,
                "attention": self.attention, "deltanet": self.deltanet, "lm_head": self.lm_head,
                "mtp": self.mtp_dtype, "kv_cache_quant_algo": self.kv_cache_quant_algo,
                "kv_cache_auto": self.kv_cache_auto}

    def source(self, key: str) -> str:
        return _source_for(self.sources, key) or f"profiles/checkpoints/{self.id}.toml"


@dataclass(frozen=True)
class ModelArch:
    id: str
    name: str
    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    path: str = ""

    def __getitem__(self, k: str) -> Any:
        return self.values[k]

    def source(self, key: str) -> str:
        return _source_for(self.sources, key) or f"profiles/models/{self.id}.toml"


@dataclass(frozen=True)
class Catalog:
    devices: dict[str, DeviceProfile]
    checkpoints: dict[str, CheckpointProfile]
    models: dict[str, ModelArch]

    def device(self, did: str) -> DeviceProfile:
        if did not in self.devices:
            raise UsageError(  # an id the user typed: bad input (exit 2), not a broken profile file (exit 4)
                f"no device profile {did!r}",
                f"one of: {', '.join(sorted(self.devices))} (see `spark-tui devices`)",
            )
        return self.devices[did]

    def checkpoint(self, cid: str) -> CheckpointProfile:
        if cid in self.checkpoints:
            return self.checkpoints[cid]
        for c in self.checkpoints.values():  # accept the HF repo id too
            if c.repo_id.lower() == cid.lower():
                return c
        raise UsageError(
            f"no checkpoint profile {cid!r}",
            f"one of: {', '.join(sorted(self.checkpoints))} (see `spark-tui checkpoints`)",
        )

    def model(self, mid: str) -> ModelArch:
        if mid not in self.models:
            raise ProfileError(f"no model profile {mid!r}", f"one of: {', '.join(sorted(self.models))}")
        return self.models[mid]


# --------------------------------------------------------------------------------------------- helpers
def _source_for(sources: dict[str, str], key: str) -> str | None:
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        k = ".".join(parts[:i])
        if k in sources:
            return sources[k]
    return None


def is_unknown(v: Any) -> bool:
    return isinstance(v, str) and v.strip().lower().startswith(UNKNOWN_WORDS)


def _numbers(d: Any, prefix: str = "", table_source: bool = False) -> Iterable[tuple[str, bool, float]]:
    """(dotted key, covered-by-a-table-source, the number) for every number in d."""
    if isinstance(d, dict):
        has_src = table_source or isinstance(d.get("source"), str)
        for k, v in d.items():
            if k == "sources" and not prefix:
                continue
            yield from _numbers(v, f"{prefix}.{k}" if prefix else k, has_src)
    elif isinstance(d, list):
        for item in d:
            yield from _numbers(item, prefix, table_source)
    elif isinstance(d, (int, float)) and not isinstance(d, bool):
        yield prefix, table_source, d


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path}: invalid TOML ({e})", "fix the file's syntax") from None
    except UnicodeDecodeError as e:  # a binary file, or another encoding: TOML is UTF-8 text
        raise ProfileError(f"{path}: not a UTF-8 text file (byte {e.start}: {e.reason})",
                           "profiles are TOML text; remove or replace the file") from None
    except OSError as e:
        raise ProfileError(f"{path}: cannot read ({e})", "check the file's permissions") from None


def _check_sources(path: str, data: dict[str, Any]) -> dict[str, str]:
    sources = data.get("sources", {})
    if not isinstance(sources, dict) or not all(isinstance(v, str) and v.strip() for v in sources.values()):
        raise ProfileError(f"{path}: [sources] must map dotted keys to non-empty strings", "see profiles/README")
    for key, covered, num in _numbers(data):
        if not math.isfinite(num):
            raise ProfileError(f"{path}: the number at key '{key}' is not finite (nan or inf)",
                               f"write a real value for '{key}', or \"not verified\" when it is not known")
        if not covered and _source_for(sources, key) is None:
            raise ProfileError(
                f"{path}: the number at key '{key}' has no source",
                f"add `{key} = \"<where it comes from>\"` under [sources]: a public reference (URL, model card, "
                "'vLLM vX.Y.Z vllm/<path>:<line>', '<owner>/<repo> PR #N')",
            )
    return sources


# Device keys that vLLM's own per-release defaults replaced (spark_tui.core.catalog.vllm_defaults): key -> plan --set flag
_RETIRED_DEVICE_KEYS = {"gpu_memory_utilization": "gpu-memory-utilization", "vllm_default_max_num_seqs": "max-num-seqs",
                        "vllm_default_max_num_batched_tokens": "max-num-batched-tokens"}

_T: dict[str, type | tuple[type, ...]] = {"str": str, "int": int, "num": (int, float), "bool": bool, "list": list, "dict": dict}


def _get(path: str, data: dict[str, Any], key: str, typ: str, required: bool = False, unknown_ok: bool = False,
         default: Any = None, lo: float | None = None) -> Any:
    """data[key] checked: present when required, of type typ, and for numbers > lo (memory, sizes, counts:
    lo=0) or >= 0 with lo=-1 (counts that may be zero); a value "not verified" / "not published" reads None
    when unknown_ok."""
    if key not in data:
        if required:
            raise ProfileError(f"{path}: required key '{key}' is missing", f"add `{key} = ...` to the file")
        return default
    v = data[key]
    if unknown_ok and is_unknown(v):
        return None
    t = _T[typ]
    if not isinstance(v, t) or (typ in ("int", "num") and isinstance(v, bool)):
        raise ProfileError(
            f"{path}: key '{key}' must be {typ}" + (" or \"not verified\"/\"not published\"" if unknown_ok else "")
            + f", got {v!r}",
            f"fix '{key}' in {path}",
        )
    if lo is not None and typ in ("int", "num") and isinstance(v, (int, float)) and not v > lo:
        what = "positive" if lo == 0 else f"greater than {lo:g}" if lo != -1 else "zero or more"
        raise ProfileError(f"{path}: key '{key}' must be {what}, got {v!r}", f"fix '{key}' in {path}")
    return v


def _check_retired(path: str, d: dict[str, Any]) -> None:
    for key, flag in _RETIRED_DEVICE_KEYS.items():
        if key in d:
            raise ProfileError(
                f"{path}: key '{key}' is no longer read from device profiles: plans start from the installed vLLM "
                "release's own default",
                f"remove '{key}' from {path}; to change it for one plan pass `spark-tui plan --set {flag}=VALUE`")


def _device(path: str, d: dict[str, Any]) -> DeviceProfile:
    _check_retired(path, d)
    sources = _check_sources(path, d)
    recipes = []
    for i, r in enumerate(_get(path, d, "recipes", "list", default=[])):
        rp = f"{path} recipes[{i}]"
        if not isinstance(r, dict):
            raise ProfileError(f"{rp}: must be a table", "use [[recipes]]")
        args = _get(rp, r, "args", "list", required=True)
        if not all(isinstance(a, str) for a in args):
            raise ProfileError(f"{rp}: 'args' must be a list of strings", "quote every argument")
        recipes.append(Recipe(
            id=_get(rp, r, "id", "str", required=True), checkpoint=_get(rp, r, "checkpoint", "str", required=True),
            title=_get(rp, r, "title", "str", default=""), source=_get(rp, r, "source", "str", required=True),
            args=tuple(args)))
    pats = _get(path, d, "name_patterns", "list", default=[])
    for p in pats:
        try:
            re.compile(p)
        except re.error as e:
            raise ProfileError(f"{path}: key 'name_patterns' has an invalid regex {p!r} ({e})", "fix the pattern")
    pci = [str(x).lower().removeprefix("0x") for x in _get(path, d, "pci_device_ids", "list", default=[])]
    for x in pci:
        if not re.fullmatch(r"[0-9a-f]{4}", x):
            raise ProfileError(f"{path}: key 'pci_device_ids' entry {x!r} is not a 4-digit hex device id",
                               "write the 16-bit device id, e.g. \"2b85\"")
    prim = _get(path, d, "primary_recipe", "str")
    if prim and prim not in {r.id for r in recipes}:
        raise ProfileError(f"{path}: key 'primary_recipe' names {prim!r}, which is not among its [[recipes]]",
                           "fix the id")
    return DeviceProfile(
        id=_get(path, d, "id", "str", required=True), name=_get(path, d, "name", "str", required=True),
        family=_get(path, d, "family", "str", required=True), sm=_get(path, d, "sm", "int", lo=0),
        memory_gb=_get(path, d, "memory_gb", "num", unknown_ok=True, lo=0),
        cuda_total_memory_gib=_get(path, d, "cuda_total_memory_gib", "num", lo=0),
        unified_memory=_get(path, d, "unified_memory", "bool", default=False), pci_device_ids=tuple(pci),
        name_patterns=tuple(pats), native_nvfp4=_get(path, d, "native_nvfp4", "bool", default=False),
        supported=_get(path, d, "supported", "bool", default=True),
        refuse_reason=_get(path, d, "refuse_reason", "str", default=""),
        generic=_get(path, d, "generic", "bool", default=False), sm_min=_get(path, d, "sm_min", "int", lo=-1),
        sm_max=_get(path, d, "sm_max", "int", lo=-1), cpu=_get(path, d, "cpu", "bool", default=False),
        kv_cache_memory_bytes=_get(path, d, "kv_cache_memory_bytes", "int", lo=0),
        max_model_len=_get(path, d, "max_model_len", "int", lo=0),
        typical_mem_available_gib=_get(path, d, "typical_mem_available_gib", "num", lo=0),
        attention_block_size=_get(path, d, "attention_block_size", "int", default=16, lo=0),
        attention_kernel_block_alignment=_get(path, d, "attention_kernel_block_alignment", "int", default=16, lo=0),
        primary_recipe=prim, recipes=tuple(recipes), notes=tuple(_get(path, d, "notes", "list", default=[])),
        sources=sources, path=path)


_PRECISIONS = ("W4A4_NVFP4", "W4A16_NVFP4", "FP8_TENSOR", "FP8_CHANNEL", "FP8_BLOCK", "BF16")
_QUANT_METHODS = ("modelopt_mixed", "modelopt_fp4", "modelopt", "compressed-tensors", "fp8", "none")


def _checkpoint(path: str, d: dict[str, Any]) -> CheckpointProfile:
    sources = _check_sources(path, d)
    known = {"id", "repo_id", "name", "model", "format", "weights", "w4a4", "size_on_disk_gb", "min_sm_native",
             "hopper_path", "mtp_head", "mtp_dtype", "license", "revision", "recommended_on", "accuracy",
             "perplexity", "sources", "quant_method", "experts", "shared_expert", "attention", "deltanet", "lm_head",
             "group_size", "kv_cache_quant_algo", "kv_cache_auto", "kv_cache_scales", "ignore", "min_sm", "figures"}
    unknown = tuple(k for k, v in d.items() if is_unknown(v))
    for key in ("mtp_head", "kv_cache_scales"):
        v = d.get(key)
        if not (v is None or isinstance(v, bool) or is_unknown(v)):
            raise ProfileError(f"{path}: key '{key}' must be true/false or \"not verified\", got {v!r}",
                               f"fix '{key}'")
    parts = {}
    for key in ("experts", "shared_expert", "attention", "deltanet", "lm_head"):
        v = _get(path, d, key, "str", unknown_ok=True)
        if v is not None and v not in _PRECISIONS:
            raise ProfileError(f"{path}: key '{key}' must be one of {', '.join(_PRECISIONS)} or \"not verified\", "
                               f"got {v!r}", f"fix '{key}'")
        if v is not None and key not in sources:  # a claimed structure needs its own source
            raise ProfileError(f"{path}: key '{key}' ({v}) has no source", f"add `{key} = \"...\"` under [sources]")
        parts[key] = v
    qm = _get(path, d, "quant_method", "str", unknown_ok=True)
    if qm is not None and qm not in _QUANT_METHODS:
        raise ProfileError(f"{path}: key 'quant_method' must be one of {', '.join(_QUANT_METHODS)}, got {qm!r}",
                           "fix 'quant_method'")
    acc = _get(path, d, "accuracy", "dict", default={})
    for bench, row in acc.items():
        if not isinstance(row, dict) or not all(isinstance(x, (int, float)) for x in row.values()):
            raise ProfileError(f"{path}: key 'accuracy.{bench}' must be a table of numbers", "e.g. { nvfp4 = 85.0 }")
    figs = []
    for i, f in enumerate(_get(path, d, "figures", "list", default=[])):
        fp = f"{path} figures[{i}]"
        if not isinstance(f, dict):
            raise ProfileError(f"{fp}: must be a table", "use [[figures]]")
        sms = _get(fp, f, "sm", "list", required=True)
        if not sms or not all(isinstance(x, int) and not isinstance(x, bool) for x in sms):
            raise ProfileError(f"{fp}: 'sm' must be a non-empty list of compute capabilities", "e.g. sm = [100]")
        figs.append(KernelFigure(sm=tuple(sms), device=_get(fp, f, "device", "str", required=True),
                                 what=_get(fp, f, "what", "str", required=True),
                                 value=float(_get(fp, f, "value", "num", required=True)),
                                 backend=_get(fp, f, "backend", "str", default="not stated"),
                                 source=_get(fp, f, "source", "str", required=True)))
    return CheckpointProfile(
        id=_get(path, d, "id", "str", required=True), repo_id=_get(path, d, "repo_id", "str", required=True),
        name=_get(path, d, "name", "str", default=""), model=_get(path, d, "model", "str", required=True),
        format=_get(path, d, "format", "str", required=True, unknown_ok=True),
        weights=_get(path, d, "weights", "str", default=""), w4a4=_get(path, d, "w4a4", "str", unknown_ok=True),
        size_on_disk_gb=_get(path, d, "size_on_disk_gb", "num", unknown_ok=True, lo=0),
        min_sm_native=_get(path, d, "min_sm_native", "int", unknown_ok=True, lo=0),
        hopper_path=_get(path, d, "hopper_path", "str", unknown_ok=True),
        mtp_head=None if is_unknown(d.get("mtp_head")) else d.get("mtp_head"),
        mtp_dtype=_get(path, d, "mtp_dtype", "str", unknown_ok=True),
        license=_get(path, d, "license", "str", unknown_ok=True), revision=_get(path, d, "revision", "str"),
        recommended_on=tuple(_get(path, d, "recommended_on", "list", default=[])),
        quant_method=qm, **parts,
        group_size=_get(path, d, "group_size", "int", unknown_ok=True),
        kv_cache_quant_algo=_get(path, d, "kv_cache_quant_algo", "str", unknown_ok=True),
        kv_cache_auto=_get(path, d, "kv_cache_auto", "str", unknown_ok=True),
        kv_cache_scales=None if is_unknown(d.get("kv_cache_scales")) else d.get("kv_cache_scales"),
        ignore=tuple(_get(path, d, "ignore", "list", default=[])),
        min_sm=_get(path, d, "min_sm", "int", unknown_ok=True), figures=tuple(figs),
        accuracy=acc, perplexity=_get(path, d, "perplexity", "dict", default={}),
        extra={k: v for k, v in d.items() if k not in known}, unknown=unknown, sources=sources, path=path)


def _model(path: str, d: dict[str, Any]) -> ModelArch:
    sources = _check_sources(path, d)
    need = ("num_hidden_layers", "num_full_attention_layers", "num_linear_attention_layers", "num_key_value_heads",
            "head_dim", "linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim",
            "linear_value_head_dim", "linear_conv_kernel_dim", "mamba_ssm_dtype_bytes", "hidden_size",
            "num_experts", "num_experts_per_tok", "moe_intermediate_size", "vocab_size", "max_position_embeddings",
            "mtp_num_hidden_layers")
    may_be_zero = {"num_full_attention_layers", "num_linear_attention_layers", "linear_num_key_heads",
                   "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim", "num_experts",
                   "num_experts_per_tok", "moe_intermediate_size", "mtp_num_hidden_layers"}
    for k in need:  # a zero head count or size would divide by zero in the memory model, a negative one lie
        _get(path, d, k, "int", required=True, lo=-1 if k in may_be_zero else 0)
    return ModelArch(id=_get(path, d, "id", "str", required=True), name=_get(path, d, "name", "str", default=""),
                     values={k: v for k, v in d.items() if k != "sources"}, sources=sources, path=path)


_BUILD = {"devices": _device, "checkpoints": _checkpoint, "models": _model}


def _raw(dirs: list[Path], kind: str) -> dict[str, tuple[str, dict[str, Any]]]:
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for base in dirs:
        for path in sorted((base / kind).glob("*.toml")):
            data = _read(path)
            pid = data.get("id")
            if not isinstance(pid, str) or not pid:
                raise ProfileError(f"{path}: key 'id' is missing or not a string", "add `id = \"...\"`")
            if pid in out and out[pid][0].startswith(str(base)):
                raise ProfileError(f"{path}: duplicate id {pid!r} (also in {out[pid][0]})", "give each profile its own id")
            if pid in out:  # user override: merge fields onto the shipped profile
                if kind == "devices":
                    _check_retired(str(path), data)
                _check_sources(str(path), data)  # a changed number needs its own source, not the shipped one
                data = _merge(out[pid][1], data)
                path_s = f"{out[pid][0]} + {path}"
            else:
                path_s = str(path)
            out[pid] = (path_s, data)
    return out


def load_catalog(shipped: Path | None = None, user: Path | None | bool = True) -> Catalog:
    """Load (and validate) every profile: shipped first, then the user's overrides merged by id."""
    dirs = [shipped or shipped_dir()]
    if user is True:
        u = user_dir()
        if u.is_dir():
            dirs.append(u)
    elif isinstance(user, Path) and user.is_dir():
        dirs.append(user)
    built: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        built[kind] = {pid: _BUILD[kind](p, d) for pid, (p, d) in _raw(dirs, kind).items()}
    cat = Catalog(built["devices"], built["checkpoints"], built["models"])
    for c in cat.checkpoints.values():
        if c.model not in cat.models:
            raise ProfileError(f"{c.path}: key 'model' names {c.model!r}, which has no profile in models/",
                               f"one of: {', '.join(sorted(cat.models))}")
    for dv in cat.devices.values():
        for r in dv.recipes:
            if r.checkpoint not in cat.checkpoints:
                raise ProfileError(f"{dv.path}: recipe {r.id!r} names checkpoint {r.checkpoint!r}, which has no profile",
                                   f"one of: {', '.join(sorted(cat.checkpoints))}")
    return cat


@lru_cache(maxsize=1)
def _cached(key: str) -> Catalog:
    return load_catalog()


def nvfp4_verdict(d: "DeviceProfile") -> tuple[str, str]:
    """How this device runs the NVFP4 checkpoints, from the profile's own fields (`supported`,
    `refuse_reason`, `native_nvfp4`): ("native NVFP4" | "fallback" | "unsupported", reason). The `devices`
    command and the TUI's Device screen both show this."""
    if not d.supported:
        return "unsupported", d.refuse_reason or "the profile marks this device unsupported"
    if d.native_nvfp4:
        return "native NVFP4", (f"{d.family}: FP4 tensor cores run the NVFP4 GEMMs natively "
                                f"({d.source('native_nvfp4')})")
    return "fallback", (f"{d.family}: no FP4 tensor cores; NVFP4 weights run weight-only (W4A16) or use the FP8 "
                        f"checkpoint ({d.source('native_nvfp4')})")


def catalog() -> Catalog:
    """The catalog for this process (cached; the key is the user dir when it exists, so tests can switch it, and the
    same for every missing one: they all give the shipped catalog)."""
    u = user_dir()
    return _cached(str(u) if u.is_dir() else "")


# --------------------------------------------------------------------------------------------- matching
@dataclass(frozen=True)
class Match:
    device: DeviceProfile
    by: str  # "pci-device-id" | "name" | "sm-family"
    detail: str


def match_gpu(cat: Catalog, name: str | None, pci_device: str | None, sm: int | None) -> Match | None:
    """Pick the device profile for a probed GPU: PCI device id, then name pattern, then SM family rule."""
    specific = [d for d in cat.devices.values() if not d.generic and not d.cpu]
    if pci_device:
        pid = pci_device.lower().removeprefix("0x")
        if len(pid) == 8:  # NVML pciDeviceId "0xDDDDVVVV": device id in the high 16 bits
            pid = pid[:4]
        for d in specific:
            if pid in d.pci_device_ids:
                return Match(d, "pci-device-id", f"PCI device id {pid} is listed in {d.id}")
    if name:
        best: tuple[int, DeviceProfile, str] | None = None
        for d in specific:
            for p in d.name_patterns:
                m = re.search(p, name, re.IGNORECASE)
                # the longest matching pattern wins ("GB10" must not take "GB100"; Max-Q over plain PRO 6000)
                if m and not _word_cut(name, m) and (best is None or len(p) > best[0]):
                    best = (len(p), d, p)
        if best:
            return Match(best[1], "name", f"GPU name {name!r} matches pattern {best[2]!r} of {best[1].id}")
    if sm is not None:
        for d in cat.devices.values():
            if d.generic and d.sm_min is not None and d.sm_max is not None and d.sm_min <= sm <= d.sm_max:
                return Match(d, "sm-family", f"sm_{sm} falls in {d.id} (sm_{d.sm_min}..sm_{d.sm_max})")
    return None


def _word_cut(name: str, m: re.Match[str]) -> bool:
    """True when the match ends inside a longer token (pattern "GB10" inside "GB100" / "GB102")."""
    end = m.end()
    return end < len(name) and name[end].isalnum() and m.group(0)[-1:].isalnum()
