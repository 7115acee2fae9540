import sys

import torch

from gptlab.device import select_device, set_threads
from gptlab.experiments.common import load_model
from gptlab.experiments.determinism import DeterminismGrid, write_determinism
from gptlab.tokenizer import get_tokenizer

sm = snakemake
p = sm.params
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

set_threads(sm.threads)
device = select_device(p.device)
idx = torch.tensor([get_tokenizer().encode(p.prompt)], device=device)
grid = DeterminismGrid(
    max_new_tokens=p.max_new_tokens,
    temperatures=p.temperatures,
    top_ks=p.top_ks,
    batch_sizes=p.batch_sizes,
    runs=p.runs,
    seed=p.seed,
)
write_determinism(
    sm.output[0],
    load_model(sm.input.model, device),
    idx,
    model_name=p.model_name,
    grid=grid,
    metadata={"prompt": p.prompt, "model_path": sm.input.model},
)
