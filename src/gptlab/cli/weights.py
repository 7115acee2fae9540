"""``gptlab download`` and ``gptlab convert``: OpenAI's GPT-2 releases, as the pipeline fetches them."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from .common import DEFAULT_GPT2_DIR, SAFETENSORS, SIZES, Failure, Formatter, int_at_least, note

DOWNLOAD_EPILOG = f"""\
The seven files of the release (checkpoint, encoder.json, hparams.json, model.ckpt.*,
vocab.bpe) go to DIR, default {DEFAULT_GPT2_DIR}/SIZE/tf, resumed where an interrupted
run stopped. Each is checked in transit (OpenAI's known sizes, the server's Content-MD5)
and by its content before its sha256 is pinned in DIR/manifest.json: the vocabulary
files against their known hashes, hparams.json parsed, the checkpoint index's block
checksums and shapes, every tensor's CRC-32C in the data file. A file that fails is
moved aside as FILE.bad and fetched from the next mirror, or anew by the next run.
Files already pinned are only re-hashed. This is gptlab.gpt2.download_gpt2, which the
pipeline runs too.

Without --mirror, OpenAI's storage is tried first, then the book's backup mirror.
Each --mirror URL replaces them (in the order given, file by file): a base holding
SIZE/FILE, over https://, http:// or file://.

examples:
  gptlab download --size 124M
  gptlab download --size 1558M --dir /data/gpt2/1558M/tf
  gptlab download --size 355M --mirror file:///data/gpt2-mirror --mirror https://mirror.example.org/gpt2
  gptlab download --size 124M --mirror http://127.0.0.1:8000 --no-check-known-sizes
then: gptlab convert {DEFAULT_GPT2_DIR}/124M/tf
"""

CONVERT_EPILOG = f"""\
Converts OpenAI's TensorFlow checkpoint in DIR (needs tensorflow-cpu, the 'convert'
extra) into one {SAFETENSORS} in GPTModel's layout, one variable at a time; this is
gptlab.convert.convert_tf_checkpoint, which the pipeline runs too. The file appears
under its name only when complete.

Where it goes, unless --out says otherwise: when DIR is a folder named 'tf' (the
layout of 'gptlab download' and of the pipeline), into its parent, so that
{DEFAULT_GPT2_DIR}/124M/tf becomes {DEFAULT_GPT2_DIR}/124M/{SAFETENSORS}, which
'--gpt2 124M' reads; otherwise beside the checkpoint, DIR/{SAFETENSORS}.

examples:
  gptlab convert {DEFAULT_GPT2_DIR}/124M/tf
  gptlab convert /data/gpt2/1558M --out /scratch/gpt2-1558M.safetensors
"""


def register(subparsers, parent) -> None:
    p = subparsers.add_parser(
        "download",
        parents=[parent],
        help="fetch an OpenAI GPT-2 release (verified, resumable)",
        description="Download the TensorFlow checkpoint of an OpenAI GPT-2 release.",
        epilog=DOWNLOAD_EPILOG,
        formatter_class=Formatter,
    )
    p.add_argument(
        "--size", metavar="SIZE", required=True, choices=SIZES, help=f"the release: {', '.join(SIZES)}"
    )
    p.add_argument(
        "--dir", type=Path, default=None, help=f"target folder (default: {DEFAULT_GPT2_DIR}/SIZE/tf)"
    )
    p.add_argument(
        "--mirror",
        metavar="URL",
        action="append",
        default=None,
        help="a base URL holding SIZE/FILE; repeat for fallbacks, tried in order",
    )
    p.add_argument(
        "--check-known-sizes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="check files and hparams.json against OpenAI's releases of SIZE (off for mirrors of other "
        "files, e.g. synthetic ones); the content checks run either way",
    )
    p.add_argument("--retries", metavar="N", type=int_at_least(0), default=4, help="retries per URL and file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run_download)

    c = subparsers.add_parser(
        "convert",
        parents=[parent],
        help="turn a downloaded release into model.safetensors",
        description=f"Convert a downloaded GPT-2 TensorFlow checkpoint into {SAFETENSORS}.",
        epilog=CONVERT_EPILOG,
        formatter_class=Formatter,
    )
    c.add_argument("dir", metavar="DIR", type=Path, help="folder of the release (or its model.ckpt prefix)")
    c.add_argument(
        "--out", type=Path, default=None, help="the safetensors file to write (default: see below)"
    )
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(run=run_convert)


def run_download(args) -> int:
    from gptlab.download import DownloadError
    from gptlab.gpt2 import BACKUP_BASE_URL, BASE_URL, download_gpt2

    target = args.dir or DEFAULT_GPT2_DIR / args.size / "tf"
    # --quiet also silences the per-attempt retry notes; the final error still says everything.
    with open(os.devnull, "w") if args.quiet else contextlib.nullcontext(sys.stderr) as log:
        try:
            with contextlib.redirect_stderr(log):
                download_gpt2(
                    args.size,
                    target,
                    args.mirror or [BASE_URL, BACKUP_BASE_URL],
                    check_known_sizes=args.check_known_sizes,
                    retries=args.retries,
                    progress=not args.quiet,
                )
        except DownloadError as err:
            err.advise("set --mirror to a reachable mirror")
            raise
    note(f"GPT-2 {args.size} is in {target} (all files verified)")
    print(target)
    note(f"next: gptlab convert {target}")
    return 0


def default_destination(src: Path) -> Path | None:
    """Where ``gptlab convert SRC`` writes when no --out is given (``None``: beside the checkpoint)."""
    is_prefix = src.is_file() or Path(str(src) + ".index").is_file()  # .../model.ckpt
    folder = src.parent if is_prefix else src
    if folder.name == "tf":
        return folder.parent / SAFETENSORS
    return None


def run_convert(args) -> int:
    src: Path = args.dir
    if not src.exists() and not Path(str(src) + ".index").is_file():
        raise Failure(f"{src} does not exist; download the release first ('gptlab download --size SIZE')")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    from gptlab.gpt2 import convert_tf_checkpoint, read_gpt2_hparams

    dest = args.out or default_destination(src)
    written = convert_tf_checkpoint(src, dest, progress=not args.quiet)
    hparams = read_gpt2_hparams(written)
    note("converted: " + " ".join(f"{k}={v}" for k, v in hparams.items()))
    print(written)
    return 0
