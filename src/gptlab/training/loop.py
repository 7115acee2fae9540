"""The book's training loop (section 5.2), made interruptible and resumable.

``train_model_simple`` is the book's function: same arguments, same
``eval_freq``/``eval_iter``/``global_step`` semantics, same printed lines and
return value. ``train_model`` is the same loop driven by a ``TrainState``: it
can start from a checkpointed state (mid-epoch included), call back at the end
of each epoch, and stop cleanly at the next step when asked (SIGTERM on a
cluster), so an interrupted run continues bit-identically.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import sys
from dataclasses import asdict, dataclass, field

import torch
from torch.utils.data import SequentialSampler
from tqdm import tqdm  # plain bars on stderr, also when imported in a notebook kernel

from ..data import ResumableRandomSampler
from ..generation import generate_text_simple
from ..losses import calc_loss_batch, evaluate_model
from ..tokenizer import text_to_token_ids, token_ids_to_text


@dataclass
class TrainState:
    """Where a training run stands; everything needed to continue it."""

    epoch: int = 0  # completed epochs
    batch_in_epoch: int = 0  # batches done in the current epoch
    epoch_seed: int | None = None  # shuffle seed of the current epoch
    global_step: int = -1
    tokens_seen: int = 0
    train_losses: list = field(default_factory=list)
    val_losses: list = field(default_factory=list)
    track_tokens_seen: list = field(default_factory=list)
    eval_steps: list = field(default_factory=list)
    eval_epochs: list = field(default_factory=list)
    samples: list = field(default_factory=list)  # one generated text per epoch

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class TrainingInterrupted(RuntimeError):
    """Training stopped on request after saving its state."""


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite: the run diverged and stops before the update."""


def generate_and_print_sample(model, tokenizer, device, start_context, max_new_tokens=50):
    model.eval()
    context_size = model.pos_emb.weight.shape[0]
    encoded = text_to_token_ids(start_context, tokenizer).to(device)
    with torch.no_grad():
        token_ids = generate_text_simple(
            model=model, idx=encoded, max_new_tokens=max_new_tokens, context_size=context_size
        )
    decoded_text = token_ids_to_text(token_ids, tokenizer).replace("\n", " ")
    print(decoded_text)
    model.train()
    return decoded_text


def _epoch_iterator(train_loader, state: TrainState):
    """Iterate the loader from ``state``'s position, consuming RNG as an uninterrupted run."""
    sampler = train_loader.sampler
    if state.batch_in_epoch == 0:
        return iter(train_loader)
    if isinstance(sampler, ResumableRandomSampler):
        sampler.resume_from(state.epoch_seed, state.batch_in_epoch * train_loader.batch_size)
        rng = torch.get_rng_state()
        it = iter(train_loader)  # creating an iterator draws a base seed: undo it
        torch.set_rng_state(rng)
        return it
    if isinstance(sampler, SequentialSampler):
        rng = torch.get_rng_state()
        it = iter(train_loader)
        torch.set_rng_state(rng)
        return itertools.islice(it, state.batch_in_epoch, None)
    raise ValueError(
        "cannot resume mid-epoch with this loader's sampler "
        f"({type(sampler).__name__}); build loaders with create_dataloader_v1"
    )


def train_model(
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
    *,
    state: TrainState | None = None,
    on_epoch_end=None,
    should_stop=None,
    on_stop=None,
    progress: bool = True,
    autocast=contextlib.nullcontext,
    loss=calc_loss_batch,
    evaluate=evaluate_model,
) -> TrainState:
    """Train until ``num_epochs`` epochs are complete, starting from ``state``.

    ``on_epoch_end(state)`` runs after each epoch (save a checkpoint there).
    ``should_stop()`` is polled after every optimizer step; when it returns
    true, ``on_stop(state)`` runs and ``TrainingInterrupted`` is raised.
    ``autocast`` (a context-manager factory) wraps each training forward pass,
    ``loss`` and ``evaluate`` replace the book's ``calc_loss_batch`` and
    ``evaluate_model`` (same signatures); fast mode passes its own
    (``gptlab.fast``), the defaults are the book's.
    """
    state = state or TrainState()
    bar = _progress_bar(num_epochs, len(train_loader), state, progress)
    loop = _Loop(
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
        bar=bar,
        on_epoch_end=on_epoch_end,
        should_stop=should_stop,
        on_stop=on_stop,
        autocast=autocast,
        loss=loss,
        evaluate=evaluate,
    )
    try:
        while state.epoch < num_epochs:
            loop.train_epoch()
            loop.end_epoch()
    finally:
        bar.close()
    return state


def _progress_bar(num_epochs: int, steps_per_epoch: int, state: TrainState, progress: bool):
    return tqdm(
        total=num_epochs * steps_per_epoch,
        initial=state.epoch * steps_per_epoch + state.batch_in_epoch,
        desc="training",
        unit="step",
        file=sys.stderr,
        disable=not progress,
        mininterval=2.0,
    )


@dataclass
class _Loop:
    """One call of ``train_model``: the book's loop, one named step at a time."""

    model: object
    train_loader: object
    val_loader: object
    optimizer: object
    device: object
    num_epochs: int
    eval_freq: int
    eval_iter: int
    start_context: str
    tokenizer: object
    state: TrainState
    bar: object
    on_epoch_end: object = None
    should_stop: object = None
    on_stop: object = None
    autocast: object = contextlib.nullcontext
    loss: object = calc_loss_batch
    evaluate: object = evaluate_model

    def train_epoch(self) -> None:
        """The rest of the current epoch: a step per batch, an evaluation every ``eval_freq`` steps."""
        state, steps_per_epoch = self.state, len(self.train_loader)
        self.model.train()
        for input_batch, target_batch in _epoch_iterator(self.train_loader, state):
            if state.batch_in_epoch == 0:
                state.epoch_seed = getattr(self.train_loader.sampler, "last_seed", None)
            self.train_step(input_batch, target_batch)
            if state.global_step % self.eval_freq == 0:
                self.evaluate_and_print()
            self.stop_if_asked(
                state.batch_in_epoch < steps_per_epoch,
                f"stopped at epoch {state.epoch + 1}, step {state.global_step}",
            )

    def train_step(self, input_batch, target_batch) -> None:
        """One optimizer step; a non-finite loss stops the run before the update."""
        state = self.state
        self.optimizer.zero_grad()
        with self.autocast():
            loss = self.loss(input_batch, target_batch, self.model, self.device)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the training loss is {loss.item()} at epoch {state.epoch + 1}, step "
                f"{state.global_step + 1}: training diverged. Lower the learning rate (or check "
                "the data and settings); checkpoints written so far are kept"
            )
        loss.backward()
        self.optimizer.step()
        state.tokens_seen += input_batch.numel()
        state.global_step += 1
        state.batch_in_epoch += 1
        self.bar.update(1)

    def evaluate_and_print(self) -> None:
        """The book's evaluation: train and val loss over ``eval_iter`` batches, recorded and printed."""
        state = self.state
        train_loss, val_loss = self.evaluate(
            self.model, self.train_loader, self.val_loader, self.device, self.eval_iter
        )
        state.train_losses.append(train_loss)
        state.val_losses.append(val_loss)
        state.track_tokens_seen.append(state.tokens_seen)
        state.eval_steps.append(state.global_step)
        state.eval_epochs.append(state.epoch + 1)
        self.bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
        print(
            f"Ep {state.epoch + 1} (Step {state.global_step:06d}): "
            f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}",
            flush=True,
        )

    def end_epoch(self) -> None:
        """The sample printed after each epoch, the epoch counted, ``on_epoch_end`` called."""
        state = self.state
        state.samples.append(
            generate_and_print_sample(self.model, self.tokenizer, self.device, self.start_context)
        )
        state.epoch += 1
        state.batch_in_epoch = 0
        state.epoch_seed = None
        if self.on_epoch_end is not None:
            self.on_epoch_end(state)
        self.stop_if_asked(state.epoch < self.num_epochs, f"stopped after epoch {state.epoch}")

    def stop_if_asked(self, more_to_do: bool, where: str) -> None:
        """Poll ``should_stop``; if asked, with ``more_to_do``: ``on_stop``, then TrainingInterrupted."""
        if self.should_stop is not None and self.should_stop() and more_to_do:
            if self.on_stop is not None:
                self.on_stop(self.state)
            raise TrainingInterrupted(where)


def train_model_simple(
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
):
    """The book's training function: returns ``train_losses, val_losses, tokens_seen``."""
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
    )
    return state.train_losses, state.val_losses, state.track_tokens_seen


@contextlib.contextmanager
def stop_on_signals(signals=(signal.SIGTERM, signal.SIGINT)):
    """Turn SIGTERM/SIGINT into a flag polled at the next safe point.

    Yields a callable for ``train_model(should_stop=...)``. SLURM sends SIGTERM
    before killing a job at its time limit or on preemption.
    """
    received = []

    def handler(signum, _frame):
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield lambda: bool(received)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
