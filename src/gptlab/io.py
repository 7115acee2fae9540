"""Writing files so that readers never see half of one; tables with their provenance; hashing.

Every file gptlab writes goes through :func:`atomic_open` (or its wrappers):

* the bytes go to a temporary file beside the target, created with mode 0666
  so that the process's umask applies, as for any ``open(path, "w")``;
* the file is flushed and fsync'ed, then renamed over the target, and the
  folder is fsync'ed: the target holds the old content or the new, never a mix;
* on any error the temporary file is removed; a temporary file left behind by
  a killed writer (SIGKILL, power loss) is removed by the next write of the
  same target;
* a full disk (or a file-size limit) raises :class:`NoSpaceError`, naming the
  path, and is never mistaken for damage or for a transient error.

Every table the study writes (:func:`write_table`) gets ``<name>.meta.json``
beside it: the settings that produced it, the library versions and the
machine (CPU model and the instruction set torch uses, threads, math
libraries), so a report, or a reader years later, knows where each number
came from and which results may be compared bit for bit. Figures are saved
with :func:`save_figure`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import secrets
import socket
import time
from collections.abc import Iterator
from importlib import metadata as importlib_metadata
from pathlib import Path

CHUNK = 1 << 20
# A temporary file of another machine is removed only when nobody wrote to it for this long.
STALE_AFTER_S = 3600
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class NoSpaceError(OSError):
    """The disk (or quota, or file-size limit) is full; the message names the path."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 28]"
        return str(self.strerror)


def _host() -> str:
    return socket.gethostname().replace(".", "_") or "host"


def _temp_name(path: Path) -> Path:
    # The host and pid let a later writer tell a dead writer's leftovers from a live one's.
    return path.with_name(f".{path.name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(path) -> list[Path]:
    """Remove temporary files of ``path`` whose writer is gone; return them.

    On this host a writer is gone when its process no longer exists; a
    temporary file from another host (shared file systems) counts as orphaned
    once untouched for :data:`STALE_AFTER_S` seconds.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    host = _host()
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        parts = tmp.name[len(path.name) + 2 : -len(".tmp")].rsplit(".", 2)
        try:
            if len(parts) == 3 and parts[0] == host:
                gone = parts[1].isdigit() and not _pid_alive(int(parts[1]))
            else:
                gone = time.time() - tmp.stat().st_mtime > STALE_AFTER_S
            if gone:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


def no_space_error(exc: BaseException, path) -> NoSpaceError | None:
    """A :class:`NoSpaceError` for ``path`` if ``exc`` (or what caused it) is a full disk, else None."""
    seen = exc
    while seen is not None:
        if isinstance(seen, NoSpaceError):
            return seen
        if isinstance(seen, OSError) and seen.errno in _NO_SPACE:
            what = "file-size limit reached" if seen.errno == errno.EFBIG else "no space left"
            return NoSpaceError(
                seen.errno,
                f"{what} on the file system of {Path(path).parent} while writing {path}; "
                "its previous content (if any) is unchanged. Free some space (or raise the limit) "
                "and run again",
            )
        seen = seen.__cause__ or seen.__context__
    return None


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _temporary(path: Path) -> Iterator[Path]:
    """A fresh temporary file beside ``path``; moved over ``path`` when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path)
    tmp = _temp_name(path)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        full = no_space_error(exc, path)
        if full is not None and full is not exc:
            raise full from exc
        raise


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", **kwargs) -> Iterator:
    """``open`` a temporary file for writing; when the block succeeds it replaces ``path``.

    ``mode`` is ``"wb"`` or ``"w"`` (text, UTF-8 unless ``encoding`` is
    given; ``kwargs`` go to ``open``). Missing parent folders are created.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode={mode!r}: atomic_open writes whole files, 'wb' or 'w'")
    if mode == "w":
        kwargs.setdefault("encoding", "utf-8")
    with _temporary(Path(path)) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def atomic_write(path, write_fn) -> Path:
    """Call ``write_fn(tmp_path)`` to fill a temporary file, then move it to ``path``."""
    with _temporary(Path(path)) as tmp:
        write_fn(tmp)
    return Path(path)


def set_aside(path) -> Path:
    """Move a damaged file to ``<path>.bad`` (replacing an older one), kept for a look; return that name.

    Nothing is deleted, and the file no longer sits under the name that says it is good.
    """
    path = Path(path)
    bad = path.with_name(path.name + ".bad")
    if path.exists():
        os.replace(path, bad)
    return bad


def write_text(path, text: str) -> Path:
    with atomic_open(path, "w", newline="") as f:
        f.write(text)
    return Path(path)


def write_json(obj, path) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def file_digests(path, algorithms=("sha256",)) -> dict[str, str]:
    """Hex digests of ``path``, read once in 1 MiB chunks."""
    hashes = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            for h in hashes.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashes.items()}


def sha256_file(path) -> str:
    return file_digests(path)["sha256"]


def check_writable(path) -> Path:
    """Raise ``PermissionError`` naming ``path`` now if a file cannot be created in its folder.

    Tried for real (a file is created and removed): permission bits, read-only
    mounts and ACLs all count, whoever runs the process.
    """
    path = Path(path)
    folder = path.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is not a folder")
        probe = existing / f".{path.name}.{_host()}.{os.getpid()}.probe.tmp"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            err.errno, f"cannot write {path}: {existing} does not accept new files ({err.strerror})"
        ) from None
    return path


# --- tables with a provenance sidecar, and figures ------------------------------------------------

_PACKAGES = ("gptlab", "torch", "tiktoken", "numpy", "pandas")


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def sidecar_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".meta.json")


def write_table(df, path, metadata: dict | None = None) -> Path:
    """Write ``df`` as CSV (no index) and its metadata sidecar, both atomically."""
    from .device import describe_machine  # imports torch: only when a table is written

    path = Path(path)
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
    write_json(
        {
            "columns": list(df.columns),
            "rows": len(df),
            **(metadata or {}),
            "versions": library_versions(),
            "machine": describe_machine(),
        },
        sidecar_path(path),
    )
    return path


def concat_tables(paths, out, metadata: dict | None = None) -> Path:
    """Stack tables with the same columns (e.g. one per model) into ``out``, cell text unchanged.

    Cells are read as text, so numbers keep the exact digits their writer
    printed. The sidecar lists every part with its own metadata.
    """
    import pandas as pd

    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError(f"no tables to combine into {out}")
    frames = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in paths]
    for path, frame in zip(paths[1:], frames[1:], strict=True):
        if list(frame.columns) != list(frames[0].columns):
            raise ValueError(
                f"{path} has columns {list(frame.columns)}, {paths[0]} has {list(frames[0].columns)}; "
                "only tables of one kind can be combined"
            )
    parts = {}
    for path in paths:
        side = sidecar_path(path)
        parts[str(path)] = json.loads(side.read_text()) if side.is_file() else None
    return write_table(pd.concat(frames, ignore_index=True), out, {**(metadata or {}), "parts": parts})


def save_figure(fig, paths) -> list[Path]:
    """Save a matplotlib ``fig`` to each path (format from the suffix), atomically, then close it."""
    import matplotlib.pyplot as plt

    written = []
    for path in map(Path, paths):
        fmt = path.suffix.lstrip(".")
        atomic_write(path, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=150))
        written.append(path)
    plt.close(fig)
    return written
