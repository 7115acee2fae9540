"""``gptlab evaluate``: training and validation loss and perplexity, the book's way (exercise 5.5)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    Failure,
    Formatter,
    UsageError,
    add_model_source,
    finite_float,
    int_at_least,
    load,
    read_text_file,
    resolve_model,
    seed_type,
)

EPILOG = """\
The procedure is gptlab.experiments.losses.evaluate_losses, i.e. the book's: the text is split
by characters (first TRAIN_RATIO for training), cut into windows of CONTEXT_LENGTH
tokens every STRIDE tokens, torch.manual_seed(SEED) is set before building the loaders
and again before evaluating, and every batch of both splits is averaged. The defaults
are the book's (256/256/2/0.9/123); a model with a shorter context than 256 tokens is
evaluated on windows of its full context unless --context-length says otherwise.

Checked before the model is loaded: --train-ratio a finite number strictly between 0
and 1, --seed in 0 ... 2**64 - 1 (what torch.manual_seed takes), --text readable UTF-8
text, and the folder of --csv OUT writable (a file is created there and removed), so a
long evaluation never ends in a file that cannot be written. OUT is replaced atomically
with the permissions of any new file (0644 under umask 022).

examples:
  gptlab evaluate --gpt2 124M --text ../shared/data/the-verdict.txt
  gptlab evaluate --model results/pretrain/checkpoint.pt --text the-verdict.txt --csv losses.csv
  gptlab evaluate --gpt2 1558M --text corpus.txt --context-length 1024 --batch-size 1
"""


def _ratio(text: str) -> float:
    value = finite_float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{value} must be strictly between 0 and 1")
    return value


def register(subparsers, parent) -> None:
    p = subparsers.add_parser(
        "evaluate",
        parents=[parent],
        help="train/val loss and perplexity of a model on a text (exercise 5.5)",
        description="Loss and perplexity of a model on the training and validation split of a text.",
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    add_model_source(p)
    p.add_argument("--text", metavar="FILE", type=Path, required=True, help="UTF-8 text to evaluate on")
    p.add_argument(
        "--context-length",
        metavar="N",
        type=int_at_least(1),
        default=None,
        help="tokens per window (default: 256, or the model's context if shorter)",
    )
    p.add_argument(
        "--stride", metavar="N", type=int_at_least(1), default=None, help="default: the context length"
    )
    p.add_argument("--batch-size", metavar="N", type=int_at_least(1), default=2, help="windows per batch")
    p.add_argument(
        "--train-ratio",
        metavar="R",
        type=_ratio,
        default=0.9,
        help="share of the characters used for training",
    )
    p.add_argument(
        "--seed",
        metavar="S",
        type=seed_type(),
        default=123,
        help="torch.manual_seed before loaders and loss (0 ... 2**64-1)",
    )
    p.add_argument("--csv", metavar="OUT", type=Path, help="also write the table (full precision) as CSV")
    p.add_argument("--device", metavar="D", default="auto", help="auto, cpu, cuda, cuda:1 or mps")
    p.set_defaults(run=run)


def _check_csv(out: Path) -> None:
    """Refuse an --csv path that cannot be written, before the evaluation rather than after it."""
    from gptlab.io import check_writable

    if out.is_dir():
        raise Failure(f"--csv {out} is a folder; name the file to write, e.g. --csv {out / 'losses.csv'}")
    try:
        check_writable(out)
    except PermissionError as err:
        raise Failure(f"{err.strerror or err}; pass --csv a path in a folder you can write to") from None


def run(args) -> int:
    from gptlab.experiments.losses import evaluate_losses, write_losses_csv

    path, label = resolve_model(args)
    if args.csv is not None:
        _check_csv(args.csv)
    text = read_text_file(args.text, "--text")
    model, device = load(path, args.device)
    context = model.pos_emb.num_embeddings
    max_length = args.context_length or min(256, context)
    if max_length > context:
        raise UsageError(
            f"--context-length {max_length} exceeds the context of {label} ({context} tokens); "
            f"use --context-length {context} or less"
        )
    stride = args.stride or max_length
    frame = evaluate_losses(
        {label: model},
        text,
        train_ratio=args.train_ratio,
        max_length=max_length,
        stride=stride,
        batch_size=args.batch_size,
        seed=args.seed,
        device=device,
    )
    print(f"model: {label}")
    print(
        f"text:  {args.text} ({len(text):,} characters); context {max_length}, stride {stride}, "
        f"batch {args.batch_size}, train ratio {args.train_ratio}, seed {args.seed}"
    )
    print(f"{'split':<6} {'loss':>10} {'perplexity':>12} {'batches':>8} {'tokens':>8}")
    for row in frame.itertuples(index=False):
        print(
            f"{row.split:<6} {row.loss:>10.6f} {row.perplexity:>12.4f} {row.n_batches:>8} {row.n_tokens:>8}"
        )
    if args.csv is not None:
        print(f"wrote {write_losses_csv(frame, args.csv)}")
    return 0
