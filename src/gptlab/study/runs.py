"""The pretraining steps of the study, from files to files (called by the pipeline's scripts).

Each function takes plain paths and settings, runs one step and writes its
artifacts atomically:

- ``run_pretraining``: corpus → final checkpoint, loss history, per-epoch samples
- ``run_resume``: checkpoint → one more epoch (exercise 5.4), checkpoint and history
- ``verify_resume``: resumed vs uninterrupted run → a verification JSON
"""

from __future__ import annotations

import pandas as pd
import torch

from ..data import read_text
from ..device import describe_machine, select_device, set_threads
from ..io import write_json, write_table
from ..training.checkpoint import load_checkpoint, save_checkpoint
from ..training.config import TrainConfig
from ..training.loop import TrainState
from ..training.pretrain import pretrain

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
) -> TrainState:
    """Pretrain from scratch for ``config.num_epochs`` (continuing from ``work_dir`` when interrupted)."""
    result = _train(corpus, model_config, config, device, threads, work_dir)
    return _write_run(*result, checkpoint, history, samples, run_name)


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
    result = _train(corpus, model_config, config, device, threads, work_dir, resume_from=from_checkpoint)
    return _write_run(*result, checkpoint, history, samples, "pretrain", done)


def _train(corpus, model_config, config, device, threads, work_dir, resume_from=None):
    set_threads(threads)
    device = select_device(device)
    text = read_text(corpus)
    return pretrain(
        text,
        model_config=model_config,
        config=config,
        device=device,
        work_dir=work_dir,
        resume_from=resume_from,
    )


def _write_run(
    model, optimizer, state, train_config, checkpoint, history, samples, run_name, resumed_after=None
) -> TrainState:
    device = next(model.parameters()).device
    save_checkpoint(
        checkpoint, model, optimizer, state.to_dict(), train_config, machine=describe_machine(device)
    )
    meta = {"run": run_name, "resumed_after_epoch": resumed_after, "model_config": dict(model.cfg)}
    meta["device"] = str(device)
    meta["train_config"] = train_config
    write_table(history_frame(state, run_name, resumed_after), history, meta)
    write_table(samples_frame(state, run_name, resumed_after), samples, meta)
    return state


def verify_resume(resumed_checkpoint, uninterrupted_checkpoint, out_json) -> dict:
    """Compare a resumed run with an uninterrupted one of the same length, bit for bit."""
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
    result["machines"] = {"resumed": a.get("machine"), "uninterrupted": b.get("machine")}
    result["same_machine"] = _same_machine(a.get("machine"), b.get("machine"))
    write_json(result, out_json)
    return result


def _same_machine(a: dict | None, b: dict | None) -> bool | None:
    """Whether two runs used the same kind of machine (what decides the last bits), None if unknown."""
    if not a or not b:
        return None
    keys = ("cpu", "isa_flags", "torch_cpu_capability", "torch_threads", "torch", "math_libraries", "device")
    return all(a.get(k) == b.get(k) for k in keys)
