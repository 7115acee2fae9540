"""Verified, resumable downloads of single files (model weights, the corpus).

Built on ``requests`` (with urllib3 underneath): it is already a dependency and
gives us redirects, proxies from the environment, TLS and connection pooling,
while we keep control of what matters for multi-GB checkpoints on flaky links.
``pooch`` does verified atomic downloads too, but it restarts an interrupted
transfer from byte 0 and needs the hash up front; OpenAI publishes none.

What one call guarantees:

* the bytes go to ``<dest>.part`` and are renamed to ``dest`` only when
  complete and verified, so nothing half-written ever sits under the final name;
* an interrupted transfer resumes with an HTTP ``Range`` request (also across
  calls: the ``.part`` file stays), with retries and exponential back-off;
* verification: the size (``expected_size`` and the server's length), the
  server's ``Content-MD5`` when it sends one, and ``expected_sha256`` if given;
  a complete file with another sha256 is a different file, not a transfer
  error: that URL is not retried;
* a full disk stops at once with :class:`gptlab.io.NoSpaceError` naming the
  path; the bytes received so far stay in ``<dest>.part``;
* mirrors: ``urls`` are tried in order; ``file://`` URLs work for offline copies;
* failure raises :class:`DownloadError` naming every URL tried, why each
  failed, and what generally helps; callers catch it to add advice of their
  own (:meth:`DownloadError.advise`), such as where their mirrors are set.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import requests
import urllib3
from tqdm import tqdm

from .io import CHUNK, file_digests, no_space_error, set_aside, sha256_file

__all__ = ["VERDICT_SHA256", "VERDICT_URL", "Download", "DownloadError", "download_file", "download_verdict"]
__all__ += ["file_digests", "sha256_file"]
VERDICT_URL = (
    "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/the-verdict.txt"
)
VERDICT_SHA256 = "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f"


class DownloadError(RuntimeError):
    """A download failed: what failed, each URL tried and why, and what to do about it.

    ``failure`` says what could not be fetched, ``tried`` holds one ``"url: why"``
    line per URL, ``advice`` what helps, most specific first. The message is all
    three. A caller that knows better (where its mirrors are set, which setting
    names the file) adds that with :meth:`advise` and raises the error again.
    """

    def __init__(self, failure: str, tried: Sequence[str] = (), advice: Sequence[str] = ()):
        super().__init__(failure, tuple(tried), tuple(advice))

    @property
    def failure(self) -> str:
        return self.args[0]

    @property
    def tried(self) -> tuple[str, ...]:
        return self.args[1] if len(self.args) > 1 else ()

    @property
    def advice(self) -> tuple[str, ...]:
        return self.args[2] if len(self.args) > 2 else ()

    def advise(self, advice: str, *, replace: bool = False) -> DownloadError:
        """Put ``advice`` first among what the message says to do (``replace``: instead); return ``self``."""
        self.args = (self.failure, self.tried, (advice,) if replace else (advice, *self.advice))
        return self

    def __str__(self) -> str:
        text = self.failure
        if self.tried:
            text += " Tried:\n" + "\n".join(f"  {line}" for line in self.tried)
        if self.advice:
            text += "\nFix: " + "; or ".join(self.advice)
        return text


class _Permanent(Exception):
    """This URL will not work however often we retry (404, wrong size, ...)."""


class _Corrupt(Exception):
    """The transfer completed but the bytes are wrong: start over from byte 0."""


class _OtherFile(_Permanent):
    """The source holds a complete file with another sha256: retrying cannot help."""


@dataclass(frozen=True)
class Download:
    """A verified file. Usable wherever a path is (``open(result)`` works)."""

    path: Path
    size: int
    sha256: str
    url: str | None  # None when an existing verified file was kept

    def __fspath__(self) -> str:
        return str(self.path)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _verify(path: Path, *, expected_size, expected_sha256, md5_b64=None) -> str:
    """Return the sha256 of ``path`` or raise ``_Corrupt`` saying which check failed."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise _Corrupt(f"size {size} bytes, expected {expected_size}")
    digests = file_digests(path, ("sha256", "md5"))
    if md5_b64 is not None:
        got = base64.b64encode(bytes.fromhex(digests["md5"])).decode()
        if got != md5_b64:
            raise _Corrupt(f"MD5 {got} differs from the server's Content-MD5 {md5_b64}")
    if expected_sha256 is not None and digests["sha256"] != expected_sha256.lower():
        raise _OtherFile(f"sha256 {digests['sha256']}, expected {expected_sha256}")
    return digests["sha256"]


def _bar(name: str, total, initial: int, progress: bool):
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=name,
        file=sys.stderr,
        disable=not progress,
        leave=True,
    )


def _fetch_file_url(url: str, part: Path, name: str, progress: bool) -> tuple[int, None]:
    """Copy a ``file://`` URL (or a plain local path) into ``part``, resuming after the bytes there."""
    src = Path(url2pathname(urlparse(url).path)) if url.startswith("file:") else Path(url)
    if not src.is_file():
        raise _Permanent(f"{src} does not exist")
    total = src.stat().st_size
    offset = part.stat().st_size if part.exists() else 0
    if offset > total:
        part.unlink()
        offset = 0
    with open(src, "rb") as fin, open(part, "ab") as fout, _bar(name, total, offset, progress) as bar:
        fin.seek(offset)
        for chunk in iter(lambda: fin.read(CHUNK), b""):
            fout.write(chunk)
            bar.update(len(chunk))
    return total, None


def _fetch_http(url, part: Path, name, progress, session, timeout, expected_size, seen: dict):
    """One HTTP attempt; returns ``(total_size, whole_file_md5_b64 or None)``.

    ``seen`` keeps the whole file's MD5 across the attempts on one URL: a 200
    response that is cut still told us the MD5 that the resumed file must have.
    """
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()
        offset = 0
    headers = {"Accept-Encoding": "identity"}  # byte ranges must refer to the stored bytes
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with session.get(url, headers=headers, stream=True, timeout=timeout) as r:
        if r.status_code == 416 and offset:
            return _range_not_satisfiable(r, part, offset)
        _check_status(r)
        offset, total, range_md5, whole_md5 = _extent(r, part, offset)
        whole_md5 = seen["md5"] = whole_md5 or seen.get("md5")
        if expected_size is not None and total is not None and total != expected_size:
            raise _Permanent(f"server reports {total} bytes, expected {expected_size}: a different file")
        received, range_hash = _receive(r, part, name, total, offset, progress)
        if total is not None and offset + received < total:
            raise ConnectionError(f"connection closed after {offset + received} of {total} bytes")
        if range_md5 and base64.b64encode(range_hash.digest()).decode() != range_md5:
            part.unlink()
            raise _Corrupt(f"bytes {offset}- do not match the server's Content-MD5 {range_md5}")
        return (total if total is not None else offset + received), whole_md5


def _range_not_satisfiable(r, part: Path, offset: int) -> tuple[int, None]:
    """A 416 answer to a resume: the file is complete already, or ours is longer than the remote one."""
    if r.headers.get("Content-Range", "") == f"bytes */{offset}":
        return offset, None  # the previous attempt had already received everything
    part.unlink()  # our partial file is longer than the remote one: start again
    raise ConnectionError("server refused the resume range; restarting from byte 0")


def _check_status(r) -> None:
    if r.status_code in (408, 425, 429) or r.status_code >= 500:
        raise ConnectionError(f"HTTP {r.status_code} {r.reason}")
    if r.status_code >= 400:
        raise _Permanent(f"HTTP {r.status_code} {r.reason}")


def _extent(r, part: Path, offset: int) -> tuple[int, int | None, str | None, str | None]:
    """``(offset, total size, MD5 of this range, MD5 of the whole file)`` of a 200 or 206 response."""
    if r.status_code == 206:
        first, _, total = r.headers.get("Content-Range", "").removeprefix("bytes ").partition("/")
        if not first.startswith(f"{offset}-"):
            part.unlink()
            raise ConnectionError(f"server sent range {first!r}, asked for {offset}-; restarting")
        # Per RFC 1864 the Content-MD5 of a 206 covers that range only; Azure sends
        # the whole blob's MD5 separately.
        total = int(total) if total.isdigit() else None
        return offset, total, r.headers.get("Content-MD5"), r.headers.get("x-ms-blob-content-md5")
    if offset:  # server ignored Range and sends everything: overwrite
        part.unlink()
        offset = 0
    length = r.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    return offset, total, None, r.headers.get("Content-MD5") or r.headers.get("x-ms-blob-content-md5")


def _receive(r, part: Path, name: str, total, offset: int, progress: bool):
    """Append the response body to ``part``; return ``(bytes received, their MD5 hash object)``."""
    range_hash = hashlib.md5()
    received = 0
    with open(part, "ab") as f, _bar(name, total, offset, progress) as bar:
        # Raw reads hand over every byte received before a cut (requests' iter_content
        # would drop its partly filled buffer), so a resume loses nothing.
        for chunk in iter(lambda: r.raw.read(CHUNK, decode_content=False), b""):
            f.write(chunk)
            range_hash.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    return received, range_hash


def _keep_existing(dest: Path, expected_size, expected_sha256) -> Download | None:
    """The file already at ``dest`` if it passes the checks; one that fails is moved aside."""
    if not dest.exists():
        return None
    try:
        sha = _verify(dest, expected_size=expected_size, expected_sha256=expected_sha256)
        return Download(dest, dest.stat().st_size, sha, None)
    except (_Corrupt, _OtherFile) as err:
        # Move it aside so that a failed download cannot leave it looking valid.
        bad = set_aside(dest)
        _log(f"{dest} fails verification ({err}); moved to {bad}, downloading it again")
        return None


@dataclass
class _Transfer:
    """One file to fetch: where it goes, what it must be, how hard to try."""

    dest: Path
    expected_size: int | None
    expected_sha256: str | None
    retries: int
    backoff: float
    timeout: float
    progress: bool
    session: requests.Session

    @property
    def part(self) -> Path:
        return self.dest.with_name(self.dest.name + ".part")

    def from_url(self, url: str) -> tuple[Download | None, Exception | None]:
        """``(the verified file, None)``, or ``(None, why)`` once this URL is given up on."""
        error, seen = None, {}
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return self.attempt(url, seen), None
            except _Permanent as err:
                if isinstance(err, _OtherFile):
                    self.part.unlink(missing_ok=True)
                return None, err
            except _Corrupt as err:
                self.part.unlink(missing_ok=True)  # never resume on top of bad bytes
                error = err
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as err:
                full = no_space_error(err, self.part)
                if full is not None:  # not transient, and no mirror has more room: keep the .part
                    raise full from err
                error = err
            _log(f"{url}: {error}; attempt {attempt + 1}/{self.retries + 1}")
        return None, error

    def attempt(self, url: str, seen: dict) -> Download:
        """One try: fetch (resuming), verify, move into place."""
        part, name = self.part, self.dest.name
        if urlparse(url).scheme in ("file", ""):
            total, md5 = _fetch_file_url(url, part, name, self.progress)
        else:
            total, md5 = _fetch_http(
                url, part, name, self.progress, self.session, self.timeout, self.expected_size, seen
            )
        if part.stat().st_size != total:
            raise _Corrupt(f"got {part.stat().st_size} bytes, the source has {total}")
        sha = _verify(
            part, expected_size=self.expected_size, expected_sha256=self.expected_sha256, md5_b64=md5
        )
        with open(part, "rb") as f:
            os.fsync(f.fileno())
        os.replace(part, self.dest)
        return Download(self.dest, total, sha, url)


def download_file(
    urls,
    dest,
    *,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
    session: requests.Session | None = None,
) -> Download:
    """Download the first working URL of ``urls`` to ``dest``, verified; return a :class:`Download`.

    ``urls`` is one URL or a list (mirrors, in order; ``http(s)://``,
    ``file://`` or a plain local path). An existing ``dest`` is kept if it passes the given checks
    (always, when none are given), else fetched again. Each URL gets
    ``retries`` further attempts after transient errors, waiting ``backoff``,
    ``2*backoff``, ... seconds; each attempt resumes where the last stopped.
    When every URL fails, :class:`DownloadError` names each with its error.
    """
    urls = [str(urls)] if isinstance(urls, (str, os.PathLike)) else [str(u) for u in urls]
    if not urls:
        raise ValueError(f"no URL given for {dest}")
    if retries < 0 or backoff < 0:
        raise ValueError(f"retries={retries} and backoff={backoff} must be >= 0")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    kept = _keep_existing(dest, expected_size, expected_sha256)
    if kept is not None:
        return kept
    own_session = session is None
    job = _Transfer(
        dest,
        expected_size,
        expected_sha256,
        retries,
        backoff,
        timeout,
        progress,
        session or requests.Session(),
    )
    failures: list[str] = []
    try:
        for url in urls:
            result, error = job.from_url(url)
            if result is not None:
                return result
            failures.append(f"{url}: {error}")
    finally:
        if own_session:
            job.session.close()
    part = job.part
    left = f" ({part.stat().st_size} bytes kept in {part} to resume)" if part.exists() else ""
    advice = (
        "check the network connection and retry (the transfer resumes), pass a mirror URL "
        f"(http(s):// or file://), or copy a verified file to {dest} yourself"
    )
    raise DownloadError(f"could not download {dest.name} to {dest}{left}.", failures, [advice])


def download_verdict(dest, *, urls=(VERDICT_URL,), progress: bool = True, **kwargs) -> Download:
    """The chapter's corpus, *The Verdict*, checked against its known sha256."""
    return download_file(list(urls), dest, expected_sha256=VERDICT_SHA256, progress=progress, **kwargs)
