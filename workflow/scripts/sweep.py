import sys

from gptlab.data import read_text, split_text
from gptlab.device import select_device, set_threads
from gptlab.experiments.common import load_models
from gptlab.experiments.sweep import SweepGrid, write_sweep
from gptlab.tokenizer import get_tokenizer

sm = snakemake
p = sm.params
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

set_threads(sm.threads)
train_text, _ = split_text(read_text(sm.input.corpus), p.train_ratio)
grid = SweepGrid(
    prompts=p.prompts,
    temperatures=p.temperatures,
    top_ks=p.top_ks,
    seeds=p.seeds,
    max_new_tokens=p.max_new_tokens,
    batch_size=p.batch_size,
)
write_sweep(
    sm.output.generations,
    sm.output.cells,
    sm.output.recommended,
    load_models({sm.wildcards.model: sm.input.model}, select_device(p.device)),
    get_tokenizer(),
    grid,
    train_text=train_text,
    metadata={"model_paths": {sm.wildcards.model: sm.input.model}},
)
