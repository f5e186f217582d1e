"""Checkpoint download: the files vLLM needs, disk-checked, resumable, with an event stream.

Flow: `fetch_listing()` (HfApi.model_info(files_metadata=True): every file's size) ->
`plan_download()` (which files match ALLOW/IGNORE, which are already complete locally, what is missing) ->
`check_disk()` (shutil.disk_usage of the target against the missing bytes) -> `download()`.

`download()` calls `huggingface_hub.hf_hub_download` per file (that is what `snapshot_download` does inside;
`snapshot_download`'s `tqdm_class` only drives its aggregate bars, so per-file progress needs the per-file
call). Each call gets a tqdm-compatible class bound to its file name (`tqdm_class`), which both transports
(plain HTTP `http_get` and hf_xet `xet_get`, used when hf_xet is installed) update with written bytes. The
hub client's cache gives resume for free: finished blobs are reused, a `.incomplete` file is resumed with
an HTTP Range request.

Subscribers receive frozen dataclass events (DownloadStarted, FileProgress, FileDone, DownloadFinished,
DownloadFailed) from worker threads; `EventQueue` adapts them to a queue for the TUI.

The HF token: never passed around by us. huggingface_hub reads HF_TOKEN or the `hf auth login` file itself.
Messages we build never contain it, and `scrub()` removes it from any hub error text we forward.
"""

from __future__ import annotations

import fnmatch
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spark_tui.errors import DownloadError

# What vLLM reads from a checkpoint repo. safetensors weights + index, configs (config.json,
# generation_config.json, hf_quant_config.json, tokenizer_config.json, preprocessor configs), the chat
# template (*.jinja), tokenizer files (tokenizer.json / tokenizer.model / vocab.json / merges.txt).
ALLOW_PATTERNS: tuple[str, ...] = ("*.safetensors", "*.json", "*.jinja", "tokenizer*", "*.txt", "*.model", "*.tiktoken")
# Duplicated weights in other formats and documentation assets vLLM never reads.
IGNORE_PATTERNS: tuple[str, ...] = (
    "*.pth", "*.bin", "*.pt", "*.ckpt", "*.gguf", "*.onnx", "*.msgpack", "*.h5", "original/*",
    "*.png", "*.jpg", "*.jpeg", "*.gif", "*.svg", "*.md", "*.pdf",
)

DISK_MARGIN_MIN = 256 * 1024**2  # keep at least this much free after the download...
DISK_MARGIN_FRACTION = 0.02  # ...or 2% of the download, whichever is larger

# the format of the known Qwen3.6-35B-A3B checkpoints (profiles/checkpoints/*.toml `format`, with sources)
KNOWN_FORMATS: dict[str, str] = {
    "Qwen/Qwen3.6-35B-A3B": "bf16",
    "Qwen/Qwen3.6-35B-A3B-FP8": "fp8",
    "nvidia/Qwen3.6-35B-A3B-NVFP4": "modelopt_mixed",
    "RedHatAI/Qwen3.6-35B-A3B-NVFP4": "compressed-tensors-nvfp4",
    "Infatoshi/Qwen3.6-35B-A3B-NVFP4-FP8": "compressed-tensors-nvfp4-fp8",
}
DEFAULT_REPO = "nvidia/Qwen3.6-35B-A3B-NVFP4"


# ---------------------------------------------------------------------------------------------- events
@dataclass(frozen=True)
class DownloadStarted:
    repo_id: str
    revision: str
    commit: str
    files: tuple[str, ...]
    total_bytes: int  # all selected files
    cached_bytes: int  # already complete locally
    missing_bytes: int  # still to fetch
    target: str  # local dir, or the HF cache dir


@dataclass(frozen=True)
class FileProgress:
    path: str
    done: int  # bytes of this file written so far (resumed bytes included)
    total: int | None


@dataclass(frozen=True)
class FileDone:
    path: str
    size: int
    cached: bool  # it was already complete: nothing was fetched
    local_path: str


@dataclass(frozen=True)
class DownloadFinished:
    path: str  # the snapshot folder vLLM is given
    fetched_bytes: int
    seconds: float


@dataclass(frozen=True)
class DownloadFailed:
    message: str
    hint: str


Event = DownloadStarted | FileProgress | FileDone | DownloadFinished | DownloadFailed
Subscriber = Callable[[Event], object]  # what it returns is ignored


class EventQueue:
    """A subscriber that puts every event on a queue (the TUI drains it from its worker)."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self.queue: queue.Queue[Event] = queue.Queue(maxsize)

    def __call__(self, ev: Event) -> None:
        try:
            self.queue.put_nowait(ev)
        except queue.Full:  # a slow consumer loses progress ticks, never file/finish events
            if not isinstance(ev, FileProgress):
                self.queue.put(ev, timeout=5)


# ---------------------------------------------------------------------------------------------- listing
@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    lfs_sha256: str | None = None


@dataclass(frozen=True)
class RepoListing:
    repo_id: str
    revision: str
    commit: str
    files: tuple[RemoteFile, ...]
    gated: str | bool | None = None
    private: bool | None = None


@dataclass(frozen=True)
class DownloadPlan:
    listing: RepoListing
    selected: tuple[RemoteFile, ...]
    complete: frozenset[str]  # paths already complete locally
    target: str
    local_dir: str | None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.selected)

    @property
    def cached_bytes(self) -> int:
        return sum(f.size for f in self.selected if f.path in self.complete)

    @property
    def missing_bytes(self) -> int:
        return self.total_bytes - self.cached_bytes

    @property
    def skipped(self) -> tuple[str, ...]:
        chosen = {f.path for f in self.selected}
        return tuple(f.path for f in self.listing.files if f.path not in chosen)


def select_files(paths: Iterable[str], allow: Iterable[str] = ALLOW_PATTERNS,
                 ignore: Iterable[str] = IGNORE_PATTERNS) -> list[str]:
    """The same matching rule as huggingface_hub's filter_repo_objects (fnmatch on the repo path)."""
    allow, ignore = list(allow), list(ignore)
    out = []
    for p in paths:
        if allow and not any(fnmatch.fnmatch(p, a) for a in allow):
            continue
        if any(fnmatch.fnmatch(p, i) for i in ignore):
            continue
        out.append(p)
    return out


def current_token() -> str | None:
    """The token huggingface_hub would send (HF_TOKEN or the login file), only to scrub it from text."""
    tok = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if tok:
        return tok
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001 - no token is the common case
        return None


def scrub(text: str) -> str:
    tok = current_token()
    return text.replace(tok, "***") if tok and len(tok) >= 4 else text


TOKEN_HINT = ("provide a Hugging Face token with access: `export HF_TOKEN=<your token>` "
              "(create one at https://huggingface.co/settings/tokens) or run `hf auth login`")


def hub_error(e: BaseException, repo_id: str, revision: str | None = None) -> DownloadError:
    """Map a huggingface_hub / network exception to a DownloadError with a hint (token never included)."""
    from huggingface_hub import errors as he

    has_token = current_token() is not None
    if isinstance(e, he.GatedRepoError):
        hint = (f"accept the model's terms at https://huggingface.co/{repo_id}, then " + TOKEN_HINT
                if not has_token else
                f"your token has no access yet: accept the terms at https://huggingface.co/{repo_id} "
                "with the account the token belongs to (or use another token)")
        return DownloadError(f"{repo_id} is a gated repository and this download was refused", hint)
    if isinstance(e, he.RevisionNotFoundError):
        return DownloadError(f"revision {revision!r} of {repo_id} does not exist",
                             "check --revision (a branch, tag or commit of the repository)")
    if isinstance(e, he.RepositoryNotFoundError):
        return DownloadError(f"{repo_id} was not found, or it is private and this request was not authorised",
                             "check the repository id; for a private repository " + TOKEN_HINT)
    if isinstance(e, he.OfflineModeIsEnabled) or isinstance(e, he.LocalEntryNotFoundError):
        return DownloadError(f"cannot reach the Hugging Face hub for {repo_id} ({scrub(str(e)).splitlines()[0]})",
                             "check the network (or unset HF_HUB_OFFLINE); for an offline machine copy the "
                             "checkpoint over and use --model-path DIR")
    if isinstance(e, he.HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status == 401:
            return DownloadError(f"{repo_id} was not found, or it is private or gated and this request was not "
                                 "authorised (HTTP 401)", "check the repository id; " + TOKEN_HINT)
        if status == 403:
            return DownloadError(f"the hub refused access to {repo_id} (HTTP 403)",
                                 f"accept the terms at https://huggingface.co/{repo_id} with the token's account, "
                                 "or " + TOKEN_HINT)
        return DownloadError(f"the hub answered HTTP {status} for {repo_id}: {scrub(str(e)).splitlines()[0]}",
                             "retry later; finished files are kept and the rest resumes")
    name = type(e).__name__
    if isinstance(e, (ConnectionError, TimeoutError)) or "Connect" in name or "Timeout" in name or "Network" in name:
        return DownloadError(f"network error while downloading {repo_id}: {name}: {scrub(str(e))[:200]}",
                             "re-run the same command when the network is back: finished files are kept "
                             "and partial ones resume")
    if isinstance(e, OSError) and getattr(e, "errno", None) == 28:
        return DownloadError(f"the disk filled up while downloading {repo_id}", "free space and re-run; it resumes")
    return DownloadError(f"download of {repo_id} failed: {name}: {scrub(str(e))[:300]}",
                         "re-run to resume; finished files are kept")


def fetch_listing(repo_id: str, revision: str | None = None, endpoint: str | None = None) -> RepoListing:
    """Every file of the repo with its size, from HfApi.model_info(files_metadata=True)."""
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=endpoint).model_info(repo_id, revision=revision, files_metadata=True)
    except Exception as e:  # noqa: BLE001 - mapped to a user-facing error
        raise hub_error(e, repo_id, revision) from None
    files = []
    for s in info.siblings or []:
        size = s.size if s.size is not None else (s.lfs.size if s.lfs else 0)
        files.append(RemoteFile(s.rfilename, int(size or 0), s.lfs.sha256 if s.lfs else None))
    if not info.sha:
        raise DownloadError(f"the hub returned no commit for {repo_id}", "retry later")
    return RepoListing(repo_id, revision or "main", info.sha, tuple(files), getattr(info, "gated", None),
                       getattr(info, "private", None))


def hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def find_cached_snapshot(repo_id: str, revision: str | None = None, cache_dir: str | None = None) -> Path | None:
    """The HF cache snapshot folder of repo@revision (a branch/tag through refs/, or a commit), if present."""
    base = Path(cache_dir or hf_cache_dir()) / ("models--" + repo_id.replace("/", "--"))
    rev = revision or "main"
    ref = base / "refs" / rev
    commit = ref.read_text().strip() if ref.is_file() else rev
    snap = base / "snapshots" / commit
    return snap if snap.is_dir() else None


def _complete_locally(f: RemoteFile, repo_id: str, commit: str, local_dir: str | None, cache_dir: str) -> bool:
    if local_dir is not None:
        p = Path(local_dir) / f.path
        return p.is_file() and p.stat().st_size == f.size
    from huggingface_hub import try_to_load_from_cache

    got = try_to_load_from_cache(repo_id, f.path, cache_dir=cache_dir, revision=commit)
    if isinstance(got, str) and os.path.isfile(got) and os.path.getsize(got) == f.size:
        return True
    # a blob already in the cache under its content id (an earlier, interrupted run) counts as complete too
    if f.lfs_sha256:
        from huggingface_hub.file_download import repo_folder_name

        blob = Path(cache_dir) / repo_folder_name(repo_id=repo_id, repo_type="model") / "blobs" / f.lfs_sha256
        return blob.is_file() and blob.stat().st_size == f.size
    return False


def plan_download(listing: RepoListing, local_dir: str | None = None, cache_dir: str | None = None,
                  allow: Iterable[str] = ALLOW_PATTERNS, ignore: Iterable[str] = IGNORE_PATTERNS) -> DownloadPlan:
    cache_dir = cache_dir or hf_cache_dir()
    chosen = set(select_files([f.path for f in listing.files], allow, ignore))
    selected = tuple(f for f in listing.files if f.path in chosen)
    complete = frozenset(f.path for f in selected
                         if _complete_locally(f, listing.repo_id, listing.commit, local_dir, cache_dir))
    return DownloadPlan(listing, selected, complete, local_dir or cache_dir, local_dir)


def _existing_ancestor(p: Path) -> Path:
    p = p.expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def required_free(missing: int) -> int:
    return missing + max(DISK_MARGIN_MIN, int(missing * DISK_MARGIN_FRACTION))


def check_disk(target: str, missing_bytes: int, free_fn: Callable[[str], int] | None = None) -> int:
    """Refuse (DownloadError, exit 7) when the target's filesystem lacks room for the missing bytes."""
    where = _existing_ancestor(Path(target))
    free = free_fn(str(where)) if free_fn else shutil.disk_usage(where).free
    need = required_free(missing_bytes)
    if missing_bytes > 0 and free < need:
        raise DownloadError(
            f"not enough disk space in {where}: {fmt_bytes(missing_bytes)} still to download "
            f"(+{fmt_bytes(need - missing_bytes)} margin), {fmt_bytes(free)} free "
            f"({fmt_bytes(need - free)} short)",
            "free space there, or download elsewhere with --dir DIR (or HF_HOME=DIR for the cache)",
        )
    return free


# ---------------------------------------------------------------------------------------------- progress
def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def fmt_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    s = int(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


@dataclass
class ProgressState:
    """Aggregates events into bytes / speed / ETA (shared by the CLI printer and the TUI)."""

    total: int = 0  # bytes still to fetch at start
    files_total: int = 0
    files_done: int = 0
    per_file: dict[str, int] = field(default_factory=dict)
    start_done: dict[str, int] = field(default_factory=dict)  # resumed bytes at a file's first tick
    started_at: float = 0.0
    samples: list[tuple[float, int]] = field(default_factory=list)
    finished: bool = False

    def apply(self, ev: Event, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if isinstance(ev, DownloadStarted):
            self.total, self.files_total, self.started_at = ev.missing_bytes, len(ev.files), now
            self.samples = [(now, 0)]
        elif isinstance(ev, FileProgress):
            self.start_done.setdefault(ev.path, ev.done if ev.done and ev.path not in self.per_file else 0)
            self.per_file[ev.path] = ev.done
            self.samples.append((now, self.fetched))
            if len(self.samples) > 200:
                self.samples = self.samples[-100:]
        elif isinstance(ev, FileDone):
            self.files_done += 1
            if not ev.cached:
                self.per_file[ev.path] = ev.size
        elif isinstance(ev, (DownloadFinished, DownloadFailed)):
            self.finished = True

    @property
    def done(self) -> int:
        return sum(self.per_file.values())

    @property
    def fetched(self) -> int:
        """Bytes fetched in this run (resumed bytes excluded)."""
        return self.done - sum(self.start_done.values())

    def rate(self, window: float = 10.0) -> float | None:
        if len(self.samples) < 2:
            return None
        t_end, b_end = self.samples[-1]
        old = [s for s in self.samples if s[0] >= t_end - window]
        t0, b0 = old[0] if old and old[0][0] < t_end else self.samples[0]
        return (b_end - b0) / (t_end - t0) if t_end > t0 else None

    def eta(self) -> float | None:
        r = self.rate()
        return None if not r or r <= 0 else max(0.0, (self.total - self.done) / r)

    def line(self) -> str:
        r = self.rate()
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{fmt_bytes(self.done)} / {fmt_bytes(self.total)} ({pct:.0f}%)  "
                f"{fmt_bytes(r) + '/s' if r else '-- /s'}  ETA {fmt_eta(self.eta())}  "
                f"files {self.files_done}/{self.files_total}")


# ---------------------------------------------------------------------------------------------- download
class _FileBar:
    """Mimics the part of tqdm that huggingface_hub's http_get / xet_get use, for one file."""

    _path = ""
    _emit: Callable[[str, int, int | None, bool], None] = staticmethod(lambda *a: None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.total = kwargs.get("total")
        self.n = int(kwargs.get("initial") or 0)
        self.disable = False
        type(self)._emit(self._path, self.n, self.total, True)

    def update(self, n: int | float | None = 1) -> None:
        self.n += int(n or 0)
        type(self)._emit(self._path, self.n, self.total, False)

    def update_transfer(self, n: int | float | None = 1) -> None:  # network bytes: we count written bytes
        pass

    def set_postfix_str(self, *a: Any, **k: Any) -> None:
        pass

    set_transfer_postfix_str = set_description = set_description_str = refresh = clear = set_postfix_str

    def reset(self, total: int | None = None) -> None:
        self.n, self.total = 0, total

    def close(self) -> None:
        type(self)._emit(self._path, self.n, self.total, True)

    def __enter__(self) -> _FileBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def format_dict(self) -> dict[str, Any]:
        return {"n": self.n, "total": self.total, "rate": None}


def file_bar_class(path: str, on_bytes: Callable[[str, int, int | None, bool], None]) -> type:
    """A tqdm-compatible class bound to one file, for hf_hub_download(tqdm_class=...)."""
    return type("_Bar", (_FileBar,), {"_path": path, "_emit": staticmethod(on_bytes)})


def _fatal(e: BaseException) -> bool:
    """Errors every other file would hit too (auth, missing repo, full disk): stop at once."""
    from huggingface_hub import errors as he

    if isinstance(e, (he.RepositoryNotFoundError, he.RevisionNotFoundError)):
        return True
    status = getattr(getattr(e, "response", None), "status_code", None)
    return status in (401, 403) or (isinstance(e, OSError) and getattr(e, "errno", None) == 28)


def download(plan: DownloadPlan, subscribers: Iterable[Subscriber] = (), max_workers: int = 4,
             cancel: threading.Event | None = None, endpoint: str | None = None,
             progress_interval: float = 0.1) -> str:
    """Fetch the plan's files; return the folder to give vLLM. Raises DownloadError (token-free)."""
    from huggingface_hub import hf_hub_download

    subs = list(subscribers)
    lock = threading.Lock()
    cancel = cancel or threading.Event()
    listing = plan.listing
    t0 = time.monotonic()

    def emit(ev: Event) -> None:
        with lock:
            for s in subs:
                s(ev)

    last_tick: dict[str, float] = {}

    def on_bytes(p: str, n: int, total: int | None, force: bool) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt  # stops this worker's transfer at the next chunk
        now = time.monotonic()
        if force or now - last_tick.get(p, 0.0) >= progress_interval:
            last_tick[p] = now
            emit(FileProgress(p, n, total))

    def bar_class(path: str) -> type:
        return file_bar_class(path, on_bytes)

    emit(DownloadStarted(listing.repo_id, listing.revision, listing.commit, tuple(f.path for f in plan.selected),
                         plan.total_bytes, plan.cached_bytes, plan.missing_bytes, plan.target))
    todo: queue.Queue[RemoteFile] = queue.Queue()
    # big files first so the slowest transfers start early
    for f in sorted(plan.selected, key=lambda f: -f.size):
        todo.put(f)
    results: queue.Queue[tuple[RemoteFile, str | None, BaseException | None]] = queue.Queue()

    def worker() -> None:
        while not cancel.is_set():
            try:
                f = todo.get_nowait()
            except queue.Empty:
                return
            try:
                local = hf_hub_download(
                    listing.repo_id, f.path, revision=listing.commit, local_dir=plan.local_dir,
                    cache_dir=None if plan.local_dir else plan.target, endpoint=endpoint,
                    tqdm_class=bar_class(f.path),
                )
                results.put((f, local, None))
            except BaseException as e:  # noqa: BLE001 - reported to the main thread
                results.put((f, None, e))

    # daemon threads: Ctrl-C in the main thread returns at once; a partial file stays `.incomplete` and resumes
    threads = [threading.Thread(target=worker, daemon=True, name=f"spark-dl-{i}")
               for i in range(max(1, min(max_workers, len(plan.selected))))]
    for t in threads:
        t.start()
    remaining = len(plan.selected)
    failure: BaseException | None = None
    try:
        while remaining:
            try:
                f, local, err = results.get(timeout=0.2)
            except queue.Empty:
                if not any(t.is_alive() for t in threads) and results.empty():
                    break
                continue
            remaining -= 1
            if err is not None:
                # keep fetching the other files (they are kept for the next run); report the first failure
                failure = failure or err
                if isinstance(err, KeyboardInterrupt) or _fatal(err):
                    cancel.set()
                    break
                continue
            emit(FileDone(f.path, f.size, f.path in plan.complete, str(local)))
    except KeyboardInterrupt:
        cancel.set()
        emit(DownloadFailed("interrupted", "re-run the same command to resume; finished files are kept"))
        raise
    if cancel.is_set() and (failure is None or isinstance(failure, KeyboardInterrupt)):
        err = DownloadError(f"download of {listing.repo_id} cancelled",
                            "run it again to continue: finished files are kept")
        emit(DownloadFailed(err.message, err.hint))
        raise err
    if failure is not None or remaining:
        err = hub_error(failure, listing.repo_id, listing.revision) if failure is not None else DownloadError(
            f"download of {listing.repo_id} stopped with {remaining} files left", "re-run to resume")
        emit(DownloadFailed(err.message, err.hint))
        raise err
    if plan.local_dir:
        out = str(Path(plan.local_dir).resolve())
    else:
        from huggingface_hub.file_download import repo_folder_name

        out = str(Path(plan.target) / repo_folder_name(repo_id=listing.repo_id, repo_type="model")
                  / "snapshots" / listing.commit)
    fetched = plan.missing_bytes
    emit(DownloadFinished(out, fetched, time.monotonic() - t0))
    return out
