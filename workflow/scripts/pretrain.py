import sys

from gptlab.study import run_pretraining

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

run_pretraining(
    sm.input.corpus,
    sm.output.checkpoint,
    sm.output.history,
    sm.output.samples,
    model_config=sm.params.model,
    data=sm.params.data,
    training=sm.params.training,
    num_epochs=sm.params.num_epochs,
    run_name=sm.params.run_name,
    device=sm.params.device,
    threads=sm.threads,
    work_dir=sm.params.work_dir,
)
