"""Writing files to disk, the one part of export that touches it: `spark-tui export -o`, the TUI's Export step and
`spark-tui probe --save` write through `write_files` (atomically, all or nothing, never onto a device node, FIFO,
directory or symbolic link); `export_targets` says where rendered files go for an -o path."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from spark_tui.errors import UsageError


def export_targets(names: Sequence[str], output: str) -> list[Path]:
    """Where files with these names go for an output path: into it when it is a folder (an existing one, one that ends
    with a slash, or any path given for several files, as the Ray export writes), else the path itself."""
    out = Path(output)
    if len(names) > 1 or os.path.isdir(output) or output.endswith(os.sep):
        return [out / n for n in names]
    return [out]


def existing_targets(paths: Iterable[Path]) -> list[Path]:
    """The paths that already exist (regular files: writing with force replaces them, so ask first). UsageError for a
    path that can never be written: a directory, a symbolic link, a device, FIFO or socket, or one that cannot even be
    looked at (a parent that is a file, a name too long, no permission)."""
    out = []
    for p in paths:
        check_target(p, force=True)
        if os.path.lexists(p):
            out.append(p)
    return out


def check_target(path: Path, force: bool) -> None:
    """Refuse a target that exists (without force) or is not a regular file (always: a device node, a FIFO,
    a socket, a directory or a symbolic link is never replaced, --force or not)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise UsageError(f"cannot write {path} ({e.strerror or e})", "choose a writable -o path") from None
    except ValueError:  # a NUL byte (a pasted path in the TUI; argv cannot hold one)
        raise UsageError(f"cannot write {str(path)!r}: the path contains a NUL byte", "give a path without it") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{path} is a directory", "give a file path")
    if stat.S_ISLNK(st.st_mode):
        raise UsageError(f"{path} is a symbolic link; refusing to replace it",
                         "give the path of the file itself, or remove the link")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path} is not a regular file (a device, FIFO or socket); refusing to write to it",
                         "choose a regular file path")
    if not force:
        raise UsageError(f"{path} already exists", "choose another path, or add --force to overwrite it")


def write_files(files: list[tuple[Path, str, int]], force: bool = False) -> None:
    """Write (path, text, mode) files all or nothing: each text goes to a temporary file beside its target
    (created with `mode`, flushed to disk), and only when every one is complete are they moved into place
    (os.replace with force, else a hard link that fails if the target appeared meanwhile). A full disk, a
    read-only directory or a refused target leaves no partial or empty file behind. UsageError (exit 2)."""
    for path, _, _ in files:
        check_target(path, force)
    temps: list[Path] = []
    placed: list[Path] = []
    current = files[0][0] if files else Path()
    try:
        for path, text, mode in files:
            current = path
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
            temps.append(tmp)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fchmod(f.fileno(), mode)  # the umask may have removed bits
                os.fsync(f.fileno())
        for (path, _, _), tmp in zip(files, temps, strict=True):
            current = path
            check_target(path, force)  # again: something may have appeared while we wrote
            if force:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)  # atomic, and never overwrites
                except FileExistsError:
                    raise UsageError(f"{path} already exists", "choose another path, or add --force") from None
                except OSError:  # a file system without hard links (FAT, some FUSE): rename after the check
                    os.replace(tmp, path)
            placed.append(path)
    except (OSError, UsageError) as e:
        if not force:
            for p in placed:  # all or nothing: remove what this call created
                p.unlink(missing_ok=True)
        if isinstance(e, UsageError):
            raise
        raise UsageError(f"cannot write {current} ({e.strerror or e}); nothing was written",
                         "free some space, or choose a writable -o path") from None
    finally:
        for tmp in temps:
            try:
                os.unlink(tmp)
            except OSError:
                pass
