"""Download an OpenAI GPT-2 release, checking each file's content before its sha256 is pinned.

A folder of one release looks like this::

    <size>/checkpoint, encoder.json, hparams.json, model.ckpt.{data-00000-of-00001,index,meta}, vocab.bpe
    <size>/manifest.json       size, sha256, source URL and how each file above was verified

Each downloaded file's content is checked before its sha256 is pinned in the
manifest (:data:`CHECKS`): OpenAI's tokenizer files against their known hashes,
``hparams.json`` and ``checkpoint`` by parsing, the checkpoint's index by its
block checksums and its variables' shapes, the data file by every tensor's
crc32c. Only ``model.ckpt.meta``, which nothing reads, is trusted on first use.
Needs no TensorFlow.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from ..download import Download, DownloadError, download_file
from ..io import set_aside, sha256_file, write_json
from ..tokenizer import ENCODER_JSON_SHA256, VOCAB_BPE_SHA256
from . import bundle
from .layout import (
    DATA,
    FILENAMES,
    GPT2_HPARAMS,
    HPARAMS,
    INDEX,
    KNOWN_FILE_SIZES,
    MANIFEST,
    SIZES,
    check_size,
    check_tf_layout,
    read_hparams,
    tf_variable_shapes,
)

BASE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/models"
BACKUP_BASE_URL = "https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2"  # the book's mirror
MANIFEST_FORMAT = "gptlab-gpt2-manifest"
# Every GPT-2 release ships the same tokenizer files.
KNOWN_SHA256 = {"encoder.json": ENCODER_JSON_SHA256, "vocab.bpe": VOCAB_BPE_SHA256}
TRUSTED = "trusted on first use"
# How each file's content is checked before it is pinned (recorded as "verified" in the manifest).
CHECKS = {
    "checkpoint": "parsed, names model.ckpt",
    "encoder.json": "known sha256",
    HPARAMS: "parsed",  # "known hparams" when checked against OpenAI's values
    INDEX: "tensor-bundle block crc32c, float32 dtypes, shapes of hparams.json",
    DATA: "tensor-bundle crc32c of every tensor, size",
    "model.ckpt.meta": TRUSTED,
    "vocab.bpe": "known sha256",
}
# Each file can be checked as soon as it lands: the index needs hparams.json, the data file the index.
DOWNLOAD_ORDER = ("checkpoint", "encoder.json", HPARAMS, INDEX, DATA, "model.ckpt.meta", "vocab.bpe")


def gpt2_urls(model_size: str, filename: str, base_urls) -> list[str]:
    """``<base>/<size>/<file>`` for each base URL (https://, http:// or file://), in order."""
    return [f"{str(base).rstrip('/')}/{model_size}/{filename}" for base in base_urls if base]


def read_manifest(model_dir) -> dict | None:
    """The folder's ``manifest.json`` as a dict, ``None`` when there is none; raise if it is unusable."""
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it to re-verify from scratch") from err
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("files"), dict):
        raise ValueError(f"{path} is not a gptlab GPT-2 manifest; delete it to re-verify from scratch")
    return manifest


def write_manifest(model_dir, model_size: str, files: dict) -> Path:
    """Write ``manifest.json`` pinning ``files`` (name -> record), in :data:`FILENAMES` order."""
    files = {name: files[name] for name in FILENAMES if name in files}
    return write_json(
        {"format": MANIFEST_FORMAT, "model_size": model_size, "files": files}, Path(model_dir) / MANIFEST
    )


# --------------------------------------------------------------------------- content checks

_CHECKPOINT_STATE = re.compile(
    r'(?P<key>model_checkpoint_path|all_model_checkpoint_paths): "(?P<path>[^"\\]*)"'
    r"|(all_model_checkpoint_timestamps|last_preserved_timestamp): [0-9.eE+-]+"
)


def _check_checkpoint_state(path: Path) -> None:
    """TensorFlow's text ``checkpoint`` file: known lines only, every path naming ``model.ckpt``."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"not text: byte {err.start} is not UTF-8") from None
    paths = {}
    for line in text.splitlines():
        match = _CHECKPOINT_STATE.fullmatch(line.strip())
        if match is None:
            raise ValueError(f"line {line!r} is not part of a TensorFlow checkpoint state")
        if match["key"]:
            paths.setdefault(match["key"], []).append(match["path"])
    if "model_checkpoint_path" not in paths:
        raise ValueError("no model_checkpoint_path line")
    other = [p for ps in paths.values() for p in ps if PurePath(p).name != "model.ckpt"]
    if other:
        raise ValueError(f"names {other[0]!r}; GPT-2 releases name model.ckpt")


def _check_known_sha256(folder: Path, name: str, model_size) -> None:
    sha = sha256_file(folder / name)
    if sha != KNOWN_SHA256[name]:
        raise ValueError(f"sha256 {sha} is not that of OpenAI's GPT-2 {name} ({KNOWN_SHA256[name]})")


def _check_hparams_file(folder: Path, name: str, model_size) -> str | None:
    hparams = read_hparams(folder / name)
    if model_size is None:
        return None
    if hparams != GPT2_HPARAMS[model_size]:
        raise ValueError(f"holds {hparams}; OpenAI's {model_size} has {GPT2_HPARAMS[model_size]}")
    return "known hparams"


def _check_index(folder: Path, name: str, model_size) -> None:
    path = folder / name
    header, entries = bundle.read_index(path)
    bundle.check_float32(path, entries.values())
    if header["num_shards"] != 1:
        raise ValueError(f"{header['num_shards']} data shards; GPT-2 releases have one")
    shapes = tf_variable_shapes(read_hparams(folder / HPARAMS))
    check_tf_layout({n: e.shape for n, e in entries.items()}, shapes, str(path))


def _check_data(folder: Path, name: str, model_size) -> None:
    _, entries = bundle.read_index(folder / INDEX)
    bundle.check_data(folder / name, entries.values())


_CHECKERS = {
    "checkpoint": lambda folder, name, size: _check_checkpoint_state(folder / name),
    "encoder.json": _check_known_sha256,
    "vocab.bpe": _check_known_sha256,
    HPARAMS: _check_hparams_file,
    INDEX: _check_index,
    DATA: _check_data,
    "model.ckpt.meta": lambda folder, name, size: None,
}


def verify_release_file(model_dir, name: str, *, model_size: str | None = None) -> str:
    """Check the content of file ``name`` of the release in ``model_dir``; return how (:data:`CHECKS`).

    Raises ``ValueError`` saying what failed. With ``model_size``,
    ``hparams.json`` must hold OpenAI's values for that size. The index is
    checked against ``hparams.json`` and the data file against the index, so
    check them in :data:`DOWNLOAD_ORDER`. Needs no TensorFlow.
    """
    if name not in _CHECKERS:
        raise ValueError(f"{name} is not a file of a GPT-2 release; those are {FILENAMES}")
    return _CHECKERS[name](Path(model_dir), name, model_size) or CHECKS[name]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- downloading


def download_gpt2(
    model_size: str,
    model_dir,
    base_urls: Sequence[str] = (BASE_URL, BACKUP_BASE_URL),
    *,
    check_known_sizes: bool = True,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Fetch the seven files of GPT-2 ``model_size`` into ``model_dir``, verified; return ``model_dir``.

    ``base_urls`` are mirrors, tried in order for each file (https://, http://
    or file:// of a folder holding ``<size>/<file>``; one URL works too).
    Each file's content is checked (:func:`verify_release_file`) before its
    size, sha256, source URL and the checks it passed are pinned in
    ``manifest.json``; a file that fails is moved aside to ``<file>.bad`` and
    never pinned, and the next mirror is tried. When no mirror gives a file
    that passes, the ``DownloadError`` names it, each URL and why it failed
    (running the download again fetches it anew); callers catch it to add
    where their mirrors are set. Files already present are checked against
    the manifest (sha256) and fetched again only if they fail; files without a
    verified pin are checked by content, and fetched again if they fail.
    ``check_known_sizes`` also checks OpenAI's known file sizes (124M, 355M)
    and ``hparams.json`` values; turn it off for mirrors holding other files,
    such as synthetic test checkpoints.
    """
    check_size(model_size)
    release = _Release.open(model_size, model_dir, base_urls, check_known_sizes)
    options = dict(retries=retries, backoff=backoff, timeout=timeout, progress=progress)
    for name in DOWNLOAD_ORDER:
        release.fetch(name, options)
    read_hparams(release.folder / HPARAMS)
    return release.folder


@dataclass
class _Release:
    """The folder being filled, its pins, and where its files come from."""

    model_size: str
    folder: Path
    base_urls: list[str]
    check_known_sizes: bool
    pinned: dict  # as the manifest was when the download started
    files: dict = field(default_factory=dict)  # as the manifest is now

    @classmethod
    def open(cls, model_size: str, model_dir, base_urls, check_known_sizes: bool) -> _Release:
        if isinstance(base_urls, (str, os.PathLike)):
            base_urls = [base_urls]
        base_urls = [str(base) for base in base_urls if base]
        if not base_urls:
            raise ValueError(f"no base URL given for GPT-2 {model_size}")
        folder = Path(model_dir)
        folder.mkdir(parents=True, exist_ok=True)
        manifest = read_manifest(folder)
        if manifest is not None and manifest.get("model_size") != model_size:
            raise ValueError(
                f"{folder / MANIFEST} is for GPT-2 {manifest.get('model_size')}, not {model_size}: "
                "use one folder per size"
            )
        pinned = manifest["files"] if manifest else {}
        return cls(model_size, folder, base_urls, check_known_sizes, pinned, dict(pinned))

    def advice(self) -> str:
        """What generally helps when a file cannot be fetched."""
        pins = (
            f"; {MANIFEST} there pins their sha256 (delete it to accept other files)" if self.pinned else ""
        )
        return (
            f"check the network connection and run the download again (it resumes where it stopped), use "
            f"another mirror (https://, http:// or file:// of a folder holding {self.model_size}/<file>), or "
            f"copy the files {', '.join(FILENAMES)} of the {self.model_size} release into {self.folder} "
            f"yourself{pins}"
        )

    def fetch(self, name: str, options: dict) -> None:
        """Fetch (or keep) file ``name``, check its content, pin it; try the next mirror if it fails."""
        entry = self.pinned.get(name, {})
        if name in KNOWN_SHA256 and entry.get("sha256") != KNOWN_SHA256[name]:
            entry = {}  # the known hash decides, whatever an older manifest pinned
        urls = gpt2_urls(self.model_size, name, self.base_urls)
        rejected: list[str] = []  # "url: why" of each copy that failed its check
        while True:
            result = self._download(name, urls, entry, rejected, options)
            try:
                how = self._verify(name, result, entry)
                break
            except _Rejected as err:
                urls = self._after_rejection(name, result.url, urls, rejected, err)
                entry = {}
        record = {"size": result.size, "sha256": result.sha256, "url": result.url or entry.get("url")}
        record["verified"] = how
        if record != entry:  # pin each file as soon as it is verified, so a failed run keeps its progress
            self.files[name] = record
            write_manifest(self.folder, self.model_size, self.files)

    def _download(self, name: str, urls: list[str], entry: dict, rejected: list[str], options) -> Download:
        known = KNOWN_FILE_SIZES.get(self.model_size, {}) if self.check_known_sizes else {}
        try:
            return download_file(
                urls,
                self.folder / name,
                expected_size=entry.get("size", known.get(name)),
                expected_sha256=KNOWN_SHA256.get(name) or entry.get("sha256"),
                **options,
            )
        except DownloadError as err:
            if rejected:  # earlier mirrors served copies that failed their check
                raise DownloadError(err.failure, [*rejected, *err.tried], [self.advice()]) from err
            err.advise(self.advice(), replace=True)
            raise

    def _verify(self, name: str, result: Download, entry: dict) -> str:
        """How ``name`` passed its check; if it fails, move it aside, un-pin it and raise ``_Rejected``."""
        if result.url is None and entry.get("verified") and entry.get("sha256") == result.sha256:
            return entry["verified"]  # checked when pinned, unchanged since
        path = self.folder / name
        try:
            return verify_release_file(
                self.folder, name, model_size=self.model_size if self.check_known_sizes else None
            )
        except ValueError as err:
            reason = err.reason if isinstance(err, bundle.BundleError) and err.path == path else err
            bad = set_aside(path)
            if self.files.pop(name, None) is not None:
                write_manifest(self.folder, self.model_size, self.files)
            raise _Rejected(reason, bad) from err

    def _after_rejection(
        self, name: str, url: str | None, urls: list[str], rejected: list[str], err
    ) -> list[str]:
        """The URLs left to try for ``name`` after the copy from ``url`` failed its check (``err``).

        A copy that was here before (``url`` None: copied, or pinned unchecked) is
        fetched again from every mirror; a downloaded one from the mirrors after
        its own. Raises the ``DownloadError`` when none is left.
        """
        path = self.folder / name
        if url is None:
            _log(f"{path} fails its check ({CHECKS[name]}): {err}, fetching it again")
            return urls
        rejected.append(f"{url}: fails its check ({CHECKS[name]}): {err.reason}")
        left = urls[urls.index(url) + 1 :]
        if not left:
            raise self._rejected_error(name, rejected) from err.__cause__
        _log(f"{path} from {url} fails its check ({CHECKS[name]}): {err}, trying the next mirror")
        return left

    def _rejected_error(self, name: str, rejected: list[str]) -> DownloadError:
        return DownloadError(
            f"no copy of {name} passes its check, so none was pinned in {MANIFEST}; the last was moved to "
            f"{self.folder / name}.bad. Run the download again to fetch it anew; if it fails again, the "
            "mirror serves a damaged or another file.",
            rejected,
            [self.advice()],
        )


class _Rejected(Exception):
    """A file failed its content check; it was moved aside and un-pinned. The message says why and where."""

    def __init__(self, reason, bad: Path):
        super().__init__(f"{reason}; moved to {bad}")
        self.reason = reason


# --------------------------------------------------------------------------- damage found later


def _guess_size(folder: Path) -> str | None:
    try:
        manifest = read_manifest(folder)
        if manifest and manifest.get("model_size") in SIZES:
            return manifest["model_size"]
        hparams = read_hparams(folder / HPARAMS)
    except (OSError, ValueError):
        return None
    return next((size for size, hp in GPT2_HPARAMS.items() if hp == hparams), None)


def unpin_damaged_file(path, reason: str) -> str:
    """Move a damaged (or note a missing) file of a downloaded release aside and un-pin it; return a message.

    The file goes to ``<file>.bad`` and the folder's whole ``manifest.json`` is
    removed: the next :func:`download_gpt2` fetches the file again and
    re-checks the files still there by content. (Removing the manifest, not
    just the file's entry, is what makes the pipeline's download rule, whose
    output is the manifest, run again.) The message says what to run next.
    """
    path = Path(path)
    folder = path.parent
    size = _guess_size(folder)
    if path.exists():
        what = f"{path} is damaged: {reason}. It was moved to {set_aside(path)}"
    else:
        what = f"{path} is missing. Nothing was moved"
    manifest = folder / MANIFEST
    if manifest.exists():
        manifest.unlink()
        what += f" and {manifest} removed"
    size_arg = size or "SIZE"
    return (
        f"{what}, so that the next download fetches "
        f"it again and re-verifies the other files. Next: run the download again, then convert; in the "
        f"pipeline, run snakemake again; on the command line, gptlab download --size {size_arg} "
        f"--dir {folder} (with the --mirror options used before), then gptlab convert {folder}; in Python, "
        f"gptlab.gpt2.download_gpt2({size_arg!r}, {str(folder)!r}), then convert_tf_checkpoint again"
    )
