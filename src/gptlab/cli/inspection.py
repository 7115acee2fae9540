"""``gptlab inspect``: what a checkpoint or a converted GPT-2 holds, after checking it is intact."""

from __future__ import annotations

import json
from pathlib import Path

from .common import SAFETENSORS, Failure, Formatter, count_parameters, human_bytes, human_count

EPILOG = """\
A gptlab checkpoint (.pt/.pth) is read with torch.load(weights_only=True) and its whole
content checked against the sha256 digest stored inside the file when it was written
(format version 2; a version-1 file is checked against its CHECKPOINT.sha256 sidecar).
A damaged or truncated file is refused (exit code 1); the 'integrity' line says how the
file was verified. Shown: model config, parameter count, training position (epoch, step,
tokens seen), the last evaluations of the loss history, the optimizer state and the
training config. The book's model_and_optimizer.pth format loads too.

A converted GPT-2 (model.safetensors, or the folder holding it) shows its hparams, the
GPTModel config they imply, the parameter count (out_head is tied to tok_emb) and which
OpenAI release has that shape. Only the file's header is read, which is instant; with
--verify every weight is read and checked against the sha256 stored in the file's
metadata (seconds for 124M, longer for 1558M), and damaged data is refused (exit code 1).

examples:
  gptlab inspect results/pretrain/checkpoint.pt
  gptlab inspect results/gpt2/124M
  gptlab inspect results/gpt2/1558M/model.safetensors --verify
"""

LAST_EVALUATIONS = 3


def register(subparsers, parent) -> None:
    p = subparsers.add_parser(
        "inspect",
        parents=[parent],
        help="show what a checkpoint or converted GPT-2 holds, and check its integrity",
        description="Describe a gptlab checkpoint (.pt) or a converted GPT-2 (model.safetensors).",
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    p.add_argument(
        "checkpoint", metavar="CHECKPOINT", type=Path, help="a .pt file, model.safetensors or its folder"
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="for a converted GPT-2, read every weight and check the sha256 stored in the file "
        "(a gptlab checkpoint is always checked in full)",
    )
    p.set_defaults(run=run)


def _line(key: str, value) -> None:
    print(f"{key:<12}{value}")


def _config(cfg: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in cfg.items())


def run(args) -> int:
    path: Path = args.checkpoint
    if not path.exists():
        raise Failure(
            f"{path} does not exist; pass a gptlab checkpoint (.pt) or a converted GPT-2 ({SAFETENSORS})"
        )
    if path.suffix in (".pt", ".pth"):
        return _inspect_checkpoint(path)
    if path.is_dir() or path.suffix == ".safetensors":
        return _inspect_gpt2(path, verify=args.verify)
    raise Failure(
        f"{path} is neither a gptlab checkpoint (.pt/.pth) nor a converted GPT-2 ({SAFETENSORS} or its "
        "folder); rename it or pass another file"
    )


def _inspect_checkpoint(path: Path) -> int:
    from gptlab.training.checkpoint import integrity, load_checkpoint

    if path.is_dir():
        raise Failure(f"{path} is a folder; pass the checkpoint file itself (e.g. {path / 'checkpoint.pt'})")
    ckpt = load_checkpoint(path)  # checks the digest stored in the file; CheckpointError if damaged
    _line("file", f"{path} ({human_bytes(path.stat().st_size)})")
    _line("integrity", integrity(ckpt, path))
    fmt = ckpt.get("format")
    _line(
        "format", f"{fmt} v{ckpt.get('version')}" if fmt else "the book's model_and_optimizer.pth (no config)"
    )
    if ckpt.get("model_config"):
        _line("model", _config(ckpt["model_config"]))
    state_dict = ckpt["model_state_dict"]
    shapes = [t.shape for k, t in state_dict.items() if not k.endswith(".att.mask")]
    _line("parameters", human_count(count_parameters(shapes)))

    state = ckpt.get("train_state") or {}
    if state:
        _line(
            "progress",
            f"epoch {state.get('epoch')} completed, global step {state.get('global_step')}, "
            f"{state.get('batch_in_epoch', 0)} batches into the next epoch, "
            f"{state.get('tokens_seen', 0):,} tokens seen",
        )
        _print_history(state)
    optimizer = ckpt.get("optimizer_state_dict")
    if optimizer:
        groups = optimizer.get("param_groups") or [{}]
        hyper = {k: groups[0][k] for k in ("lr", "weight_decay", "betas") if k in groups[0]}
        _line("optimizer", f"state present ({_config(hyper)}); the run can be resumed")
    else:
        _line("optimizer", "none (weights only; training cannot resume from this file)")
    if ckpt.get("train_config"):
        _line("training", _config(ckpt["train_config"]))
    samples = state.get("samples") or []
    if samples:
        _line("last sample", json.dumps(samples[-1], ensure_ascii=False))
    return 0


def _print_history(state: dict) -> None:
    train, val = state.get("train_losses") or [], state.get("val_losses") or []
    steps, tokens = state.get("eval_steps") or [], state.get("track_tokens_seen") or []
    if not train:
        _line("losses", "no evaluation recorded yet")
        return
    n = len(train)
    _line("losses", f"{n} evaluations; the last {min(n, LAST_EVALUATIONS)}:")
    print(f"{'':<12}{'step':>8} {'tokens':>12} {'train':>8} {'val':>8}")
    for i in range(max(0, n - LAST_EVALUATIONS), n):
        step = steps[i] if i < len(steps) else "?"
        seen = f"{tokens[i]:,}" if i < len(tokens) else "?"
        v = f"{val[i]:.4f}" if i < len(val) else "?"
        print(f"{'':<12}{step:>8} {seen:>12} {train[i]:>8.4f} {v:>8}")


def _inspect_gpt2(path: Path, verify: bool) -> int:
    from safetensors import safe_open

    from gptlab.gpt2 import GPT2_HPARAMS, gpt2_file, gpt2_model_config, read_gpt2_hparams

    file = gpt2_file(path)
    set_aside = f"move it aside (e.g. mv {file} {file}.damaged) and run 'gptlab convert' on the release again"
    try:
        hparams = read_gpt2_hparams(file)
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            shapes = [f.get_slice(k).get_shape() for k in f.keys()]
    except ValueError:
        raise
    except Exception as err:  # safetensors reports a damaged header with its own exception type
        raise Failure(
            f"{file} cannot be read ({type(err).__name__}: {err}); it is truncated or damaged: {set_aside}"
        ) from err
    if verify:
        checked = _verify_gpt2(file, set_aside)
    else:
        checked = "header only (the weights were not read); --verify reads them and checks their sha256"
    _line("file", f"{file} ({human_bytes(file.stat().st_size)})")
    _line("integrity", checked)
    _line("format", f"{meta.get('format')} v{meta.get('format_version')} (converted OpenAI GPT-2)")
    _line("hparams", _config(hparams))
    _line("model", _config(gpt2_model_config(hparams)))
    _line("parameters", f"{human_count(count_parameters(shapes))}; out_head shares tok_emb's weights")
    release = [size for size, hp in GPT2_HPARAMS.items() if hp == hparams]
    _line("release", f"the shape of GPT-2 {release[0]}" if release else "no OpenAI release has this shape")
    return 0


def _verify_gpt2(file: Path, set_aside: str) -> str:
    """Read every weight of ``file`` and check the digest in its metadata; a Failure if they differ."""
    from gptlab.gpt2 import verify_gpt2_file

    try:
        return verify_gpt2_file(file)
    except ValueError as err:  # the data does not match the digest written with it
        message = str(err)
        raise Failure(message if "gptlab convert" in message else f"{message}; {set_aside}") from err
