"""``gptlab generate``: sample text from a checkpoint or a converted GPT-2, optionally streamed."""

from __future__ import annotations

import codecs
import sys
from pathlib import Path

from .common import (
    SEED_MAX,
    Failure,
    Formatter,
    UsageError,
    add_model_source,
    finite_float,
    int_at_least,
    load,
    note,
    read_text_file,
    resolve_model,
    seed_type,
)

DEFAULT_PROMPT = "Every effort moves you"
ENDOFTEXT = "<|endoftext|>"

EPILOG = f"""\
The model's shape (context length, width, depth) is read from the file: a gptlab
checkpoint records its config, a converted GPT-2 its hparams.json. Decoding uses the
key/value cache. Sample i (counting from 0) draws from its own random stream seeded
with SEED + i, so a sample does not depend on how many are drawn, nor on --stream.
With --temperature 0 decoding is greedy (no randomness). An empty prompt starts from
{ENDOFTEXT}, as GPT-2's unconditional samples do. A converted GPT-2 whose hparams or
data size are not those of OpenAI's release is announced on stderr ("Synthetic weights").

Checked before the model is loaded: --temperature >= 0 and --top-p in (0, 1], both
finite (nan and inf are refused); --top-k >= 1; SEED + NUM_SAMPLES - 1 at most 2**64 - 1
(the seed range of torch.manual_seed); the prompt file readable UTF-8 text.

examples:
  gptlab generate --gpt2 124M --prompt "Every effort moves you" --max-new-tokens 25 \\
      --temperature 1.4 --top-k 25 --seed 123
  gptlab generate --gpt2 1558M --gpt2-dir /data/gpt2 --prompt-file prompt.txt --stream
  gptlab generate --model results/pretrain/checkpoint.pt --temperature 0 --max-new-tokens 50
  gptlab generate --model results/gpt2/355M --num-samples 3 --top-p 0.9 --seed 7
"""


def register(subparsers, parent) -> None:
    p = subparsers.add_parser(
        "generate",
        parents=[parent],
        help="sample text from a model (streamed with --stream)",
        description="Continue a prompt with a gptlab checkpoint or a converted GPT-2.",
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    add_model_source(p)
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument(
        "--prompt", metavar="TEXT", help=f"the text to continue (default: {DEFAULT_PROMPT!r})"
    )
    prompt.add_argument("--prompt-file", metavar="FILE", type=Path, help="read the prompt from FILE (UTF-8)")
    p.add_argument("--max-new-tokens", metavar="N", type=int_at_least(0), default=50, help="tokens to add")
    p.add_argument(
        "--temperature", metavar="T", type=finite_float, default=1.0, help="0 means greedy decoding"
    )
    p.add_argument(
        "--top-k", metavar="K", type=int, default=None, help="sample among the K most likely tokens only"
    )
    p.add_argument(
        "--top-p",
        metavar="P",
        type=finite_float,
        default=None,
        help="nucleus sampling: keep probability mass P",
    )
    p.add_argument(
        "--seed", metavar="S", type=seed_type(), default=123, help="seed of the first sample (0 ... 2**64-1)"
    )
    p.add_argument("--num-samples", metavar="N", type=int_at_least(1), default=1, help="samples to draw")
    p.add_argument("--stop-at-eos", action="store_true", help=f"end a sample at {ENDOFTEXT}")
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--device", metavar="D", default="auto", help="auto, cpu, cuda, cuda:1 or mps")
    p.set_defaults(run=run)


def _check_options(args) -> None:
    if args.temperature < 0:
        raise UsageError(f"--temperature {args.temperature} must be >= 0 (0 means greedy decoding)")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k {args.top_k} must be >= 1 (leave it out to sample from all tokens)")
    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise UsageError(f"--top-p {args.top_p} must be in (0, 1] (leave it out for no nucleus filtering)")
    last = args.seed + args.num_samples - 1  # sample i is seeded with SEED + i
    if last > SEED_MAX:
        raise UsageError(
            f"--seed {args.seed} with --num-samples {args.num_samples} would seed the last sample with "
            f"{last}, beyond 2**64 - 1 = {SEED_MAX} (the largest seed torch takes); use --seed "
            f"{SEED_MAX - args.num_samples + 1} or less"
        )


def _read_prompt(args) -> str:
    if args.prompt_file is None:
        return DEFAULT_PROMPT if args.prompt is None else args.prompt
    return read_text_file(args.prompt_file, "--prompt-file")


SYNTHETIC_NOTICE = "Synthetic weights: these numbers are not the book's."


def _announce_origin(model, label: str) -> None:
    """Say on stderr when a converted GPT-2 is certainly not OpenAI's release (the one its folder names)."""
    from gptlab.experiments.common import GPT2_RELEASE, model_origin

    origin = model_origin(model)
    if origin["source"] == GPT2_RELEASE and origin["matches_openai"] is False:
        note(f"{SYNTHETIC_NOTICE} {label}: {origin['evidence']}.")


def run(args) -> int:
    _check_options(args)
    prompt = _read_prompt(args)
    path, label = resolve_model(args)

    import torch

    from gptlab.generation import generate
    from gptlab.tokenizer import get_tokenizer

    tokenizer = get_tokenizer()
    eot = tokenizer.eot_token
    ids = tokenizer.encode(prompt, allowed_special={ENDOFTEXT}) or [eot]
    model, device = load(path, args.device)
    _announce_origin(model, label)
    context, vocab = model.pos_emb.num_embeddings, model.tok_emb.num_embeddings
    if len(ids) > context:
        raise UsageError(
            f"the prompt is {len(ids)} tokens, longer than the context of {label} ({context} tokens); "
            "shorten it"
        )
    if max(ids) >= vocab:
        raise Failure(
            f"{label} has a vocabulary of {vocab} tokens, but the prompt uses GPT-2 token id {max(ids)}; "
            "this command needs a model trained with the GPT-2 tokenizer (vocab_size 50257)"
        )
    idx = torch.tensor([ids], device=device)
    seeds = [args.seed + i for i in range(args.num_samples)]
    eos_id = eot if args.stop_at_eos else None
    options = dict(temperature=args.temperature, top_k=args.top_k, eos_id=eos_id, top_p=args.top_p)
    out = sys.stdout

    def header(i: int) -> None:
        if args.num_samples > 1:
            out.write(f"--- sample {i + 1}/{args.num_samples} (seed {seeds[i]}) ---\n")

    if args.stream:
        for i, seed in enumerate(seeds):
            header(i)
            out.write(prompt)
            out.flush()
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

            def emit(new_tokens, decoder=decoder) -> None:
                out.write(decoder.decode(tokenizer.decode_single_token_bytes(int(new_tokens[0, 0]))))
                out.flush()

            generate(model, idx, args.max_new_tokens, context, seeds=[seed], on_token=emit, **options)
            out.write(decoder.decode(b"", final=True) + "\n")
            out.flush()
        return 0

    rows = generate(model, idx, args.max_new_tokens, context, seeds=seeds, **options)[:, len(ids) :]
    for i, row in enumerate(rows.tolist()):
        if eos_id is not None and eos_id in row:
            row = row[: row.index(eos_id)]
        header(i)
        out.write(prompt + tokenizer.decode_bytes(row).decode("utf-8", errors="replace") + "\n")
    out.flush()
    return 0
