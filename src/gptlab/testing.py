"""Offline stand-ins for the internet: synthetic GPT-2 checkpoints and a local file server.

Used by the tests and by the pipeline's offline configuration.

* :func:`write_synthetic_gpt2_checkpoint` writes a seeded random GPT-2 of any
  shape in OpenAI's exact TensorFlow-1 layout (same files, variable names and
  shapes), with OpenAI's real ``encoder.json``/``vocab.bpe``.
* :func:`write_tiny_gpt2_mirror` writes the tiny study's stand-ins for OpenAI's
  releases (:data:`TINY_GPT2_SHAPES`), and a config overlay pointing
  ``gpt2.base_urls`` at them. From the shell::

      python -m gptlab.testing mirror DIR [--config FILE]

* :class:`FileServer` serves a folder over HTTP on 127.0.0.1 from a thread,
  with byte ranges, optional ``Content-MD5`` and injectable faults (cut
  connections, 404s, a flipped byte, ignored ranges).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from .gpt2.layout import check_hparams, tf_variable_shapes
from .gpt2.tf import import_tensorflow
from .io import atomic_open, write_json, write_text
from .tokenizer import vocab_files_dir


def _synthetic_value(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random values at scales that keep activations O(1), so mapping mistakes show in the logits."""
    leaf = name.rsplit("/", 1)[-1]
    if leaf in ("wte", "wpe"):
        scale, base = 0.1, 0.0
    elif leaf == "g":  # layer-norm gain
        scale, base = 0.1, 1.0
    elif leaf == "w":  # conv1d kernel [1, d_in, d_out]
        scale, base = 1.0 / np.sqrt(shape[1]), 0.0
    else:  # biases and layer-norm shifts
        scale, base = 0.05, 0.0
    return (base + scale * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)


def write_synthetic_gpt2_checkpoint(
    dest_dir,
    *,
    n_vocab: int = 50257,
    n_ctx: int = 64,
    n_embd: int = 32,
    n_head: int = 4,
    n_layer: int = 2,
    seed: int = 0,
) -> Path:
    """Write a random GPT-2 release (all seven files) into ``dest_dir`` and return it.

    Variables are written one at a time through placeholders, so large shapes
    (355M, 774M) fit in memory. Same arguments, same weights. Needs TensorFlow.
    """
    tf = import_tensorflow()
    hparams = check_hparams(
        {"n_vocab": n_vocab, "n_ctx": n_ctx, "n_embd": n_embd, "n_head": n_head, "n_layer": n_layer}
    )
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    shapes = tf_variable_shapes(hparams)
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        value = tf.compat.v1.placeholder(tf.float32)
        variables, assigns = [], []
        for name, shape in shapes.items():
            var = tf.compat.v1.get_variable(name, shape=shape, dtype=tf.float32, use_resource=False)
            variables.append(var)
            assigns.append(tf.compat.v1.assign(var, value, validate_shape=False))
        saver = tf.compat.v1.train.Saver(var_list=variables, save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as sess:
            for (name, shape), op in zip(shapes.items(), assigns, strict=True):
                sess.run(op, {value: _synthetic_value(name, shape, rng)})
            saver.save(sess, str(dest / "model.ckpt"))
    write_json(hparams, dest / "hparams.json")
    for name in ("encoder.json", "vocab.bpe"):
        with atomic_open(dest / name, "wb") as f, open(vocab_files_dir() / name, "rb") as src:
            shutil.copyfileobj(src, f)
    return dest


# The tiny study's GPT-2 releases: small shapes in OpenAI's exact layout, one per size (two sizes,
# so that the exercises comparing sizes have something to compare).
TINY_GPT2_SHAPES = {
    "124M": dict(n_ctx=64, n_embd=32, n_head=4, n_layer=2, seed=1),
    "1558M": dict(n_ctx=64, n_embd=48, n_head=4, n_layer=3, seed=2),
}


def write_tiny_gpt2_mirror(dest_dir, sizes=None, config=None) -> Path:
    """Write a mirror of synthetic GPT-2 releases, ``dest_dir/<size>/``, and return its folder.

    Each of ``sizes`` (default: every size of :data:`TINY_GPT2_SHAPES`) gets its tiny shape. With
    ``config``, also write a config overlay there that makes the pipeline download these releases
    (``gpt2.sizes``, ``gpt2.base_urls`` as a ``file://`` URL, ``gpt2.check_known_sizes: false``).
    Same arguments, same files. Needs TensorFlow.
    """
    sizes = list(TINY_GPT2_SHAPES) if sizes is None else list(sizes)
    unknown = [size for size in sizes if size not in TINY_GPT2_SHAPES]
    if unknown or not sizes:
        raise ValueError(f"sizes {unknown or sizes} are not among the tiny sizes {list(TINY_GPT2_SHAPES)}")
    mirror = Path(dest_dir).resolve()
    for size in sizes:
        write_synthetic_gpt2_checkpoint(mirror / size, **TINY_GPT2_SHAPES[size])
    if config is not None:
        Path(config).parent.mkdir(parents=True, exist_ok=True)
        write_text(
            config,
            "# Written by `python -m gptlab.testing mirror`: synthetic GPT-2 releases (random weights in\n"
            "# OpenAI's layout, tiny shapes) that stand in for the downloads.\n"
            "gpt2:\n"
            f"  sizes: {json.dumps(sizes)}\n"
            f"  base_urls: [{json.dumps(mirror.as_uri())}]\n"
            "  check_known_sizes: false\n",
        )
    return mirror


def main(argv=None) -> int:
    """``python -m gptlab.testing mirror DIR [--config FILE] [--sizes SIZE ...]``."""
    parser = argparse.ArgumentParser(prog="python -m gptlab.testing", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    mirror = commands.add_parser(
        "mirror",
        help="write synthetic GPT-2 releases of the tiny study into DIR/<size>/",
        description="Write synthetic GPT-2 releases (random weights in OpenAI's layout, tiny shapes) "
        "into DIR/<size>/, for offline runs of the tiny study (config/test.yaml).",
    )
    mirror.add_argument("dir", help="the mirror's folder")
    mirror.add_argument("--config", help="also write a config overlay pointing gpt2.base_urls at DIR")
    mirror.add_argument("--sizes", nargs="+", choices=list(TINY_GPT2_SHAPES), help="default: all")
    args = parser.parse_args(argv)
    # TensorFlow's start-up messages (oneDNN, CPU features) would be the only output; the writer
    # only assigns values, so oneDNN's kernels never run (the files are the same byte for byte).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    folder = write_tiny_gpt2_mirror(args.dir, args.sizes, args.config)
    print(
        f"{folder}: {', '.join(args.sizes or TINY_GPT2_SHAPES)}"
        + (f"; config {args.config}" if args.config else "")
    )
    return 0


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format, *args):  # keep test output clean
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        owner = self.server.owner
        rel = self.path.split("?", 1)[0].lstrip("/")
        range_header = self.headers.get("Range")
        file = (owner.root / rel).resolve()
        if rel in owner.missing or owner.root not in file.parents or not file.is_file():
            owner._record(rel, range_header, 404)
            self.send_error(404)
            return
        size = file.stat().st_size
        start, end, status = self._range(range_header, size)
        owner._record(rel, range_header, status)
        if status == 416:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        if owner.content_md5:  # of the bytes in this response (RFC 1864), before any fault
            self.send_header("Content-MD5", _md5_b64(file, start, end))
        self.end_headers()
        if body:
            self._send_body(file, rel, start, end, size)

    def _range(self, range_header: str | None, size: int) -> tuple[int, int, int]:
        """``(start, end, status)`` of the answer: 200 for the whole file, 206 for a range, 416."""
        if not range_header or self.server.owner.ignore_range or not range_header.startswith("bytes="):
            return 0, size, 200
        first, _, last = range_header[6:].partition("-")
        start, end, status = 0, size, 200
        if first.isdigit():
            start, end, status = int(first), min(int(last) + 1 if last.isdigit() else size, size), 206
        return (start, end, status) if start < size else (start, end, 416)

    def _send_body(self, file: Path, rel: str, start: int, end: int, size: int) -> None:
        """Send bytes ``start..end`` of ``file``, with the faults set for ``rel``."""
        owner = self.server.owner
        limit = owner.cut_after.get(rel)
        flip = size // 2 if rel in owner.corrupt else -1
        sent, pos = 0, start
        with open(file, "rb") as f:
            f.seek(start)
            while pos < end:
                chunk = bytearray(f.read(min(1 << 16, end - pos)))
                if pos <= flip < pos + len(chunk):
                    chunk[flip - pos] ^= 0xFF
                if limit is not None and sent + len(chunk) > limit:
                    chunk = chunk[: limit - sent]
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    return
                sent += len(chunk)
                pos += len(chunk)
                if limit is not None and sent >= limit:
                    self.close_connection = True  # drop the rest: the client sees a short body
                    return


def _md5_b64(file: Path, start: int, end: int) -> str:
    """The base64 MD5 of bytes ``start..end`` of ``file`` (a ``Content-MD5`` header)."""
    md5 = hashlib.md5()
    with open(file, "rb") as f:
        f.seek(start)
        remaining = end - start
        while remaining:
            chunk = f.read(min(1 << 20, remaining))
            md5.update(chunk)
            remaining -= len(chunk)
    return base64.b64encode(md5.digest()).decode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FileServer


class FileServer:
    """Serve ``root`` at ``http://127.0.0.1:<port>/`` from a background thread.

    Faults (attributes, changeable while running; paths relative to ``root``):
    ``cut_after={path: n}`` sends at most ``n`` body bytes per response then
    closes the connection; ``missing={path}`` answers 404; ``corrupt={path}``
    flips the middle byte of the file; ``ignore_range`` answers ranges with the
    whole file; ``content_md5`` adds the ``Content-MD5`` header (of the true
    bytes). ``requests`` logs ``(path, Range header, status)`` of every request.

    >>> with FileServer(folder) as server:
    ...     download_file(server.url("a.bin"), "a.bin")
    """

    def __init__(
        self,
        root,
        *,
        content_md5: bool = False,
        cut_after: dict[str, int] | None = None,
        missing=(),
        corrupt=(),
        ignore_range: bool = False,
    ):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"FileServer root {self.root} is not a folder")
        self.content_md5 = content_md5
        self.cut_after = dict(cut_after or {})
        self.missing = set(missing)
        self.corrupt = set(corrupt)
        self.ignore_range = ignore_range
        self.requests: list[tuple[str, str | None, int]] = []
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    def _record(self, path, range_header, status) -> None:
        with self._lock:
            self.requests.append((path, range_header, status))

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (kept after ``stop()``, to test unreachable servers)."""
        if self._port is None:
            raise RuntimeError(
                "the FileServer was never started: use it as a context manager or call start()"
            )
        return f"http://127.0.0.1:{self._port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def start(self) -> FileServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="FileServer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
            self._httpd = self._thread = None

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    raise SystemExit(main())
