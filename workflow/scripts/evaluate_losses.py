import sys

from gptlab.data import read_text
from gptlab.device import select_device, set_threads
from gptlab.experiments.losses import evaluate_losses, write_losses_csv

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

set_threads(sm.threads)
data = sm.params.data
device = select_device(sm.params.device)
losses = evaluate_losses(
    {sm.wildcards.model: sm.input.model},
    read_text(sm.input.corpus),
    train_ratio=data["train_ratio"],
    max_length=data["max_length"],
    stride=data["stride"],
    batch_size=data["batch_size"],
    seed=sm.params.seed,
    device=device,
)
meta = {"experiment": "5.5 losses", "model": sm.input.model, "data": data, "seed": sm.params.seed}
write_losses_csv(losses, sm.output[0], {**meta, "device": str(device)})
print(losses.to_string(index=False))
