"""Token corpora larger than memory: tokenized once to a flat file, then streamed as windows.

A corpus is one UTF-8 text file or a folder of ``.txt`` files (such as the
book's Project Gutenberg bonus). :func:`tokenize_corpus` writes, as nanoGPT
does for OpenWebText, a folder with

* ``tokens.bin``: every document's GPT-2 token ids, uint16 little-endian,
  concatenated, each document followed by ``<|endoftext|>`` (50256);
* ``meta.json``: written last, so a folder holding it is complete: format
  version, dtype, ``n_tokens``, ``tokens_sha256``, tokenizer id, eot id and,
  per document, its relative name, bytes, sha256, first token ``offset`` and
  ``n_tokens`` (its eot follows at ``offset + n_tokens``).

Files are read in chunks and cut only right after a ``"\\n"`` with
non-whitespace on both sides. GPT-2's pre-tokenizer never joins text across
such a point (only whitespace runs can hold a newline, and this one is a
pre-token of its own), so the ids equal those of encoding each whole text.

:class:`TokenCorpus` opens such a folder and gives train/val loaders with the
contract of :func:`gptlab.data.create_book_loaders`; each window is read from
the file when asked for, so memory stays flat whatever the corpus size.
Tokenizing needs no torch; the loaders import it.
"""

from __future__ import annotations

import codecs
import hashlib
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from .io import atomic_open, sha256_file, write_json
from .tokenizer import TOKENIZER_ID, get_tokenizer

FORMAT_VERSION = 1
EOT_ID = 50256
TOKENS_FILE = "tokens.bin"
META_FILE = "meta.json"
_DTYPE = np.dtype("<u2")


def corpus_sources(path) -> list[Path]:
    """The text files of a corpus: ``[path]`` for a file, else the folder's ``*.txt`` files.

    A folder is searched recursively; its files come sorted by their path
    relative to it, compared folder by folder.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a UTF-8 .txt file or a folder of .txt files")
    if path.is_dir():
        files = sorted(
            (p for p in path.rglob("*.txt") if p.is_file()), key=lambda p: p.relative_to(path).parts
        )
        if not files:
            raise ValueError(f"{path} holds no .txt file; put the corpus's text files (*.txt) there")
        return files
    if path.suffix != ".txt":
        raise ValueError(f"{path} is not a .txt file; pass a UTF-8 text file named *.txt or a folder of them")
    return [path]


def _not_utf8(path: Path, data: bytes, err: UnicodeDecodeError, offset: int) -> ValueError:
    return ValueError(
        f"{path} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {offset + err.start}: "
        f"{err.reason}); convert it, e.g. 'iconv -f latin1 -t utf-8 -o {path}.utf8 {path}' "
        f"then 'mv {path}.utf8 {path}'"
    )


def _decoded_text(path: Path, block_bytes: int, on_block: Callable[[bytes], None]) -> Iterator[str]:
    """The text of ``path`` in pieces, newlines normalised as :func:`gptlab.data.read_text` does."""
    pending = b""  # an incomplete UTF-8 sequence at the end of a block
    held = ""  # a final "\r" whose "\n" may start the next block
    offset = 0  # file offset of pending[0]
    try:
        f = open(path, "rb")
    except PermissionError:
        raise PermissionError(
            f"{path} cannot be read (permission denied); make it readable (chmod u+r) or remove it"
        ) from None
    with f:
        while True:
            block = f.read(block_bytes)
            on_block(block)
            final = not block
            data = pending + block
            try:
                text, used = codecs.utf_8_decode(data, "strict", final)
            except UnicodeDecodeError as err:
                raise _not_utf8(path, data, err, offset) from None
            pending, offset = data[used:], offset + used
            text = held + text
            held = "\r" if not final and text.endswith("\r") else ""
            text = text[: len(text) - len(held)]
            yield text.replace("\r\n", "\n").replace("\r", "\n")
            if final:
                return


def _last_cut(text: str, lo: int) -> int:
    """Index right after the last "\\n" at or after ``lo`` with non-whitespace on both sides, or -1."""
    end = len(text) - 1  # a final "\n" has no known follower yet
    while True:
        j = text.rfind("\n", max(lo, 1), end)
        if j < 0:
            return -1
        # str.isspace covers every character the regex's \s does (and a few more): cuts stay safe.
        if not text[j - 1].isspace() and not text[j + 1].isspace():
            return j + 1
        end = j


def _safe_chunks(pieces: Iterable[str], chunk_chars: int) -> Iterator[str]:
    """Regroup text ``pieces`` into chunks of about ``chunk_chars`` cut at safe points only."""
    buf, searched = "", 0
    for piece in pieces:
        buf += piece
        if len(buf) < chunk_chars:
            continue
        cut = _last_cut(buf, searched)
        if cut < 0:
            searched = max(len(buf) - 1, 0)  # the text so far has no cut: look only at what comes next
            continue
        yield buf[:cut]
        buf = buf[cut:]  # the last cut was taken: the rest holds none
        searched = max(len(buf) - 1, 0)
    yield buf


def _document_items(sources, docs, chunk_chars, on_bytes) -> Iterator[tuple[dict, str | None]]:
    """``(doc, chunk)`` for every chunk of every file, then ``(doc, None)`` where its eot goes."""
    for path, doc in zip(sources, docs, strict=True):
        digest = hashlib.sha256()

        def on_block(block, digest=digest, doc=doc):
            digest.update(block)
            doc["bytes"] += len(block)
            on_bytes(len(block))

        for chunk in _safe_chunks(_decoded_text(path, chunk_chars, on_block), chunk_chars):
            if chunk:
                yield doc, chunk
        doc["sha256"] = digest.hexdigest()
        yield doc, None


def _batches(items: Iterable[tuple[dict, str | None]], size: int) -> Iterator[list]:
    """Lists of consecutive items holding ``size`` chunks each (eot markers do not count)."""
    batch, chunks = [], 0
    for item in items:
        batch.append(item)
        chunks += item[1] is not None
        if chunks == size:
            yield batch
            batch, chunks = [], 0
    if batch:
        yield batch


class _TokenWriter:
    """Appends token ids to an open binary file as uint16, hashing them on the way."""

    def __init__(self, f):
        self.f, self.sha, self.n = f, hashlib.sha256(), 0

    def write(self, ids) -> int:
        data = np.asarray(ids, dtype=_DTYPE).tobytes()
        self.f.write(data)
        self.sha.update(data)
        self.n += len(data) // 2
        return len(data) // 2


def tokenize_corpus(source, out_dir, *, threads: int = 1, chunk_chars: int = 1 << 20, progress=True) -> dict:
    """Tokenize the corpus at ``source`` into ``out_dir`` (``tokens.bin``, ``meta.json``); return the meta.

    Chunks of about ``chunk_chars`` characters are encoded ``4 * threads`` at
    a time on ``threads`` threads, so memory depends on those two settings,
    not on the corpus size: about 20 bytes a character of a batch for English
    (the ids come back as lists of Python ints), some 170 MB for 2 threads and
    the default chunks. An existing corpus in ``out_dir`` is replaced.
    """
    if threads < 1 or chunk_chars < 1:
        raise ValueError(f"threads={threads} and chunk_chars={chunk_chars} must be >= 1")
    from tqdm import tqdm

    root = Path(source)
    sources = corpus_sources(root)
    names = [p.relative_to(root).as_posix() for p in sources] if root.is_dir() else [root.name]
    docs = [{"name": name, "bytes": 0, "sha256": None, "offset": 0, "n_tokens": 0} for name in names]
    enc = get_tokenizer()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META_FILE).unlink(missing_ok=True)  # incomplete until the new meta.json is written
    total = sum(p.stat().st_size for p in sources)
    bar = tqdm(
        total=total, unit="B", unit_scale=True, desc="tokenizing", file=sys.stderr, disable=not progress
    )
    with bar, atomic_open(out_dir / TOKENS_FILE, "wb") as f:
        writer = _TokenWriter(f)
        items = _document_items(sources, docs, chunk_chars, bar.update)
        for batch in _batches(items, 4 * threads):
            encoded = iter(
                enc.encode_ordinary_batch([c for _, c in batch if c is not None], num_threads=threads)
            )
            for doc, chunk in batch:
                if chunk is None:
                    writer.write([EOT_ID])
                else:
                    doc["n_tokens"] += writer.write(next(encoded))
    for before, doc in itertools.pairwise(docs):
        doc["offset"] = before["offset"] + before["n_tokens"] + 1
    meta = {
        "format_version": FORMAT_VERSION,
        "dtype": "uint16",
        "byteorder": "little",
        "n_tokens": writer.n,
        "tokens_sha256": writer.sha.hexdigest(),
        "tokenizer": TOKENIZER_ID,
        "eot_id": EOT_ID,
        "source": str(root),
        "documents": docs,
    }
    write_json(meta, out_dir / META_FILE)
    return meta


class TokenWindows:
    """Map-style dataset of the windows of ``tokens.bin`` in ``[start, stop)``, as ``GPTDatasetV1`` cuts them.

    Window ``i`` starts at ``s = range(start, stop - max_length, stride)[i]``:
    input ``tokens[s:s+max_length]``, target ``tokens[s+1:s+max_length+1]``
    (int64 tensors). Each is read from the file with a positioned read when
    asked for: file pages stay in the page cache, not in this process's memory.
    """

    def __init__(self, tokens_path, start: int, stop: int, max_length: int, stride: int):
        if max_length < 1 or stride < 1:
            raise ValueError(f"max_length={max_length} and stride={stride} must be >= 1")
        self.path = str(tokens_path)
        self.max_length = max_length
        self.starts = range(start, stop - max_length, stride)
        self._fd = None

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, idx):
        import torch

        start, n = self.starts[idx], self.max_length + 1
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        data = os.pread(self._fd, 2 * n, 2 * start)
        if len(data) != 2 * n:
            raise ValueError(f"{self.path} ends before token {start + n}: truncated, delete its folder")
        ids = torch.from_numpy(np.frombuffer(data, dtype=_DTYPE).astype(np.int64))
        return ids[:-1], ids[1:]

    def __getstate__(self):  # worker processes open their own file
        return {**self.__dict__, "_fd": None}

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None


def _read_meta(folder: Path) -> dict:
    path = folder / META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} holds no complete token corpus ({META_FILE} is missing); "
            f"tokenize it with tokenize_corpus(source, {str(folder)!r})"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        ok = meta["format_version"] == FORMAT_VERSION and meta["dtype"] == "uint16" and meta["n_tokens"] >= 0
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise ValueError(
            f"{path} is not the meta.json of a token corpus (format version {FORMAT_VERSION}): "
            "delete the folder to tokenize again"
        )
    return meta


class TokenCorpus:
    """A tokenized corpus folder written by :func:`tokenize_corpus`."""

    def __init__(self, out_dir):
        self.path = Path(out_dir)
        self.tokens_path = self.path / TOKENS_FILE
        meta = _read_meta(self.path)
        n = int(meta["n_tokens"])
        size = self.tokens_path.stat().st_size if self.tokens_path.is_file() else None
        if size != 2 * n:
            raise ValueError(
                f"{self.tokens_path} holds {size} bytes but {META_FILE} says {n} tokens ({2 * n} bytes): "
                "truncated, delete the folder to tokenize again"
            )
        self._meta = meta

    @property
    def meta(self) -> dict:
        return self._meta

    @property
    def n_tokens(self) -> int:
        return int(self._meta["n_tokens"])

    @property
    def sha256(self) -> str:
        return self._meta["tokens_sha256"]

    def verify(self) -> None:
        """Hash ``tokens.bin`` (a full read) and raise ``ValueError`` unless it matches the meta."""
        digest = sha256_file(self.tokens_path)
        if digest != self.sha256:
            raise ValueError(
                f"{self.tokens_path} has sha256 {digest}, {META_FILE} says {self.sha256}: "
                "damaged, delete the folder to tokenize again"
            )

    def split(self, train_ratio: float) -> int:
        """The token index where validation starts: ``int(train_ratio * n_tokens)``."""
        if not 0.0 < train_ratio < 1.0:
            raise ValueError(f"train_ratio={train_ratio} must be strictly between 0 and 1")
        return int(train_ratio * self.n_tokens)

    def loaders(
        self, train_ratio: float, batch_size: int, max_length: int, stride: int, seed: int | None = 123
    ):
        """``(train_loader, val_loader)`` as :func:`gptlab.data.create_book_loaders` makes them.

        The split is by tokens at :meth:`split`; training batches are shuffled
        by the book's resumable sampler (which holds an epoch's order as one tensor), validation is not.
        """
        import torch
        from torch.utils.data import DataLoader

        from .data import ResumableRandomSampler, checked_loaders

        split = self.split(train_ratio)
        if seed is not None:
            torch.manual_seed(seed)
        train = TokenWindows(self.tokens_path, 0, split, max_length, stride)
        if len(train) == 0:
            raise ValueError(
                f"the training split ({split} tokens) yields no window of max_length={max_length} tokens: "
                "use a longer corpus or a smaller max_length"
            )
        sampler = ResumableRandomSampler(train)
        train_loader = DataLoader(train, batch_size=batch_size, sampler=sampler, drop_last=True)
        val = TokenWindows(self.tokens_path, split, self.n_tokens, max_length, stride)
        val_loader = DataLoader(val, batch_size=batch_size, shuffle=False, drop_last=False)
        sizes = (f"{split} tokens", f"{self.n_tokens - split} tokens")
        return checked_loaders(train_loader, val_loader, *sizes, batch_size=batch_size, max_length=max_length)
