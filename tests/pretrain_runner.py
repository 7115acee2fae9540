"""Run ``gptlab.training.pretrain.pretrain`` in a fresh process (used by the resume tests).

usage: python pretrain_runner.py SETTINGS_JSON OUT_DIR
SETTINGS_JSON: ``text_file`` and ``pretrain``'s keyword arguments (``TrainConfig`` fields among them).
Writes OUT_DIR/final.pt (a gptlab checkpoint) and OUT_DIR/history.json.
Exit status 3 when training was interrupted by a signal.
"""

import json
import sys
from pathlib import Path

from gptlab.training.checkpoint import save_checkpoint
from gptlab.training.loop import TrainingInterrupted
from gptlab.training.pretrain import pretrain


def main() -> int:
    settings = json.loads(sys.argv[1])
    out = Path(sys.argv[2])
    text = Path(settings.pop("text_file")).read_text()
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
