"""Check a TensorFlow checkpoint (a "tensor bundle") for damage, without TensorFlow.

A TF2/TF1-V2 checkpoint ``<prefix>`` is an index file ``<prefix>.index`` and
data files ``<prefix>.data-NNNNN-of-MMMMM``:

* the index is a LevelDB-style table (SSTable) written without compression:
  data blocks of prefix-compressed key/value entries, each block followed by a
  5-byte trailer (type byte, masked crc32c of block and type byte), an index
  block pointing at the data blocks, and a 48-byte footer (two block handles,
  padding, magic ``0xdb4775248b80fb57``);
* key ``""`` holds a ``BundleHeaderProto``; every other key is a tensor name
  whose value is a ``BundleEntryProto``: dtype, shape, shard, offset and size in
  the data file, and the masked crc32c of the tensor's bytes.

:func:`read_index` verifies every block's checksum and decodes the entries;
:func:`check_data` verifies the data file's size and every tensor's crc32c,
which is what TensorFlow checks when it reads a tensor. A failure raises
:class:`BundleError` naming the damaged file.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
DT_FLOAT = 1  # tensorflow.DataType
_CHUNK = 8 << 20


class BundleError(ValueError):
    """A checkpoint file is damaged (or not a tensor bundle); ``path`` is that file."""

    def __init__(self, path, message: str):
        super().__init__(f"{path}: {message}")
        self.path = Path(path)
        self.reason = message


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor lies in the data files, and its checksum (unmasked crc32c)."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing ``crc``; hardware-accelerated."""
    try:
        import google_crc32c  # imported here: only checking needs it
    except ImportError as err:  # pragma: no cover - a dependency of gptlab
        raise ImportError(
            "checking TensorFlow checkpoints needs google-crc32c: pip install google-crc32c"
        ) from err
    return google_crc32c.extend(crc, data)


def mask(crc: int) -> int:
    """LevelDB/TensorFlow's masked crc32c (stored so that a crc of crcs is not trivially small)."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and shift:  # writers never pad a varint: a flipped continuation bit
                raise ValueError("non-minimal varint")
            return value, pos
        shift += 7


def _fields(buf: bytes):
    """Yield ``(field number, value)`` of a protobuf message: ints, or bytes for length-delimited fields."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            if pos + n > len(buf):
                raise ValueError("truncated fixed-width field")
            value, pos = int.from_bytes(buf[pos : pos + n], "little"), pos + n
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise ValueError("truncated length-delimited field")
            value, pos = buf[pos : pos + n], pos + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, value


def _shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for field, value in _fields(buf):
        if field == 2:  # TensorShapeProto.dim
            dims.append(next((v for f, v in _fields(value) if f == 1), 0))
        elif field == 3 and value:
            raise ValueError("unknown rank")
    return tuple(dims)


def _entry(name: str, buf: bytes) -> BundleEntry:
    f = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "crc32c": None}
    for field, value in _fields(buf):
        if field == 7:
            raise ValueError("sliced (partitioned) tensors are not supported")
        key = {1: "dtype", 2: "shape", 3: "shard_id", 4: "offset", 5: "size", 6: "crc32c"}.get(field)
        if key is not None:
            f[key] = _shape(value) if key == "shape" else value
    if f["crc32c"] is None:
        raise ValueError("no crc32c recorded")
    return BundleEntry(name, **{**f, "crc32c": unmask(f["crc32c"])})


def _block(data: bytes, handle: tuple[int, int], what: str) -> bytes:
    """The contents of one table block, after checking its trailer's crc32c."""
    offset, size = handle
    if offset + size + 5 > len(data) - FOOTER_SIZE:
        raise ValueError(f"{what} at bytes {offset}..{offset + size} lies beyond the end of the file")
    contents, kind = data[offset : offset + size], data[offset + size]
    (stored,) = struct.unpack_from("<I", data, offset + size + 1)
    actual = crc32c(bytes([kind]), crc32c(contents))
    if unmask(stored) != actual:
        raise ValueError(f"{what} at bytes {offset}..{offset + size} fails its crc32c check")
    if kind != 0:
        raise ValueError(f"{what} uses compression type {kind}; tensor bundles are written uncompressed")
    return contents


def _block_entries(block: bytes):
    """Yield ``(key, value)`` of a block: entries share key prefixes, a restart array ends the block."""
    if len(block) < 4:
        raise ValueError("block too short")
    (n_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 * (n_restarts + 1)
    if end < 0:
        raise ValueError("bad restart array")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        own, pos = _varint(block, pos)
        n_value, pos = _varint(block, pos)
        if shared > len(key) or pos + own + n_value > end:
            raise ValueError("malformed block entry")
        key = key[:shared] + block[pos : pos + own]
        pos += own
        yield key, block[pos : pos + n_value]
        pos += n_value


def read_index(path) -> tuple[dict, dict[str, BundleEntry]]:
    """``(header, entries)`` of an index file, every block's crc32c checked; raise :class:`BundleError`.

    ``header`` has ``num_shards`` and ``endianness`` (0: little-endian);
    ``entries`` maps tensor names to :class:`BundleEntry`, in key order.
    """
    return parse_index(Path(path).read_bytes(), path)


def parse_index(data: bytes, path) -> tuple[dict, dict[str, BundleEntry]]:
    """:func:`read_index` of the bytes ``data`` of the index file ``path``."""
    try:
        meta_block, index_block = _footer(data)
        _block(data, meta_block, "the metaindex block")  # unused, but checked
        header, entries = _table(data, index_block)
    except (ValueError, UnicodeDecodeError) as err:
        raise BundleError(path, str(err)) from None
    if header["endianness"] != 0:
        raise BundleError(path, "big-endian tensor bundle; only little-endian ones are supported")
    return header, entries


def _footer(data: bytes) -> tuple[tuple[int, int], tuple[int, int]]:
    """The handles ``(offset, size)`` of the metaindex and index blocks, from the table's footer."""
    if len(data) < FOOTER_SIZE or struct.unpack_from("<Q", data, len(data) - 8)[0] != MAGIC:
        raise ValueError("no table footer (wrong magic number): not a tensor-bundle index, or truncated")
    footer = data[-FOOTER_SIZE:]
    meta_offset, pos = _varint(footer, 0)
    meta_size, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    if any(footer[pos : FOOTER_SIZE - 8]):  # written as zeros: a set bit is damage
        raise ValueError("damaged table footer (non-zero padding)")
    return (meta_offset, meta_size), (index_offset, index_size)


def _table(data: bytes, index_block: tuple[int, int]) -> tuple[dict, dict[str, BundleEntry]]:
    """The bundle header and the entries of every data block the index block points at, in key order."""
    header, entries, last = None, {}, None
    for _, handle in _block_entries(_block(data, index_block, "the index block")):
        offset, n = _varint(handle, 0)
        size, _ = _varint(handle, n)
        for key, value in _block_entries(_block(data, (offset, size), "a data block")):
            if last is not None and key <= last:
                raise ValueError(f"keys out of order at {key!r}")
            last = key
            if key == b"":
                fields = dict(_fields(value))
                header = {"num_shards": fields.get(1, 0), "endianness": fields.get(2, 0)}
            else:
                entries[key.decode("utf-8")] = _named_entry(key.decode("utf-8"), value)
    if header is None:
        raise ValueError("no bundle header (empty key)")
    return header, entries


def _named_entry(name: str, value: bytes) -> BundleEntry:
    try:
        return _entry(name, value)
    except ValueError as err:
        raise ValueError(f"entry {name!r}: {err}") from None


def data_file(prefix, shard: int = 0, num_shards: int = 1) -> Path:
    return Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")


def check_float32(path, entries) -> None:
    """Raise :class:`BundleError` unless every tensor is float32 and its byte size matches its shape."""
    for e in entries:
        if e.dtype != DT_FLOAT:
            raise BundleError(path, f"tensor {e.name} has dtype {e.dtype}, not float32 ({DT_FLOAT})")
        n = 4
        for d in e.shape:
            n *= d
        if e.size != n:
            raise BundleError(path, f"tensor {e.name} of shape {e.shape} takes {e.size} bytes, not {n}")


def check_data_size(path, entries) -> None:
    """Raise :class:`BundleError` unless ``path`` is exactly as long as the tensors the index places in it."""
    size = os.stat(path).st_size
    end = max((e.offset + e.size for e in entries), default=0)
    if size != end:
        what = "truncated" if size < end else "longer than the index says"
        raise BundleError(path, f"{size:,} bytes, the index places tensors up to byte {end:,} ({what})")


def check_data(path, entries) -> int:
    """Check the data file's size and every tensor's crc32c; return the bytes checked."""
    entries = sorted(entries, key=lambda e: e.offset)
    check_data_size(path, entries)
    with open(path, "rb", buffering=0) as f:
        for e in entries:
            f.seek(e.offset)
            crc, left = 0, e.size
            while left:
                chunk = f.read(min(_CHUNK, left))  # bytes: the C extension takes no mutable buffers
                if not chunk:
                    raise BundleError(path, f"unexpected end of file in tensor {e.name}")
                crc = crc32c(chunk, crc)
                left -= len(chunk)
            if crc != e.crc32c:
                raise BundleError(
                    path,
                    f"tensor {e.name} (bytes {e.offset:,}..{e.offset + e.size:,}) has crc32c {crc:#010x}, "
                    f"the index records {e.crc32c:#010x}",
                )
    return sum(e.size for e in entries)
