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
from tqdm.auto import tqdm

from .data import ResumableRandomSampler
from .generation import generate_text_simple
from .losses import calc_loss_batch, evaluate_model
from .tokenizer import text_to_token_ids, token_ids_to_text


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
    evaluate=evaluate_model,
) -> TrainState:
    """Train until ``num_epochs`` epochs are complete, starting from ``state``.

    ``on_epoch_end(state)`` runs after each epoch (save a checkpoint there).
    ``should_stop()`` is polled after every optimizer step; when it returns
    true, ``on_stop(state)`` runs and ``TrainingInterrupted`` is raised.
    ``autocast`` (a context-manager factory) wraps each training forward pass
    and ``evaluate`` replaces the book's ``evaluate_model`` (same signature);
    fast mode passes its own (``gptlab.fast``), the defaults are the book's.
    """
    state = state or TrainState()
    steps_per_epoch = len(train_loader)
    bar = tqdm(
        total=num_epochs * steps_per_epoch,
        initial=state.epoch * steps_per_epoch + state.batch_in_epoch,
        desc="training",
        unit="step",
        file=sys.stderr,
        disable=not progress,
        mininterval=2.0,
    )
    try:
        while state.epoch < num_epochs:
            model.train()
            for input_batch, target_batch in _epoch_iterator(train_loader, state):
                if state.batch_in_epoch == 0:
                    state.epoch_seed = getattr(train_loader.sampler, "last_seed", None)
                optimizer.zero_grad()
                with autocast():
                    loss = calc_loss_batch(input_batch, target_batch, model, device)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"the training loss is {loss.item()} at epoch {state.epoch + 1}, step "
                        f"{state.global_step + 1}: training diverged. Lower the learning rate (or check "
                        "the data and settings); checkpoints written so far are kept"
                    )
                loss.backward()
                optimizer.step()
                state.tokens_seen += input_batch.numel()
                state.global_step += 1
                state.batch_in_epoch += 1
                bar.update(1)

                if state.global_step % eval_freq == 0:
                    train_loss, val_loss = evaluate(model, train_loader, val_loader, device, eval_iter)
                    state.train_losses.append(train_loss)
                    state.val_losses.append(val_loss)
                    state.track_tokens_seen.append(state.tokens_seen)
                    state.eval_steps.append(state.global_step)
                    state.eval_epochs.append(state.epoch + 1)
                    bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
                    print(
                        f"Ep {state.epoch + 1} (Step {state.global_step:06d}): "
                        f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}",
                        flush=True,
                    )
                if should_stop is not None and should_stop() and state.batch_in_epoch < steps_per_epoch:
                    if on_stop is not None:
                        on_stop(state)
                    raise TrainingInterrupted(f"stopped at epoch {state.epoch + 1}, step {state.global_step}")

            state.samples.append(generate_and_print_sample(model, tokenizer, device, start_context))
            state.epoch += 1
            state.batch_in_epoch = 0
            state.epoch_seed = None
            if on_epoch_end is not None:
                on_epoch_end(state)
            if should_stop is not None and should_stop() and state.epoch < num_epochs:
                if on_stop is not None:
                    on_stop(state)
                raise TrainingInterrupted(f"stopped after epoch {state.epoch}")
    finally:
        bar.close()
    return state


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
