"""Hostile plan values survive every format: the launched argv equals the plan's, no secret leaks."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spark_tui.core.export import formats as ex
from spark_tui.core.planning.flags import Flag
from spark_tui.core.planning.plan import EnvChoice, Plan
from spark_tui.errors import UsageError
from tests.unit.test_export_support import run_with_stubs, unit_environment, unit_exec_argv
from tests.unit.test_export_render import spark_plan

# any character an argv word can hold (no NUL, no lone surrogates), biased towards shell/YAML/systemd
# metacharacters
HOSTILE = st.sampled_from(list(" \t\n\r'\"$`\\;&|<>(){}[]*?~#!%=:,-@^\x7f\x85\u2028\ufeff") + ["é", "😀", "\x1b"])
WORD = st.lists(st.one_of(HOSTILE, st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")),
                max_size=12).map("".join)
FLAG = WORD.map(lambda s: "--" + s)
SECRET = "hf_SECRETVALUE_do_not_write_42"


@st.composite
def hostile_plans(draw) -> Plan:
    flags = [Flag("--host", "127.0.0.1", "r", "s"), Flag("--port", "8000", "r", "s")]
    flags += [Flag(draw(FLAG), draw(st.one_of(st.none(), WORD, FLAG)), "r", "s")
              for _ in range(draw(st.integers(0, 4)))]
    env = [EnvChoice(draw(st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True)), draw(WORD), "r", "s")
           for _ in range(draw(st.integers(0, 2)))]
    skip = ex._SHELL_NAMES | {"STUB_OUT", "LC_ALL", "HF_TOKEN", "VLLM_HOST_IP", "RAY_HEAD_IP"}
    env = list({e.name: e for e in env if e.name not in skip}.values())
    return spark_plan(model=draw(st.one_of(WORD, FLAG)), flags=tuple(flags), env=tuple(env),
                      served_model_name=draw(st.one_of(st.none(), WORD)))


def _container_render(fn, plan: Plan, k8s: bool = False) -> str | None:
    """Render, or check the refusal of a local model path a container cannot mount (None then)."""
    unmountable = plan.model.startswith("/") and (
        k8s or ":" in plan.model or "," in plan.model or not plan.model.isprintable())
    if unmountable:
        with pytest.raises(UsageError):
            fn(plan)
        return None
    return fn(plan)


def _no_secret(text: str) -> None:
    assert SECRET not in text


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(hostile_plans())
def test_bash_round_trips(plan):
    script = ex.to_bash(plan)
    _no_secret(script)
    with tempfile.TemporaryDirectory() as d:
        r = run_with_stubs(script, Path(d), ("vllm",), {"HF_TOKEN": SECRET})
    assert r["rc"] == 0, r["stderr"]
    assert ["vllm", *r["vllm"]] == ex.serve_argv(plan)
    for e in plan.env:
        assert r["vllm.env"][e.name] == e.value


@SETTINGS
@given(hostile_plans())
def test_docker_round_trips(plan):
    script = _container_render(ex.to_docker, plan)
    if script is None:
        return
    with tempfile.TemporaryDirectory() as d:
        r = run_with_stubs(script, Path(d), ("docker",), {"HF_TOKEN": SECRET})
    assert r["rc"] == 0, r["stderr"]
    args = r["docker"]
    i = args.index(ex.image_for(plan, ex.ExportOptions()))
    assert args[i + 1 :] == ex.container_args(plan)
    assert ex.container_args(plan)[0] == plan.model
    for e in plan.env:
        assert f"{e.name}={e.value}" in args[:i]
    assert SECRET not in args


def _undollar(s: str) -> str:
    assert "$" not in s.replace("$$", ""), s  # every literal $ is escaped
    return s.replace("$$", "$")


@SETTINGS
@given(hostile_plans())
def test_compose_round_trips(plan):
    text = _container_render(ex.to_compose, plan)
    if text is None:
        return
    _no_secret(text)
    svc = yaml.safe_load(text)["services"]["vllm"]
    assert [_undollar(a) for a in svc["command"]] == ex.container_args(plan)
    for e in plan.env:
        assert _undollar(svc["environment"][e.name]) == e.value


@SETTINGS
@given(hostile_plans())
def test_k8s_round_trips(plan):
    text = _container_render(ex.to_k8s, plan, k8s=True)
    if text is None:
        return
    _no_secret(text)
    docs = {d["kind"]: d for d in yaml.safe_load_all(text)}
    c = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert [_undollar(a) for a in c["args"]] == ex.container_args(plan)
    env = {e["name"]: e for e in c["env"]}
    for e in plan.env:
        assert _undollar(env[e.name]["value"]) == e.value
    assert "value" not in env["VLLM_API_KEY"]


@SETTINGS
@given(hostile_plans())
def test_systemd_round_trips(plan):
    unit = ex.to_systemd(plan)
    _no_secret(unit)
    assert unit_exec_argv(unit) == ["/usr/bin/env", *ex.serve_argv(plan)]
    assert unit_environment(unit) == plan.env_dict()


@SETTINGS
@given(hostile_plans())
def test_ray_head_round_trips(plan):
    head, worker = ex.to_ray(plan, ex.ExportOptions(ifname="eth0"))
    env = {"VLLM_HOST_IP": "10.0.0.1", "RAY_HEAD_IP": "10.0.0.1", "HF_TOKEN": SECRET}
    with tempfile.TemporaryDirectory() as d:
        bindir = Path(d) / "stubbin"
        bindir.mkdir()
        (bindir / "python3").write_text("#!/bin/sh\necho 2\n")
        (bindir / "python3").chmod(0o755)
        r = run_with_stubs(head.content, Path(d), ("ray", "vllm"), env)
    assert r["rc"] == 0, r["stderr"]
    assert ["vllm", *r["vllm"]] == ["vllm", "serve", plan.model, *ex._flatten(ex.ray_pairs(plan, ex.ExportOptions()))]
