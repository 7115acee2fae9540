"""Pretraining runs as the pipeline uses them: seeded, checkpointed, resumable.

``pretrain`` sets everything up the way chapter 5 does (seed before the
loaders, seed again before the model, AdamW) with the settings of a
:class:`~gptlab.training.config.TrainConfig`, and then drives
``training.train_model``. With a ``work_dir`` it writes an intermediate
checkpoint after every epoch and when interrupted (SIGTERM/SIGINT), and picks
up from the newest one on the next call, so a killed job loses at most the
work since the last step.

``TrainConfig.fast`` trains the same model on the same data in fast mode
(``gptlab.fast``: fused kernels, fused AdamW, bf16 autocast where the
hardware has it, evaluation in inference mode): faster, equal up to
rounding, and resumable bit for bit like the exact mode. The two modes never
share intermediate checkpoints.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import create_book_loaders
from ..fast import fast_training, make_evaluator
from ..io import library_versions, sha256_file
from ..model import GPTModel
from ..tokenizer import get_tokenizer
from .checkpoint import CheckpointError, load_checkpoint, load_into, restore_rng_state, save_checkpoint
from .config import TrainConfig
from .loop import TrainState, stop_on_signals, train_model

# Part of every intermediate checkpoint's key: raise it with any change to gptlab that
# changes training results, so that no run continues from a checkpoint of older code.
RESULTS_VERSION = 1
RESUME_MODES = ("exact", "book")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pretrain(
    text: str,
    *,
    model_config: dict,
    config: TrainConfig | None = None,
    device="cpu",
    work_dir=None,
    resume_from=None,
    resume_mode: str = "exact",
    progress: bool = True,
    **overrides,
):
    """Train the book's GPT on ``text``; return ``(model, optimizer, state, train_config)``.

    ``config`` holds the settings (default: the book's); ``overrides`` are :class:`TrainConfig` fields
    that replace its values (``num_epochs=2``). ``config.num_epochs`` is the total number of epochs the
    run should have completed. ``resume_from`` names a checkpoint to continue from:
    ``resume_mode="exact"`` restores everything (RNG, data order, step counters, history), so the
    result equals an uninterrupted run; ``"book"`` continues as the book's exercise 5.4 does (model
    and optimizer only, loaders re-seeded, counters from zero, ``num_epochs`` more epochs).
    ``work_dir`` holds intermediate checkpoints, one per :func:`settings_key`: one for exactly these
    settings is continued, also towards a larger ``num_epochs``, never one holding more epochs.
    ``train_config`` is the settings as checkpoints record them (:meth:`TrainConfig.record`).
    """
    if resume_mode not in RESUME_MODES:
        raise ValueError(f"resume_mode={resume_mode!r} must be 'exact' or 'book'")
    config = (config or TrainConfig()).replace(**overrides).for_model(model_config)
    run = _set_up(text, model_config, config, torch.device(device))
    train_config = config.record(text)
    key = settings_key(text, model_config, train_config, resume_from, resume_mode, run.device)
    latest = intermediate_checkpoint(work_dir, key)
    state = _continue_intermediate(run, latest, key)
    if state is None and resume_from is not None and resume_mode == "exact":
        state = _resume_exact(run, resume_from, train_config)
    elif state is None and resume_from is not None:
        run.loaders = _resume_book(run, resume_from, text)
    save = functools.partial(_save_intermediate, run, latest, key, train_config)
    state = run.train(state, save, progress)
    return run.model, run.optimizer, state, train_config


@dataclass
class _Run:
    """What ``pretrain`` trains, with what, on what."""

    config: TrainConfig
    device: torch.device
    tokenizer: object
    loaders: tuple
    model: GPTModel
    optimizer: torch.optim.Optimizer
    loop_options: dict  # fast mode's autocast and evaluation for train_model; none for the book's

    def train(self, state: TrainState | None, save, progress: bool) -> TrainState:
        """``train_model`` with ``save`` after each epoch and when stopped by a signal."""
        c = self.config
        with stop_on_signals() as should_stop:
            return train_model(
                self.model,
                *self.loaders,
                self.optimizer,
                self.device,
                c.num_epochs,
                c.eval_freq,
                c.eval_iter,
                c.start_context,
                self.tokenizer,
                state=state,
                on_epoch_end=save,
                should_stop=should_stop,
                on_stop=save,
                progress=progress,
                **self.loop_options,
            )


def _set_up(text: str, model_config: dict, config: TrainConfig, device: torch.device) -> _Run:
    """The tokenizer, the seeded loaders and model, and the optimizer of the config's mode."""
    tokenizer = get_tokenizer()
    loaders, model = book_setup(text, model_config, config, device, tokenizer)
    adamw = dict(lr=config.learning_rate, weight_decay=config.weight_decay)
    if not config.fast:
        optimizer = torch.optim.AdamW(model.parameters(), **adamw)
        return _Run(config, device, tokenizer, loaders, model, optimizer, {})
    model, optimizer, autocast = fast_training(model, adamw, device=device)
    loop_options = dict(autocast=autocast, evaluate=make_evaluator(autocast))
    return _Run(config, device, tokenizer, loaders, model, optimizer, loop_options)


def make_loaders(text: str, config: TrainConfig, tokenizer=None):
    """The chapter's train and validation loaders for ``config`` (``for_model`` applied), seeded."""
    c = config
    return create_book_loaders(
        text, c.train_ratio, c.batch_size, c.max_length, c.stride, seed=c.seed, tokenizer=tokenizer
    )


def book_setup(text: str, model_config: dict, config: TrainConfig, device="cpu", tokenizer=None):
    """The chapter's set-up: ``(train_loader, val_loader), model``, seeded before each as the book does."""
    loaders = make_loaders(text, config, tokenizer)
    torch.manual_seed(config.seed)
    return loaders, GPTModel(model_config).to(device)


def _save_intermediate(run: _Run, latest: Path | None, key: dict, train_config: dict, state) -> None:
    if latest is not None:
        save_checkpoint(latest, run.model, run.optimizer, state.to_dict(), train_config, settings_key=key)


def settings_key(text, model_config, train_config, resume_from, resume_mode, device) -> dict:
    """Everything that determines a run's result, apart from how many epochs it has done.

    Intermediate checkpoints are named by its digest and store it: one is
    continued only when every entry is the same (the text by its SHA-256, the
    checkpoint resumed from by its file's SHA-256).
    """
    return {
        "model": dict(model_config),
        "train": {k: v for k, v in train_config.items() if k != "num_epochs"},
        "resume_from": sha256_file(resume_from) if resume_from is not None else None,
        "resume_mode": resume_mode if resume_from is not None else None,
        "device": torch.device(device).type,
        "versions": {
            "results": RESULTS_VERSION,
            "torch": str(torch.__version__),
            "tiktoken": library_versions()["tiktoken"],
        },
    }


def intermediate_checkpoint(work_dir, key: dict) -> Path | None:
    """Path of the intermediate checkpoint for the settings ``key`` (any ``num_epochs``)."""
    if work_dir is None:
        return None
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(work_dir) / f"latest-{digest}.pt"


def _usable_intermediate(latest: Path | None, key: dict, num_epochs: int, model_config, device):
    """The intermediate checkpoint to continue from, or None to start from the beginning."""
    if latest is None or not latest.exists():
        return None
    try:
        ckpt = load_checkpoint(latest, map_location=device, model_config=model_config)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}\n(it is the intermediate checkpoint of this run)") from exc
    if ckpt.get("settings_key") != key:
        _log(f"{latest} was written for other settings; training from the start")
        return None
    done = ckpt["train_state"]["epoch"]
    if done > num_epochs or (done == num_epochs and ckpt["train_state"]["batch_in_epoch"]):
        _log(f"{latest} holds {done} epochs, more than the {num_epochs} asked for; training from the start")
        return None
    return ckpt


def _continue_intermediate(run: _Run, latest: Path | None, key: dict) -> TrainState | None:
    """Restore the run from its usable intermediate checkpoint; None when there is none."""
    ckpt = _usable_intermediate(latest, key, run.config.num_epochs, run.model.cfg, run.device)
    if ckpt is None:
        return None
    _log(f"continuing from intermediate checkpoint {latest} (epoch {ckpt['train_state']['epoch']})")
    return _restore_exact(ckpt, run.model, run.optimizer)


def _resume_exact(run: _Run, resume_from, train_config: dict) -> TrainState:
    """Restore everything from ``resume_from``, refusing a run that this one would not continue."""
    ckpt = load_checkpoint(resume_from, map_location=run.device, model_config=run.model.cfg)
    if "rng_state" not in ckpt:
        raise CheckpointError(
            f"{resume_from} holds only model and optimizer (the book's format): "
            "use resume_mode='book' to continue from it"
        )
    _check_same_run(resume_from, ckpt.get("train_config", {}), train_config)
    state = _restore_exact(ckpt, run.model, run.optimizer)
    if state.epoch >= run.config.num_epochs:
        raise ValueError(
            f"{resume_from} has already completed {state.epoch} epochs; "
            f"num_epochs={run.config.num_epochs} must be larger to train further"
        )
    return state


def _check_same_run(resume_from, made: dict, train_config: dict) -> None:
    """Refuse to continue exactly a run ``made`` in the other mode, on another text or with other settings."""
    made_fast = bool(made.get("fast", False))
    if made_fast != bool(train_config["fast"]):
        raise CheckpointError(
            f"{resume_from} was trained in {_mode(made_fast)} mode; an exact resume in "
            f"{_mode(train_config['fast'])} mode would not continue that run. Resume with fast={made_fast}, "
            "or use resume_mode='book' to continue from its weights in either mode"
        )
    differ = {
        k: (made[k], v)
        for k, v in train_config.items()
        if k not in ("num_epochs", "fast") and k in made and made[k] != v
    }
    if differ:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differ.items())
        raise CheckpointError(
            f"{resume_from} was trained with other settings ({detail}); an exact resume would not "
            "continue that run. Use the same settings, or resume_mode='book' to continue from its weights"
        )


def _resume_book(run: _Run, resume_from, text: str):
    """The book's continuation: model and optimizer from ``resume_from`` (any format), new loaders.

    The loaders are rebuilt and re-seeded, and counting starts from zero, as in the book's exercise 5.4.
    """
    ckpt = load_checkpoint(resume_from, map_location=run.device, model_config=run.model.cfg)
    load_into_keeping_implementation(ckpt, run.model, run.optimizer)
    return make_loaders(text, run.config, run.tokenizer)


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


def _restore_exact(ckpt: dict, model, optimizer) -> TrainState:
    """Model, optimizer and RNG states from ``ckpt``; the run's position and history."""
    load_into_keeping_implementation(ckpt, model, optimizer)
    restore_rng_state(ckpt["rng_state"])
    return TrainState.from_dict(ckpt["train_state"])
