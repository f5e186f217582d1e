"""Every source string in the shipped profiles is a public reference a user can open (issue #10): a URL, vLLM source
at a release, a repository file at a commit, a GitHub PR/issue, a model card, an NVIDIA product page, or an
honest "not verified" -- never FACTS.md, a seed number or a local path."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Iterator

import pytest

from spark_tui.core.catalog.profiles import shipped_dir
from spark_tui.core.catalog.sources import RECOGNISED_FORMS, forbidden_mention, public_source_problem, recognised_forms

SHIPPED = shipped_dir()


def _walk(node: Any, where: str) -> Iterator[tuple[str, str, bool]]:
    """(location, text, is_source) for every string worth checking: [sources] values and `source` keys must be full
    public references; titles, notes, conditions and refusal reasons must only not point at private material."""
    if isinstance(node, dict):
        for k, v in node.items():
            here = f"{where}.{k}"
            if k == "sources" and isinstance(v, dict):
                for sk, sv in v.items():
                    yield f"{here}.{sk}", sv, True
            elif k == "source" and isinstance(v, str):
                yield here, v, True
            elif k in ("title", "conditions", "refuse_reason", "weights", "hopper_path") and isinstance(v, str):
                yield here, v, False
            elif k == "notes" and isinstance(v, list):
                for i, n in enumerate(v):
                    yield f"{here}[{i}]", n, False
            else:
                yield from _walk(v, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk(item, f"{where}[{i}]")


def _strings(paths: list[Path]) -> list[tuple[str, str, bool]]:
    out = []
    for p in paths:
        with p.open("rb") as f:
            out += list(_walk(tomllib.load(f), p.relative_to(SHIPPED).as_posix()))
    return out


def _problems(paths: list[Path]) -> list[str]:
    bad = []
    for where, text, is_source in _strings(paths):
        why = public_source_problem(text) if is_source else forbidden_mention(text)
        if why:
            bad.append(f"{where}: {why}: {text!r}")
    return bad


@pytest.mark.parametrize("kind", ["devices", "models"])
def test_device_and_model_sources_are_public(kind: str) -> None:
    files = sorted((SHIPPED / kind).glob("*.toml"))
    assert files
    n_sources = sum(1 for _, _, is_source in _strings(files) if is_source)
    assert n_sources >= 3 * len(files)  # the walk really reaches the [sources] tables
    assert _problems(files) == []


def test_published_figures_sources_are_public() -> None:
    f = SHIPPED / "published.toml"
    assert sum(1 for _, _, s in _strings([f]) if s) >= 5
    assert _problems([f]) == []


def test_checkpoint_sources_are_public() -> None:
    files = sorted((SHIPPED / "checkpoints").glob("*.toml"))
    assert files and _problems(files) == []


@pytest.mark.parametrize("text,form", [
    ("https://developer.nvidia.com/cuda-gpus", "URL"),
    ("vLLM v0.33.0 vllm/engine/arg_utils.py:2946-3006", "vLLM source at a release"),
    ("vLLM v0.32.0 vllm/platforms/cpu.py:292", "vLLM source at a release"),
    ("vllm-project/recipes@8959cf6 models/Qwen/Qwen3.6-35B-A3B.yaml:211-226", "repository file at a commit"),
    ("XuehaiPan/nvitop PR #208", "GitHub pull request or issue"),
    ("NVIDIA/TensorRT-LLM issue #12706", "GitHub pull request or issue"),
    ("vLLM PR #43148; vLLM issue #43559", "GitHub pull request or issue"),
    ("nvidia/Qwen3.6-35B-A3B-NVFP4 model card", "model card"),
    ("NVIDIA H200 product page", "NVIDIA datasheet or product page"),
    ("NVIDIA A100 datasheet (40 GB / 80 GB)", "NVIDIA datasheet or product page"),
    ("user --concurrency", "user input"),
    ("measured on this machine (spark-tui tune, 2026-11-23)", "measurement"),
    ("not verified: no public nvidia-smi output found", "honest unknown"),
])
def test_recognised_forms_pass(text: str, form: str) -> None:
    assert form in RECOGNISED_FORMS
    assert form in recognised_forms(text)
    assert public_source_problem(text) is None


@pytest.mark.parametrize("text,why", [
    ("FACTS.md §6 (official recipe overrides)", "FACTS.md"),
    ("vLLM default (FACTS §1, vllm/config/cache.py:215)", "FACTS.md"),
    ("facts.md section 2; https://example.org/x", "FACTS.md"),  # a URL next to it does not make it public
    ("seed 001 (NVIDIA model card, quoted by ThakiCloud)", "seed"),
    ("seeds 000, 001 (Apache 2.0)", "seed"),
    ("seed-002 model card", "seed"),
    ("/work/shared/cpu-vllm/README.md (--max-model-len 512)", "local path"),
    ("see /tmp/vsrc/v033/vllm/config/cache.py:215", "local path"),
    ("../shared/FACTS.md", "FACTS.md"),
    ("../shared/notes.md", "local path"),
    ("(/root/.cache/spark-tui/x)", "local path"),
])
def test_private_references_fail_with_the_reason(text: str, why: str) -> None:
    problem = public_source_problem(text)
    assert problem is not None and why in problem
    assert forbidden_mention(text) == problem


@pytest.mark.parametrize("text", [
    "", "   ", "vllm/config/cache.py:215", "vLLM default", "pci.ids", "my notes", "lspci -nn lines in public repos",
    "NVML name 'NVIDIA GB10'", "vLLM 0.33 source",
])
def test_nothing_recognisable_fails(text: str) -> None:
    problem = public_source_problem(text)
    assert problem is not None and ("recognisable" in problem or "empty" in problem)


def test_urls_and_system_paths_are_not_local_paths() -> None:
    # a path inside a URL, and a system file a note tells the user to read, are not citations of local files
    assert forbidden_mention("https://github.com/x/y/blob/main/work/tmp/z.py") is None
    assert forbidden_mention("read /proc/meminfo MemAvailable") is None
    assert forbidden_mention("the seed argument (--seed 0) of vllm serve") is None
