import sys

from gptlab.study.runs import run_resume
from gptlab.training.config import TrainConfig

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

run_resume(
    sm.input.corpus,
    sm.input.checkpoint,
    sm.output.checkpoint,
    sm.output.history,
    sm.output.samples,
    model_config=sm.params.model,
    config=TrainConfig(**sm.params.data, **sm.params.training),
    extra_epochs=sm.params.extra_epochs,
    device=sm.params.device,
    threads=sm.threads,
    work_dir=sm.params.work_dir,
)
