import sys

from gptlab.study.runs import run_pretraining
from gptlab.training.config import TrainConfig

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

run_pretraining(
    sm.input.corpus,
    sm.output.checkpoint,
    sm.output.history,
    sm.output.samples,
    model_config=sm.params.model,
    config=TrainConfig(**sm.params.data, **sm.params.training),
    run_name=sm.wildcards.run,
    device=sm.params.device,
    threads=sm.threads,
    work_dir=sm.params.work_dir,
    metrics=sm.output.metrics,
    record=sm.params.record,
)
