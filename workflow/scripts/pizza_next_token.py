import sys

from gptlab.device import select_device, set_threads
from gptlab.experiments.common import load_models
from gptlab.experiments.pizza import write_next_token_probabilities
from gptlab.tokenizer import get_tokenizer

sm = snakemake
p = sm.params
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

set_threads(sm.threads)
models = load_models({sm.wildcards.model: sm.input.model}, select_device(p.device))
write_next_token_probabilities(
    sm.output[0],
    models,
    get_tokenizer(),
    p.prompts,
    p.next_token_temperatures,
    target=p.target,
    metadata={"model_paths": {sm.wildcards.model: sm.input.model}},
)
