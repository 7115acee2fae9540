"""Run ``gptlab.training.pretrain.pretrain`` in a fresh process (used by the resume tests).

usage: python pretrain_runner.py SETTINGS_JSON OUT_DIR
SETTINGS_JSON: ``text_file`` and ``pretrain``'s keyword arguments (``TrainConfig`` fields among them),
and optionally ``break_resume``: "rng" (an exact resume that leaves the RNG states as set-up left them)
or "position" (one whose first epoch starts a batch late, the skipped batch coming last: same steps,
same counters, other data order), to show that the verification catches them.
Writes OUT_DIR/final.pt (a gptlab checkpoint) and OUT_DIR/history.json.
Exit status 3 when training was interrupted by a signal.
"""

import itertools
import json
import sys
from pathlib import Path

from gptlab.training import loop
from gptlab.training import pretrain as pretraining
from gptlab.training.checkpoint import save_checkpoint
from gptlab.training.loop import TrainingInterrupted
from gptlab.training.pretrain import pretrain


def break_resume(how: str) -> None:
    if how == "rng":
        pretraining.restore_rng_state = lambda state: None
    elif how == "position":
        epoch_iterator, calls = loop._epoch_iterator, []

        def one_batch_late(train_loader, state):
            batches = iter(epoch_iterator(train_loader, state))
            calls.append(1)
            if len(calls) > 1:
                return batches
            first = next(batches)
            return itertools.chain(batches, [first])

        loop._epoch_iterator = one_batch_late
    else:
        raise ValueError(f"break_resume={how!r}")


def main() -> int:
    settings = json.loads(sys.argv[1])
    out = Path(sys.argv[2])
    text = Path(settings.pop("text_file")).read_text()
    if "break_resume" in settings:
        break_resume(settings.pop("break_resume"))
    try:
        model, optimizer, state, train_config = pretrain(text, progress=False, **settings)
    except TrainingInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 3
    save_checkpoint(out / "final.pt", model, optimizer, state.to_dict(), train_config)
    (out / "history.json").write_text(json.dumps(state.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
