"""spark_tui.core.planning.flagtypes: `--set` values checked against the flag's type, range and choices (issue #14
item 8), and secrets refused in `--set` (item 2). The table is compared with the real vLLM 0.32.0 parser in
tests/e2e/test_flagtypes_vllm.py."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spark_tui.core.planning import flagtypes as ft
from spark_tui.errors import ExitCode, UsageError


def bad(flag, value, version=None) -> UsageError:
    with pytest.raises(UsageError) as ei:
        ft.validate_flag_value(flag, value, version)
    assert ei.value.exit_code == ExitCode.USAGE
    return ei.value


# --------------------------------------------------------------------------------- the examples
@pytest.mark.parametrize("flag,value,why", [
    ("max-num-seqs", "abc", "not a valid value"),
    ("gpu-memory-utilization", "nan", "not a finite number"),
    ("gpu-memory-utilization", "inf", "not a finite number"),
    ("port", "abc", "not a valid value"),
    ("port", "99999", "out of range"),
])
def test_the_values_that_crashed_the_planner_are_refused_with_what_is_allowed(flag, value, why):
    e = bad(flag, value)
    assert f"--set {flag}: {value!r} is {why} for --{flag}" == e.message
    assert e.hint.startswith(f"--{flag} takes ")


def test_the_hint_says_what_is_allowed():
    assert bad("port", "0").hint == "--port takes an integer >= 1 and <= 65535"
    assert bad("gpu-memory-utilization", "1.5").hint == "--gpu-memory-utilization takes a number > 0 and <= 1"
    assert bad("max-num-seqs", "0").hint == "--max-num-seqs takes an integer >= 1"
    h = bad("kv-cache-dtype", "fp9").hint
    assert h.startswith("--kv-cache-dtype takes one of: auto, float16, bfloat16, fp8,") and h.endswith("(vLLM 0.32.0)")
    assert "it is a switch" in bad("enable-prefix-caching", "1").hint


# --------------------------------------------------------------------------------- accepted values, typed
@pytest.mark.parametrize("flag,value,expected", [
    ("max-num-seqs", "32", 32),
    ("--max-num-seqs", " 8 ", 8),
    ("max_num_seqs", "4", 4),  # vLLM's FlexibleArgumentParser takes underscores too
    ("port", "1", 1),
    ("port", "65535", 65535),
    ("gpu-memory-utilization", "1", 1.0),
    ("gpu-memory-utilization", "0.5", 0.5),
    ("device-memory-utilization", "0.9", 0.9),  # vLLM's alias
    ("max-num-batched-tokens", "8192", 8192),
    ("max-num-batched-tokens", "16k", 16000),  # decimal suffix
    ("max-num-batched-tokens", "16K", 16384),  # binary suffix
    ("max-num-batched-tokens", "25.6k", 25600),
    ("kv-cache-memory-bytes", "16M", 16 * 2**20),
    ("kv-cache-memory-bytes", "16G", 16 * 2**30),
    ("max-model-len", "auto", -1),
    ("max-model-len", "-1", -1),
    ("max-model-len", "262144", 262144),
    ("max-model-len", "256K", 262144),
    ("tensor-parallel-size", "2", 2),
    ("-tp", "2", 2),
    ("speculative-config", '{"method":"mtp","num_speculative_tokens":1}', {"method": "mtp", "num_speculative_tokens": 1}),
    ("moe-backend", "marlin", "marlin"),
    ("moe-backend", "FlashInfer-Cutlass", "flashinfer_cutlass"),  # vLLM lower-cases and turns - into _
    ("kv-cache-dtype", "fp8", "fp8"),
    ("dtype", "bfloat16", "bfloat16"),
    ("cpu-offload-gb", "0", 0.0),
    ("served-model-name", "qwen", "qwen"),
    ("enable-prefix-caching", None, None),
    ("no-enable-prefix-caching", None, None),
    ("some-future-flag", "anything", "anything"),  # not in the table: `plan --check` covers it
    ("some-future-switch", None, None),
])
def test_good_values_come_back_as_vllm_parses_them(flag, value, expected):
    assert ft.validate_flag_value(flag, value) == expected


@pytest.mark.parametrize("flag,value", [
    ("max-num-seqs", "-3"), ("max-num-seqs", "1.5"), ("max-num-seqs", ""), ("max-num-seqs", "1e3"),
    ("port", "-1"), ("port", "8000.0"), ("port", "0x1f90"),
    ("gpu-memory-utilization", "0"), ("gpu-memory-utilization", "-0.5"), ("gpu-memory-utilization", "abc"),
    ("gpu-memory-utilization", "-inf"),
    ("max-num-batched-tokens", "1.5K"),  # vLLM: no decimals with binary suffixes
    ("max-num-batched-tokens", "16MiB"), ("max-num-batched-tokens", "0"), ("max-num-batched-tokens", "-16k"),
    ("kv-cache-memory-bytes", "0"), ("kv-cache-memory-bytes", "lots"),
    ("max-model-len", "-2"), ("max-model-len", "big"),
    ("tensor-parallel-size", "0"),
    ("speculative-config", "{"), ("speculative-config", "[1, 2]"), ("speculative-config", "3"),
    ("speculative-config", '{"num_speculative_tokens": NaN}'),  # json.loads takes NaN; vLLM's config cannot
    ("moe-backend", "frobnicate"), ("kv-cache-dtype", "fp9"), ("dtype", "int3"),
    ("enable-prefix-caching", "true"), ("no-enable-prefix-caching", "0"),
    ("max-num-seqs", None),  # a valued flag given as a bare switch
    ("served-model-name", "a\nb"), ("some-future-flag", "x\0y"),
])
def test_bad_values_are_refused(flag, value):
    e = bad(flag, value)
    assert e.message.startswith(f"--set {ft.canonical_flag(flag).lstrip('-')}")


def test_choices_hold_for_the_table_release_only():
    # vLLM adds kernels every release: another release may know names the 0.32.0 table does not
    assert ft.validate_flag_value("moe-backend", "some_new_backend", "0.34.0") == "some_new_backend"
    assert ft.validate_flag_value("moe-backend", "some-new-backend", "0.34.0") == "some_new_backend"
    bad("moe-backend", "some_new_backend", "0.32.0")
    bad("moe-backend", "some_new_backend", "0.32.1+cpu")
    bad("moe-backend", "some_new_backend", None)
    bad("moe-backend", "$(reboot)", "0.34.0")  # still has to look like a name
    bad("kv-cache-dtype", "fp8 --api-key x", "0.34.0")
    # types and ranges hold for every release
    bad("port", "99999", "0.19.0")
    bad("gpu-memory-utilization", "nan", "0.34.0")


def test_an_error_never_prints_a_long_or_unprintable_value_whole():
    e = bad("max-num-seqs", "9" * 5 + "x" * 500 + "\x1b[31m")
    assert len(e.message) < 200 and "\x1b" not in e.message and "..." in e.message


def test_every_table_entry_has_a_public_source_and_a_known_kind():
    assert ft.TABLE_VERSION == "0.32.0"
    names = [n for t in ft.FLAG_TYPES for n in t.names]
    assert len(names) == len(set(names))
    for t in ft.FLAG_TYPES:
        assert t.source.startswith("https://github.com/vllm-project/vllm/blob/v0.32.0/vllm/"), t
        assert t.kind in ("int", "float", "size", "size_or_auto", "json_object", "choice", "switch", "str"), t
        assert (t.kind == "choice") == bool(t.choices), t
        assert t.allowed()


@settings(max_examples=300, deadline=None)
@given(flag=st.sampled_from([n for t in ft.FLAG_TYPES for n in t.names]),
       value=st.one_of(st.none(), st.text(max_size=30),
                       st.sampled_from(["nan", "inf", "-inf", "1e309", "-0", "0", "1", "65536", "16G", "auto",
                                        "{}", "[]", "null", '{"a": Infinity}', "٣", "1_000"])),
       version=st.sampled_from([None, "0.32.0", "0.33.0", "0.19.0", "nightly"]))
def test_any_value_is_either_accepted_typed_or_refused_cleanly(flag, value, version):
    try:
        got = ft.validate_flag_value(flag, value, version)
    except UsageError as e:
        assert e.message.startswith("--set ") and e.hint
        return
    t = ft.flag_type(flag)
    if t.kind == "switch":
        assert got is None
    elif t.kind in ("int", "size", "size_or_auto"):
        assert isinstance(got, int) and (t.minimum is None or got >= t.minimum)
    elif t.kind == "float":
        assert isinstance(got, float) and math.isfinite(got) and got >= t.minimum
        assert t.maximum is None or got <= t.maximum
    elif t.kind == "json_object":
        assert isinstance(got, dict)
    else:
        assert isinstance(got, str) and got.strip()


def test_validate_set_items_reads_items_as_the_planner_does():
    ft.validate_set_items(["max-num-seqs=16", "enable-prefix-caching", "max-num-seqs=", "VLLM_USE_DEEP_GEMM=0",
                           "--kv-cache-dtype=fp8", "no-enable-prefix-caching"])
    with pytest.raises(UsageError, match="max-num-seqs"):
        ft.validate_set_items(["max-num-seqs=abc"])
    with pytest.raises(UsageError, match="gpu-memory-utilization"):
        ft.validate_set_items(["kv-cache-dtype=fp8", "gpu-memory-utilization=nan"])
    with pytest.raises(UsageError, match="line break"):
        ft.validate_set_items(["SOME_ENV=a\nb"])


# --------------------------------------------------------------------------------- item 2: secrets
@pytest.mark.parametrize("item", [
    "HF_TOKEN=hf_abc", "VLLM_API_KEY=sk-123", "api-key=sekrit", "--api-key=sekrit", "api_key=x", "hf-token=x",
    "HUGGING_FACE_HUB_TOKEN=x", "AWS_SECRET_ACCESS_KEY=x", "DB_PASSWORD=x", "OPENAI_API_KEY=x", "HF_TOKEN",
    "HF_TOKEN=", "api-key", "no-api-key",
])
def test_secret_looking_set_keys_are_refused_without_echoing_the_value(item):
    with pytest.raises(UsageError) as ei:
        ft.validate_set_items([item])
    e = ei.value
    assert "refusing a secret on the command line" in e.message
    value = item.partition("=")[2]
    if len(value) > 2:
        assert value not in str(e)
    assert "environment" in e.hint


def test_the_hint_names_the_safe_way_for_each_secret():
    with pytest.raises(UsageError) as ei:
        ft.refuse_secret_set("VLLM_API_KEY", "x")
    assert "export VLLM_API_KEY" in ei.value.hint and "--api-key-env" in ei.value.hint
    with pytest.raises(UsageError) as ei:
        ft.refuse_secret_set("HF_TOKEN", "x")
    assert "export HF_TOKEN" in ei.value.hint and "hf auth login" in ei.value.hint


def test_a_token_as_the_value_of_any_key_is_refused():
    tok = "hf_" + "aB3" * 12
    with pytest.raises(UsageError) as ei:
        ft.validate_set_items([f"served-model-name={tok}"])
    assert tok not in str(ei.value) and "Hugging Face access token" in ei.value.message


@pytest.mark.parametrize("name", [
    "--max-num-batched-tokens", "--long-prefill-token-threshold", "--allow-credentials", "--tokenizer",
    "--ssl-keyfile", "--spec-tokens", "VLLM_MAX_TOKENS_PER_EXPERT_FP4_MOE", "--return-tokens-as-token-ids",
    "VLLM_USE_DEEP_GEMM", "--kv-cache-dtype",
])
def test_flags_that_only_mention_tokens_or_keys_are_not_secrets(name):
    assert not ft.is_secret_name(name)
    ft.refuse_secret_set(name, "1")
