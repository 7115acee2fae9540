"""The pretraining steps of the study, from files to files (called by the pipeline's scripts).

Each function takes plain paths and settings, runs one step and writes its
artifacts atomically:

- ``run_pretraining``: corpus → final checkpoint, loss history, per-epoch samples (and, for each
  run of a training study, its metrics); with a :class:`Reference`, the same process then trains
  on in memory and writes that run too
- ``run_resume``: checkpoint → one more epoch (exercise 5.4), checkpoint and history
- ``verify_resume``: resumed vs uninterrupted run → a verification JSON
"""

from __future__ import annotations

import contextlib
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ..data import read_text
from ..device import describe_machine, select_device, set_threads
from ..io import write_json, write_table
from ..training.checkpoint import load_checkpoint, save_checkpoint
from ..training.config import TrainConfig
from ..training.loop import TrainState
from ..training.pretrain import pretrain_in_stages

HISTORY_COLUMNS = ["run", "epoch", "global_step", "tokens_seen", "train_loss", "val_loss"]


def _runs(epochs, run: str, resumed_after: int | None) -> list[str]:
    if resumed_after is None:
        return [run] * len(epochs)
    return ["resume" if e > resumed_after else run for e in epochs]


def history_frame(state: TrainState, run: str, resumed_after: int | None = None) -> pd.DataFrame:
    """One row per evaluation: the book's ``train_losses``/``val_losses``/``tokens_seen``.

    ``run`` labels the rows; with ``resumed_after`` (an epoch), rows of later
    epochs are labelled ``resume``.
    """
    return pd.DataFrame(
        {
            "run": _runs(state.eval_epochs, run, resumed_after),
            "epoch": state.eval_epochs,
            "global_step": state.eval_steps,
            "tokens_seen": state.track_tokens_seen,
            "train_loss": state.train_losses,
            "val_loss": state.val_losses,
        },
        columns=HISTORY_COLUMNS,
    )


def samples_frame(state: TrainState, run: str, resumed_after: int | None = None) -> pd.DataFrame:
    """One row per epoch: the greedy sample printed after it."""
    epochs = list(range(1, len(state.samples) + 1))
    return pd.DataFrame({"run": _runs(epochs, run, resumed_after), "epoch": epochs, "text": state.samples})


@dataclass(frozen=True)
class Reference:
    """Where :func:`run_pretraining` writes the run it continues in memory for ``epochs`` more epochs.

    That run never stopped at the end of pretraining: an exact resume from the pretraining
    checkpoint, in a new process, must equal it bit for bit (exercise 5.4's verification).
    """

    epochs: int
    checkpoint: Path
    history: Path
    samples: Path
    run_name: str = "uninterrupted"


def run_pretraining(
    corpus,
    checkpoint,
    history,
    samples,
    *,
    model_config: dict,
    config: TrainConfig,
    run_name: str = "pretrain",
    device: str = "auto",
    threads: int | None = None,
    work_dir=None,
    reference: Reference | None = None,
    metrics=None,
    record: dict | None = None,
) -> TrainState:
    """Pretrain from scratch for ``config.num_epochs`` (continuing from ``work_dir`` when interrupted).

    With ``reference``, the process then trains ``reference.epochs`` more in memory and writes that
    run there too, recording since when it was trained in memory. With ``metrics`` (a JSON path, as
    each run of a training study has), the run's metrics go there with ``record`` (what names the
    run: variant, seed, settings): see :func:`run_metrics`. Returns the pretraining's state.
    """
    then_epochs = reference.epochs if reference else 0
    started = time.perf_counter()
    stages = _train(corpus, model_config, config, device, threads, work_dir, then_epochs=then_epochs)
    with contextlib.closing(stages):
        stop = next(stages)
        wall_seconds = time.perf_counter() - started
        _write_run(stop, checkpoint, history, samples, run_name)
        if metrics is not None:
            write_json({"run": run_name, **(record or {}), **run_metrics(stop, wall_seconds)}, metrics)
        pretrained = TrainState.from_dict(stop.state.to_dict())  # a copy: the continuation trains on
        if reference is not None:
            written = {
                "checkpoint_written_at_epoch": stop.state.epoch,
                "in_memory_since": stop.in_memory_since,
            }
            stop = next(stages)
            outputs = (reference.checkpoint, reference.history, reference.samples)
            _write_run(stop, *outputs, reference.run_name, reference=written)
    return pretrained


def run_resume(
    corpus,
    from_checkpoint,
    checkpoint,
    history,
    samples,
    *,
    model_config: dict,
    config: TrainConfig,
    extra_epochs: int = 1,
    device: str = "auto",
    threads: int | None = None,
    work_dir=None,
) -> TrainState:
    """Exercise 5.4: restore model, optimizer and everything else; train ``extra_epochs`` more."""
    done = load_checkpoint(from_checkpoint, model_config=model_config)["train_state"]["epoch"]
    config = config.replace(num_epochs=done + extra_epochs)
    stages = _train(corpus, model_config, config, device, threads, work_dir, resume_from=from_checkpoint)
    with contextlib.closing(stages):
        stop = next(stages)
    _write_run(stop, checkpoint, history, samples, "pretrain", done)
    return stop.state


def run_metrics(stop, wall_seconds: float) -> dict:
    """A run's epochs and tokens seen, and this process's wall time, training speed and peak memory.

    A process that continued an interrupted run counts only the tokens it trained itself.
    """
    state = stop.state
    return {
        "epochs": state.epoch,
        "tokens_seen": state.tokens_seen,
        "wall_seconds": round(wall_seconds, 3),
        "tokens_per_second": round((state.tokens_seen - stop.tokens_before) / wall_seconds, 1),
        "continued_from_epoch": stop.in_memory_since["epoch"] if stop.tokens_before else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": describe_machine(next(stop.model.parameters()).device),
    }


def open_corpus(corpus):
    """The corpus at ``corpus``: a text file's text, or a tokenized corpus (its folder or its meta.json)."""
    path = Path(corpus)
    if path.is_dir() or path.name == "meta.json":
        from ..corpus import TokenCorpus

        return TokenCorpus(path if path.is_dir() else path.parent)
    return read_text(path)


def _train(corpus, model_config, config, device, threads, work_dir, **options):
    set_threads(threads)
    device = select_device(device)
    text = open_corpus(corpus)
    return pretrain_in_stages(
        text, model_config=model_config, config=config, device=device, work_dir=work_dir, **options
    )


def _write_run(stop, checkpoint, history, samples, run_name, resumed_after=None, reference=None) -> None:
    """The run's checkpoint, history and samples, with their sidecars.

    The checkpoint records the epoch a resumed run was restored at; a reference run records where the
    same process wrote the checkpoint it trained on from, and since when it trained in memory.
    """
    model, state, train_config = stop.model, stop.state, stop.train_config
    device = next(model.parameters()).device
    record = {"machine": describe_machine(device)}
    record.update({"resumed_from_epoch": resumed_after} if resumed_after is not None else {})
    record.update({"reference": reference} if reference is not None else {})
    save_checkpoint(checkpoint, model, stop.optimizer, state.to_dict(), train_config, **record)
    meta = {"run": run_name, "resumed_after_epoch": resumed_after, "model_config": dict(model.cfg)}
    meta["device"] = str(device)
    meta["train_config"] = train_config
    meta.update({"reference": reference} if reference is not None else {})
    write_table(history_frame(state, run_name, resumed_after), history, meta)
    write_table(samples_frame(state, run_name, resumed_after), samples, meta)


def verify_resume(resumed_checkpoint, uninterrupted_checkpoint, out_json) -> dict:
    """Compare a resumed run with an uninterrupted one of the same length, bit for bit.

    ``identical``: every parameter tensor and every recorded history field is equal. ``proves_exact_resume``:
    identical, and the uninterrupted run is known to have trained through the resume point in memory
    (``never_stopped_at_resume_point``); a reference that was itself restored there would share a
    broken restore with the resumed run. None when the reference does not record how it was trained.
    """
    a = load_checkpoint(resumed_checkpoint)
    b = load_checkpoint(uninterrupted_checkpoint)
    sa, sb = a["train_state"], b["train_state"]
    differing = [
        name
        for name in b["model_state_dict"]
        if not torch.equal(a["model_state_dict"][name], b["model_state_dict"][name])
    ]
    history_keys = ("train_losses", "val_losses", "track_tokens_seen", "eval_steps", "global_step", "samples")
    result = {
        "resumed_checkpoint": str(resumed_checkpoint),
        "uninterrupted_checkpoint": str(uninterrupted_checkpoint),
        "epochs": sb["epoch"],
        "global_step": sb["global_step"],
        "history_identical": {k: sa[k] == sb[k] for k in history_keys},
        "parameters_compared": len(b["model_state_dict"]),
        "parameters_differing": differing,
        "final_train_loss": {"resumed": sa["train_losses"][-1], "uninterrupted": sb["train_losses"][-1]},
        "final_val_loss": {"resumed": sa["val_losses"][-1], "uninterrupted": sb["val_losses"][-1]},
    }
    result["identical"] = all(result["history_identical"].values()) and not differing
    result.update(_reference_provenance(a, b, result["identical"]))
    result["machines"] = {"resumed": a.get("machine"), "uninterrupted": b.get("machine")}
    result["same_machine"] = _same_machine(a.get("machine"), b.get("machine"))
    write_json(result, out_json)
    return result


def _reference_provenance(resumed: dict, reference: dict, identical: bool) -> dict:
    """Whether the reference trained through the resume point without a save and restore, and so proves."""
    made = reference.get("reference")  # written by run_pretraining with a Reference
    resume_point = resumed.get("resumed_from_epoch", made and made["checkpoint_written_at_epoch"])
    if made is None or resume_point is None:
        never_stopped = None
    else:
        since = made["in_memory_since"]
        never_stopped = (since["epoch"], since["batch_in_epoch"]) < (resume_point, 0)
    proves = never_stopped if identical else False
    return {
        "resume_point_epoch": resume_point,
        "uninterrupted_in_memory_since": made and made["in_memory_since"],
        "never_stopped_at_resume_point": never_stopped,
        "proves_exact_resume": proves,
        "meaning": _MEANING[proves],
    }


_MEANING = {
    True: "The run resumed in a new process equals, bit for bit, the run that continued in memory past the "
    "resume point without saving and restoring: the checkpoint resumes training exactly.",
    False: "No proof of an exact resume: the two runs differ, or the uninterrupted run was itself restored "
    "from a checkpoint at or after the resume point, so a broken restore would affect both alike.",
    None: "The uninterrupted run does not record how it was trained, so whether it passed the resume point "
    "in memory is unknown; equal runs agree, but prove an exact resume only if it did.",
}


def _same_machine(a: dict | None, b: dict | None) -> bool | None:
    """Whether two runs used the same kind of machine (what decides the last bits), None if unknown."""
    if not a or not b:
        return None
    keys = ("cpu", "isa_flags", "torch_cpu_capability", "torch_threads", "torch", "math_libraries", "device")
    return all(a.get(k) == b.get(k) for k in keys)
