"""Pretraining runs as the pipeline uses them: seeded, checkpointed, resumable.

``pretrain`` sets everything up the way chapter 5 does (seed before the
loaders, seed again before the model, AdamW) and then drives
``training.train_model``. With a ``work_dir`` it writes an intermediate
checkpoint after every epoch and when interrupted (SIGTERM/SIGINT), and picks
up from the newest one on the next call, so a killed job loses at most the
work since the last step.

``fast=True`` trains the same model on the same data in fast mode
(``gptlab.fast``: fused kernels, fused AdamW, bf16 autocast where the
hardware has it, evaluation in inference mode): faster, equal up to
rounding, and resumable bit for bit like the exact mode. The two modes never
share intermediate checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from .checkpoint import CheckpointError, load_checkpoint, load_into, restore_rng_state, save_checkpoint
from .data import create_book_loaders
from .fast import fast_training, make_evaluator
from .model import GPTModel
from .tokenizer import get_tokenizer
from .training import TrainState, stop_on_signals, train_model


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pretrain(
    text: str,
    *,
    model_config: dict,
    num_epochs: int,
    train_ratio: float = 0.90,
    batch_size: int = 2,
    max_length: int | None = None,
    stride: int | None = None,
    seed: int = 123,
    learning_rate: float = 0.0004,
    weight_decay: float = 0.1,
    eval_freq: int = 5,
    eval_iter: int = 5,
    start_context: str = "Every effort moves you",
    device="cpu",
    work_dir=None,
    resume_from=None,
    resume_mode: str = "exact",
    progress: bool = True,
    fast: bool = False,
):
    """Train the book's GPT on ``text``; return ``(model, optimizer, state, train_config)``.

    ``num_epochs`` is the total number of epochs the run should have completed.
    ``resume_from`` names a checkpoint to continue from:
    ``resume_mode="exact"`` restores everything (RNG, data order, step counters,
    history) so the result equals an uninterrupted run of ``num_epochs``;
    ``resume_mode="book"`` continues as the book's exercise 5.4 solution does:
    model and optimizer only, loaders rebuilt and re-seeded, counters from zero,
    ``num_epochs`` more epochs.
    ``work_dir`` holds intermediate checkpoints, one per set of settings
    (``latest-<digest>.pt``); if one exists for these settings, training
    continues from it (also towards a larger ``num_epochs``).
    ``fast`` selects fast mode (see the module docstring); it is recorded in
    ``train_config`` and an exact resume refuses a checkpoint of the other mode.
    """
    if resume_mode not in ("exact", "book"):
        raise ValueError(f"resume_mode={resume_mode!r} must be 'exact' or 'book'")
    if num_epochs < 1:
        raise ValueError(f"num_epochs={num_epochs} must be >= 1")
    for name, value in (("eval_freq", eval_freq), ("eval_iter", eval_iter), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name}={value} must be >= 1")
    max_length = max_length or model_config["context_length"]
    stride = stride or max_length
    if max_length > model_config["context_length"]:
        raise ValueError(
            f"max_length={max_length} exceeds the model's context_length={model_config['context_length']}"
        )
    device = torch.device(device)
    tokenizer = get_tokenizer()
    train_config = dict(
        num_epochs=num_epochs,
        train_ratio=train_ratio,
        batch_size=batch_size,
        max_length=max_length,
        stride=stride,
        seed=seed,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        eval_freq=eval_freq,
        eval_iter=eval_iter,
        start_context=start_context,
        fast=bool(fast),
    )

    train_loader, val_loader = create_book_loaders(
        text, train_ratio, batch_size, max_length, stride, seed=seed, tokenizer=tokenizer
    )
    torch.manual_seed(seed)
    model = GPTModel(model_config).to(device)
    loop_options = {}
    if fast:
        adamw = dict(lr=learning_rate, weight_decay=weight_decay)
        model, optimizer, autocast = fast_training(model, adamw, device=device)
        loop_options = dict(autocast=autocast, evaluate=make_evaluator(autocast))
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    state = TrainState()

    latest = intermediate_checkpoint(work_dir, model_config, train_config, resume_from, resume_mode)
    if latest is not None and latest.exists():
        try:
            ckpt = load_checkpoint(latest, map_location=device, model_config=model_config)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}\n(intermediate checkpoint; delete {latest} to start over)") from exc
        _log(f"continuing from intermediate checkpoint {latest} (epoch {ckpt['train_state']['epoch']})")
        _restore_exact(ckpt, model, optimizer)
        state = TrainState.from_dict(ckpt["train_state"])
    elif resume_from is not None:
        ckpt = load_checkpoint(resume_from, map_location=device, model_config=model_config)
        if resume_mode == "exact":
            if "rng_state" not in ckpt:
                raise CheckpointError(
                    f"{resume_from} holds only model and optimizer (the book's format): "
                    "use resume_mode='book' to continue from it"
                )
            made_fast = bool(ckpt.get("train_config", {}).get("fast", False))
            if made_fast != bool(fast):
                raise CheckpointError(
                    f"{resume_from} was trained in {_mode(made_fast)} mode; an exact resume in "
                    f"{_mode(fast)} mode would not continue that run. Resume with fast={made_fast}, "
                    "or use resume_mode='book' to continue from its weights in either mode"
                )
            _restore_exact(ckpt, model, optimizer)
            state = TrainState.from_dict(ckpt["train_state"])
            if state.epoch >= num_epochs:
                raise ValueError(
                    f"{resume_from} has already completed {state.epoch} epochs; "
                    f"num_epochs={num_epochs} must be larger to train further"
                )
        else:  # the book's way: re-seed and rebuild the loaders, count from zero
            load_into_keeping_implementation(ckpt, model, optimizer)
            train_loader, val_loader = create_book_loaders(
                text, train_ratio, batch_size, max_length, stride, seed=seed, tokenizer=tokenizer
            )

    def save(st: TrainState) -> None:
        if latest is not None:
            save_checkpoint(latest, model, optimizer, st.to_dict(), train_config)

    with stop_on_signals() as should_stop:
        state = train_model(
            model,
            train_loader,
            val_loader,
            optimizer,
            device,
            num_epochs,
            eval_freq,
            eval_iter,
            start_context,
            tokenizer,
            state=state,
            on_epoch_end=save,
            should_stop=should_stop,
            on_stop=save,
            progress=progress,
            **loop_options,
        )
    return model, optimizer, state, train_config


def intermediate_checkpoint(work_dir, model_config, train_config, resume_from, resume_mode) -> Path | None:
    """Path of the intermediate checkpoint for these settings (any ``num_epochs``)."""
    if work_dir is None:
        return None
    train = {k: v for k, v in train_config.items() if k != "num_epochs"}
    if not train.get("fast"):  # exact mode keeps the digests it had before fast mode existed
        train.pop("fast", None)
    key = {
        "model": model_config,
        "train": train,
        "resume_from": str(resume_from) if resume_from else None,
        "resume_mode": resume_mode,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return Path(work_dir) / f"latest-{digest}.pt"


def _mode(fast) -> str:
    return "fast" if fast else "exact"


def load_into_keeping_implementation(ckpt: dict, model, optimizer) -> None:
    """``load_into``, keeping the optimizer's kernel choice (fused/foreach/loop).

    ``Optimizer.load_state_dict`` copies every hyperparameter of the saved
    groups, the implementation flags included, so a book-style continuation
    of a fast run would otherwise train with the fused kernel in exact mode
    (and vice versa). The flags change how, never what, AdamW computes.
    """
    flags = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    load_into(ckpt, model, optimizer)
    for group, kept in zip(optimizer.param_groups, flags, strict=True):
        group.update(kept)


def _restore_exact(ckpt: dict, model, optimizer) -> None:
    load_into_keeping_implementation(ckpt, model, optimizer)
    restore_rng_state(ckpt["rng_state"])
