import sys

from gptlab.data import read_text, split_text
from gptlab.device import select_device, set_threads
from gptlab.experiments.sweep import write_sweep
from gptlab.pretrained import load_models
from gptlab.tokenizer import get_tokenizer

sm = snakemake
p = sm.params
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

set_threads(sm.threads)
train_text, _ = split_text(read_text(sm.input.corpus), p.train_ratio)
write_sweep(
    sm.output.generations,
    sm.output.cells,
    sm.output.recommended,
    load_models({sm.wildcards.model: sm.input.model}, select_device(p.device)),
    get_tokenizer(),
    p.prompts,
    temperatures=p.temperatures,
    top_ks=p.top_ks,
    seeds=p.seeds,
    max_new_tokens=p.max_new_tokens,
    train_text=train_text,
    batch_size=p.batch_size,
    metadata={"model_paths": {sm.wildcards.model: sm.input.model}},
)
