import sys

from gptlab.data import read_text
from gptlab.device import select_device, set_threads
from gptlab.experiments.common import describe_models, load_models
from gptlab.experiments.losses import evaluate_losses, write_losses_csv

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

set_threads(sm.threads)
data = sm.params.data
device = select_device(sm.params.device)
models = load_models({sm.wildcards.model: sm.input.model}, device)
losses = evaluate_losses(
    models,
    read_text(sm.input.corpus),
    train_ratio=data["train_ratio"],
    max_length=data["max_length"],
    stride=data["stride"],
    batch_size=data["batch_size"],
    seed=sm.params.seed,
    device=device,
)
meta = {"experiment": "5.5 losses", "models": describe_models(models), "data": data, "seed": sm.params.seed}
meta |= {"model_paths": {sm.wildcards.model: sm.input.model}, "device": str(device)}
write_losses_csv(losses, sm.output[0], meta)
print(losses.to_string(index=False))
