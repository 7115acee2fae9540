import sys

from gptlab.study.runs import Reference, run_pretraining
from gptlab.training.config import TrainConfig

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

reference = None
if sm.params.reference_epochs:
    reference = Reference(
        sm.params.reference_epochs,
        sm.output.reference_checkpoint,
        sm.output.reference_history,
        sm.output.reference_samples,
    )
run_pretraining(
    sm.input.corpus,
    sm.output.checkpoint,
    sm.output.history,
    sm.output.samples,
    model_config=sm.params.model,
    config=TrainConfig(**{**sm.params.data, **sm.params.training, "num_epochs": sm.params.num_epochs}),
    run_name=sm.params.run_name,
    device=sm.params.device,
    threads=sm.threads,
    work_dir=sm.params.work_dir,
    reference=reference,
)
