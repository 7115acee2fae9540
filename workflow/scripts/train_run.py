import sys

from gptlab.study.runs import train_run
from gptlab.training.config import TrainConfig

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

train_run(
    sm.input.corpus,
    sm.output.checkpoint,
    sm.output.history,
    sm.output.samples,
    sm.output.metrics,
    name=sm.wildcards.run,
    model_config=sm.params.model,
    config=TrainConfig(**sm.params.data, **sm.params.training),
    record=sm.params.record,
    device=sm.params.device,
    threads=sm.threads,
    work_dir=sm.params.work_dir,
)
