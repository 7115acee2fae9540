"""Which results depend on the number of CPU threads? Measured, on this machine.

Each computation runs in a fresh process per thread count (1, 2, ... up to
the cores here), twice with the same count, and every result is compared bit
for bit: with the first run of 1 thread (does the thread count matter?) and
with the repeat at the same count (is it deterministic at all?).

Computations, on the book's setup (The Verdict, ``GPT_CONFIG_124M`` with a
256-token context, seed 123), or a tiny model with ``--smoke``:

- ``initial_losses``: the untrained model's train/val loss (section 5.1);
- ``train_steps``: the losses of the first training steps and a digest of
  the weights after them (section 5.2);
- ``greedy``: 20 greedy tokens from the trained-for-a-few-steps model;
- ``sampled``: 20 tokens drawn with temperature 1.4 and top-k 25 (seed 123).

    python bench/thread_determinism.py              # the book's model (~5 min on 2 cores)
    python bench/thread_determinism.py --smoke      # a tiny model, seconds

Writes a CSV (``--out``) with one row per computation and thread count and
prints a summary naming the machine (``gptlab.device.describe_machine``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VERDICT = REPO.parent / "shared" / "data" / "the-verdict.txt"
# The model: the book's GPT_CONFIG_124M (256-token context), or a tiny one with --smoke.
TINY_OVERRIDES = {"context_length": 64, "emb_dim": 64, "n_heads": 4, "n_layers": 2}


def compute(threads: int, smoke: bool) -> dict:
    """Run every computation with ``threads`` torch threads; return ``name -> fingerprint``."""
    import torch

    from gptlab.data import create_book_loaders, read_text
    from gptlab.device import describe_machine
    from gptlab.generation import generate
    from gptlab.losses import calc_loss_batch, calc_loss_loader
    from gptlab.model import GPT_CONFIG_124M, GPTModel
    from gptlab.tokenizer import get_tokenizer, text_to_token_ids

    torch.set_num_threads(threads)
    cfg = {**GPT_CONFIG_124M, **TINY_OVERRIDES} if smoke else GPT_CONFIG_124M
    text = read_text(VERDICT)
    if smoke:
        text = text[:6000]
    length = cfg["context_length"]
    train_loader, val_loader = create_book_loaders(text, 0.9, 2, length, length, seed=123)
    torch.manual_seed(123)
    model = GPTModel(cfg)
    out = {}
    torch.manual_seed(123)
    with torch.no_grad():
        model.eval()
        out["initial_losses"] = [calc_loss_loader(train_loader, model, "cpu", 2 if smoke else None)]
        out["initial_losses"].append(calc_loss_loader(val_loader, model, "cpu", 2 if smoke else None))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
    losses = []
    for i, (x, y) in enumerate(train_loader):
        if i == 3:
            break
        optimizer.zero_grad()
        loss = calc_loss_batch(x, y, model, "cpu")
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    h = hashlib.sha256()
    for t in model.state_dict().values():
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy())
    out["train_steps"] = [losses, h.hexdigest()[:16]]
    model.eval()
    idx = text_to_token_ids("Every effort moves you", get_tokenizer())
    out["greedy"] = generate(model, idx, 20, length, temperature=0.0)[0].tolist()
    torch.manual_seed(123)
    out["sampled"] = generate(model, idx, 20, length, temperature=1.4, top_k=25)[0].tolist()
    out["_machine"] = describe_machine("cpu")
    return out


def run_child(threads: int, smoke: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", str(threads)] + (["--smoke"] if smoke else [])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise SystemExit(f"thread count {threads} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny model on part of the text")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "thread_determinism.csv")
    parser.add_argument("--max-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(compute(args.child, args.smoke)))
        return 0

    import pandas as pd

    counts = sorted({1, 2, args.max_threads} & set(range(1, args.max_threads + 1)))
    runs = {n: [run_child(n, args.smoke), run_child(n, args.smoke)] for n in counts}
    machine = runs[1][0].pop("_machine")
    for first, second in runs.values():
        first.pop("_machine", None), second.pop("_machine", None)
    reference = runs[1][0]
    rows = [
        {
            "computation": name,
            "threads": n,
            "repeat_identical": first[name] == second[name],
            "identical_to_1_thread": first[name] == reference[name],
            "value": json.dumps(first[name])[:120],
        }
        for n, (first, second) in runs.items()
        for name in reference
    ]
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    args.out.with_suffix(".machine.json").write_text(json.dumps(machine, indent=2) + "\n")
    print(
        f"machine: {machine['cpu']} ({machine['torch_cpu_capability']}, {machine['cpu_count']} cores), "
        f"torch {machine['torch']}; model: {'tiny' if args.smoke else 'the book 124M shape'}"
    )
    print(table.drop(columns="value").to_string(index=False))
    print(f"wrote {args.out}")
    return 0 if table["repeat_identical"].all() else 1


if __name__ == "__main__":
    sys.exit(main())
