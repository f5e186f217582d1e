"""The one flag model: typed values, ordered set/drop, argv rendering and parsing round-trips."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spark_tui.core.planning.flags import Flag, Flags, coerce, render, split_args
from spark_tui.errors import UsageError

NAME = st.from_regex(r"--[a-z][a-z0-9-]{0,20}", fullmatch=True)
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=12) \
    .filter(lambda s: not s.startswith("--"))
VALUE = st.one_of(st.none(), st.integers(1, 10**6), TEXT,
                  st.dictionaries(st.sampled_from(["method", "k", "x"]), st.integers(0, 9), min_size=1))


def test_set_keeps_position_and_drop() -> None:
    f = Flags()
    f.set("--a", 1, "r", "s")
    f.set("--b", None, "r", "s")
    f.set("--a", 2, "r2", "s2", "measured")
    assert f.argv() == ["--a", "2", "--b"] and f.get("--a").evidence == "measured"
    assert f.value("--a") == 2 and f.text("--a") == "2" and "--b" in f and f.value("--missing", 7) == 7
    assert f.drop("--a").value == 2 and f.argv() == ["--b"] and f.drop("--nope") is None
    with pytest.raises(ValueError):
        f.set("--c", 1, evidence="guessed")


def test_typed_values_render_as_vllm_reads_them() -> None:
    assert render(0.92) == "0.92" and render(8192) == "8192" and render(None) is None
    assert render({"method": "mtp", "num_speculative_tokens": 1}) == '{"method":"mtp","num_speculative_tokens":1}'
    assert coerce("--max-model-len", "32k") == 32000 and coerce("--max-model-len", "32K") == 32768
    assert coerce("--gpu-memory-utilization", "0.9") == 0.9
    assert coerce("--speculative-config", '{"method":"mtp"}') == {"method": "mtp"}
    assert coerce("--kv-cache-dtype", "fp8") == "fp8"
    for name, bad in (("--max-num-seqs", "abc"), ("--gpu-memory-utilization", "nan"), ("--gpu-memory-utilization", "2"),
                      ("--port", "99999"), ("--port", "abc"), ("--speculative-config", "[1]"),
                      ("--speculative-config", "{x"), ("--max-num-seqs", "0")):
        with pytest.raises(UsageError) as e:
            coerce(name, bad)
        assert name in e.value.message


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(NAME, VALUE), max_size=8))
def test_argv_round_trip(items) -> None:
    f = Flags(Flag(n, v, "r", "s") for n, v in items)
    back = Flags.from_argv(f.argv())
    assert back.argv() == f.argv()
    assert back.names() == f.names()
    for x in f:
        y = back.get(x.name)
        if isinstance(x.value, dict):  # a dict is a JSON flag only for the JSON flags: otherwise its text
            assert json.loads(y.text) == x.value
        else:
            assert y.text == x.text


@given(st.lists(st.tuples(NAME, st.one_of(st.none(), TEXT)), max_size=8))
def test_split_args_inverts_argv(pairs) -> None:
    uniq = list(dict(pairs).items())
    argv = [w for n, v in uniq for w in ([n] if v is None else [n, v])]
    assert split_args(argv) == uniq
