"""Pretraining runs as the pipeline uses them: seeded, checkpointed, resumable.

``pretrain`` sets everything up the way chapter 5 does (seed before the
loaders, seed again before the model, AdamW) with the settings of a
:class:`~gptlab.training.config.TrainConfig`, and then drives
``training.train_model``. With a ``work_dir`` it writes an intermediate
checkpoint after every epoch and when interrupted (SIGTERM/SIGINT), and picks
up from the newest one on the next call, so a killed job loses at most the
work since the last step.

``pretrain_in_stages`` stops at ``num_epochs`` for the caller to write the
run, then trains ``then_epochs`` more in the same process (same model,
optimizer, RNG and loaders, nothing saved and restored in between): the
uninterrupted reference that an exact resume from the written checkpoint
must equal bit for bit (exercise 5.4's verification).

``TrainConfig.fast`` trains the same model on the same data in fast mode
(``gptlab.fast``: fused kernels, fused AdamW, bf16 autocast where the
hardware has it, evaluation in inference mode): faster, equal up to
rounding, and resumable bit for bit like the exact mode. The two modes never
share intermediate checkpoints.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import random
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import create_book_loaders
from ..fast import calc_loss_batch as fast_loss_batch
from ..fast import fast_training, make_evaluator
from ..io import atomic_open, library_versions, sha256_file
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
    text,
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
    options = dict(
        config=config, device=device, work_dir=work_dir, resume_from=resume_from, progress=progress
    )
    stages = pretrain_in_stages(
        text, model_config=model_config, resume_mode=resume_mode, **options, **overrides
    )
    with contextlib.closing(stages):
        stop = next(stages)
    return stop.model, stop.optimizer, stop.state, stop.train_config


@dataclass
class StopPoint:
    """The run where :func:`pretrain_in_stages` stopped, and since when this process trained it in memory."""

    model: GPTModel
    optimizer: torch.optim.Optimizer
    state: TrainState  # trained further in place by the next stage: write it before asking for that
    train_config: dict
    in_memory_since: dict  # {"epoch", "batch_in_epoch"}: the position restored from a file, or the start
    tokens_before: int = 0  # tokens the run had seen at that position (what this process did not train)


def pretrain_in_stages(
    text,
    *,
    model_config: dict,
    config: TrainConfig | None = None,
    then_epochs: int = 0,
    device="cpu",
    work_dir=None,
    resume_from=None,
    resume_mode: str = "exact",
    progress: bool = True,
    **overrides,
) -> Iterator[StopPoint]:
    """:func:`pretrain`, yielding a :class:`StopPoint` at ``num_epochs`` and, with ``then_epochs``,
    another after that many more epochs trained on in memory: the run that never stopped at
    ``num_epochs``. To keep it so, such a run continues only an intermediate checkpoint from before
    ``num_epochs``, and ``work_dir`` keeps the one of the epoch before, so that a rerun after a kill
    during the continuation retrains that one epoch. SIGTERM/SIGINT stop either stage, also when they
    arrive while the caller writes the first stop.
    """
    if resume_mode not in RESUME_MODES:
        raise ValueError(f"resume_mode={resume_mode!r} must be 'exact' or 'book'")
    if then_epochs < 0:
        raise ValueError(f"then_epochs={then_epochs} must be >= 0")
    config = (config or TrainConfig()).replace(**overrides).for_model(model_config)
    run = _set_up(text, model_config, config, torch.device(device))
    train_config = config.record(text)
    key = settings_key(text, model_config, train_config, resume_from, resume_mode, run.device)
    files = _WorkFiles(intermediate_checkpoint(work_dir, key))
    state = _continue_intermediate(run, files, key, must_pass_in_memory=then_epochs > 0)
    if state is None and resume_from is not None and resume_mode == "exact":
        state = _resume_exact(run, resume_from, train_config)
    elif state is None and resume_from is not None:
        run.loaders = _resume_book(run, resume_from, text)
    since = {"epoch": state.epoch if state else 0, "batch_in_epoch": state.batch_in_epoch if state else 0}
    tokens_before = state.tokens_seen if state else 0
    keep_epoch = config.num_epochs - 1 if then_epochs else None
    stops = [config.num_epochs, config.num_epochs + then_epochs] if then_epochs else [config.num_epochs]
    with stop_on_signals() as should_stop:
        for num_epochs in stops:
            train_config = config.replace(num_epochs=num_epochs).record(text)
            save = functools.partial(_save_intermediate, run, files, key, train_config, None)
            keep = functools.partial(_save_intermediate, run, files, key, train_config, keep_epoch)
            state = run.train(state, num_epochs, keep, save, should_stop, progress)
            yield StopPoint(run.model, run.optimizer, state, train_config, since, tokens_before)


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

    def train(self, state, num_epochs: int, on_epoch_end, on_stop, should_stop, progress) -> TrainState:
        """``train_model`` to ``num_epochs``, calling back after each epoch and when stopped."""
        c = self.config
        return train_model(
            self.model,
            *self.loaders,
            self.optimizer,
            self.device,
            num_epochs,
            c.eval_freq,
            c.eval_iter,
            c.start_context,
            self.tokenizer,
            state=state,
            on_epoch_end=on_epoch_end,
            should_stop=should_stop,
            on_stop=on_stop,
            progress=progress,
            **self.loop_options,
        )


def _set_up(text, model_config: dict, config: TrainConfig, device: torch.device) -> _Run:
    """The tokenizer, the seeded loaders and model, and the optimizer of the config's mode."""
    # Training draws only from torch's generator, which the book seeds; Python's and NumPy's are
    # seeded too, so that checkpoints (which hold every generator's state) depend on settings alone.
    random.seed(config.seed)
    np.random.seed(config.seed)
    tokenizer = get_tokenizer()
    loaders, model = book_setup(text, model_config, config, device, tokenizer)
    adamw = dict(lr=config.learning_rate, weight_decay=config.weight_decay)
    if not config.fast:
        optimizer = torch.optim.AdamW(model.parameters(), **adamw)
        return _Run(config, device, tokenizer, loaders, model, optimizer, {})
    model, optimizer, autocast = fast_training(model, adamw, device=device)
    loop_options = dict(autocast=autocast, loss=fast_loss_batch, evaluate=make_evaluator(autocast))
    return _Run(config, device, tokenizer, loaders, model, optimizer, loop_options)


def make_loaders(text, config: TrainConfig, tokenizer=None):
    """The chapter's train and validation loaders for ``config`` (``for_model`` applied), seeded.

    ``text`` is the corpus as a string (the book's character split and loaders), or a tokenized corpus
    (:class:`gptlab.corpus.TokenCorpus`), whose windows are streamed from its token file.
    """
    c = config
    if not isinstance(text, str):
        return text.loaders(c.train_ratio, c.batch_size, c.max_length, c.stride, seed=c.seed)
    return create_book_loaders(
        text, c.train_ratio, c.batch_size, c.max_length, c.stride, seed=c.seed, tokenizer=tokenizer
    )


def book_setup(text, model_config: dict, config: TrainConfig, device="cpu", tokenizer=None):
    """The chapter's set-up: ``(train_loader, val_loader), model``, seeded before each as the book does."""
    loaders = make_loaders(text, config, tokenizer)
    torch.manual_seed(config.seed)
    return loaders, GPTModel(model_config).to(device)


def _save_intermediate(run: _Run, files, key: dict, train_config: dict, keep_epoch, state) -> None:
    """The latest intermediate checkpoint; also kept under its own name at ``keep_epoch``."""
    if files.latest is None:
        return
    save_checkpoint(files.latest, run.model, run.optimizer, state.to_dict(), train_config, settings_key=key)
    if state.epoch == keep_epoch and state.batch_in_epoch == 0:
        files.keep(state.epoch)


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


@dataclass(frozen=True)
class _WorkFiles:
    """One run's intermediate checkpoints: the latest, and at most one kept at an epoch's end."""

    latest: Path | None

    def kept(self) -> list[Path]:
        """The kept checkpoints, most epochs first (their names say the epoch)."""
        digest = self.latest.name.removeprefix("latest-")
        return sorted(self.latest.parent.glob(f"epoch*-{digest}"), key=_kept_epoch, reverse=True)

    def keep(self, epoch: int) -> None:
        """Keep a copy of the latest checkpoint (at the end of ``epoch``) in place of any older one."""
        kept = self.latest.with_name(f"epoch{epoch}-{self.latest.name.removeprefix('latest-')}")
        with open(self.latest, "rb") as src, atomic_open(kept, "wb") as dst:
            shutil.copyfileobj(src, dst)
        for other in self.kept():
            if other != kept:
                other.unlink(missing_ok=True)

    def candidates(self) -> list[Path]:
        return [p for p in (self.latest, *self.kept()) if p.exists()] if self.latest else []


def _kept_epoch(path: Path) -> int:
    return int(path.name.split("-", 1)[0].removeprefix("epoch"))


def _position(ckpt: dict) -> tuple[int, int]:
    return ckpt["train_state"]["epoch"], ckpt["train_state"]["batch_in_epoch"]


def _usable_intermediate(path: Path, key: dict, num_epochs: int, must_pass: bool, model_config, device):
    """The checkpoint at ``path`` if this run may continue it, else None (saying why).

    It may not hold more than ``num_epochs``; with ``must_pass`` it must hold fewer, so that the
    run trains through epoch ``num_epochs`` in memory.
    """
    try:
        ckpt = load_checkpoint(path, map_location=device, model_config=model_config)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}\n(it is an intermediate checkpoint of this run)") from exc
    if ckpt.get("settings_key") != key:
        _log(f"{path} was written for other settings")
        return None
    done = _position(ckpt)
    if done > (num_epochs, 0):
        _log(f"{path} holds {done[0]} epochs, more than the {num_epochs} asked for")
        return None
    if must_pass and done == (num_epochs, 0):
        _log(f"{path} holds the {num_epochs} epochs asked for; the continuation must train through them")
        return None
    return ckpt


def _best_intermediate(files: _WorkFiles, key: dict, num_epochs: int, must_pass: bool, run: _Run):
    """``(checkpoint, path)`` of the usable intermediate checkpoint with the most training done, or None."""
    best = None
    for path in files.candidates():
        if best and path != files.latest and _kept_epoch(path) <= best[0]["train_state"]["epoch"]:
            continue  # holds no more than the one found
        ckpt = _usable_intermediate(path, key, num_epochs, must_pass, run.model.cfg, run.device)
        if ckpt is not None and (best is None or _position(ckpt) > _position(best[0])):
            best = ckpt, path
    return best


def _continue_intermediate(run: _Run, files: _WorkFiles, key: dict, must_pass_in_memory: bool):
    """Restore the run from its best usable intermediate checkpoint; None when there is none."""
    best = _best_intermediate(files, key, run.config.num_epochs, must_pass_in_memory, run)
    if best is None:
        if files.candidates():
            _log("training from the start")
        return None
    ckpt, path = best
    _log(f"continuing from intermediate checkpoint {path} (epoch {ckpt['train_state']['epoch']})")
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


def _resume_book(run: _Run, resume_from, text):
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
