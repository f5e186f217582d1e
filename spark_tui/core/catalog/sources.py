"""Is a source string a public reference a user can open?

Shipped profile data (devices, checkpoints, models, published figures) names where each number and choice
comes from. A source must be something a reader outside this project can open, in one of these forms:

- a URL: ``https://...``
- vLLM source at a release: ``vLLM v0.33.0 vllm/config/cache.py:215`` (path, optional ``:line`` or
  ``:first-last``)
- a repository file at a commit: ``vllm-project/recipes@8959cf6 models/Qwen/Qwen3.6-35B-A3B.yaml:211-226``
- a GitHub pull request or issue: ``XuehaiPan/nvitop PR #208``, ``NVIDIA/TensorRT-LLM issue #12706``, or
  ``vLLM PR #43148`` / ``vLLM issue #43559`` for vllm-project/vllm
- a Hugging Face model card: ``nvidia/Qwen3.6-35B-A3B-NVFP4 model card``
- an NVIDIA datasheet or product page by name: ``NVIDIA H200 product page`` (with its URL where possible)
- what the user asked for: ``user --concurrency``; what was measured: ``measured on this machine``
- an honest unknown: a string that starts with ``not verified`` or ``not published``

Project-internal notes never count: a mention of FACTS.md, a seed article (``seed 001``) or a local path
(``/work/...``, ``/tmp/...``, ``../shared``) is a problem even next to a recognised form.
"""

from __future__ import annotations

import re

_FORBIDDEN: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"FACTS(?:\.md|\s*§)", re.IGNORECASE),
     "cites FACTS.md, the project's private notes: cite the public reference it names instead"),
    (re.compile(r"\bseeds?[\s/_-]+0\d\d\b|\bseeds/", re.IGNORECASE),
     "cites a seed article by its local number: cite the article's URL or the page it quotes"),
    (re.compile(r"(?:^|[\s(\[\"'`,;=])(?:/work/|/tmp/|/root/|/home/|~/|\.\./)"),
     "names a local path a user cannot open: cite a public URL or repository file instead"),
)

_RECOGNISED: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("URL", re.compile(r"\bhttps?://[^\s/]+\.[^\s]+")),
    ("vLLM source at a release", re.compile(r"\bvLLM v\d+\.\d+\.\d+\S*\s+[\w./-]+\.\w+(?::\d+(?:-\d+)?)?")),
    ("repository file at a commit", re.compile(r"\b[\w.-]+/[\w.-]+@[0-9a-f]{7,40}\s+[\w./-]+")),
    ("GitHub pull request or issue",
     re.compile(r"\b(?:[\w.-]+/[\w.-]+|vLLM)\s+(?:PR|pull request|issue)\s+#\d+", re.IGNORECASE)),
    ("model card", re.compile(r"\b[\w.-]+/[\w.-]+\s+model card\b", re.IGNORECASE)),
    ("NVIDIA datasheet or product page",
     re.compile(r"\bNVIDIA\b[^;:]{1,80}?\b(?:datasheet|data sheet|product page|GPU list)\b", re.IGNORECASE)),
    ("user input", re.compile(r"\buser --[a-z][\w-]*")),
    ("measurement", re.compile(r"\bmeasured on this machine\b", re.IGNORECASE)),
    ("honest unknown", re.compile(r"^\s*not (?:verified|published)\b", re.IGNORECASE)),
)

RECOGNISED_FORMS = tuple(name for name, _ in _RECOGNISED)


def forbidden_mention(text: str) -> str | None:
    """Why `text` (a source, a title or a note) points at something a user cannot open, or None."""
    for pattern, why in _FORBIDDEN:
        m = pattern.search(text)
        if m:
            return f"{why} (found {m.group(0).strip()!r})"
    return None


def recognised_forms(text: str) -> list[str]:
    """The public-reference forms `text` contains (names from RECOGNISED_FORMS)."""
    return [name for name, pattern in _RECOGNISED if pattern.search(text)]


def public_source_problem(text: str) -> str | None:
    """Why `text` is not a public reference a user can open, or None when it is one.

    A source passes when it mentions nothing private (FACTS.md, a seed number, a local path) and contains at
    least one recognised form (see the module docstring)."""
    if not isinstance(text, str) or not text.strip():
        return "is empty: name where the value comes from"
    bad = forbidden_mention(text)
    if bad:
        return bad
    if not recognised_forms(text):
        return ("cites nothing recognisable: give a URL, 'vLLM vX.Y.Z <path>:<line>', '<owner>/<repo>@<sha> <path>', "
                "'<owner>/<repo> PR #N' / 'issue #N', '<org>/<model> model card', an NVIDIA datasheet or product "
                "page, 'measured on this machine', or 'not verified'")
    return None
