import sys

import pandas as pd

from gptlab.data import read_text, split_text
from gptlab.device import select_device, set_threads
from gptlab.experiments.common import load_models
from gptlab.experiments.losses import wide_losses
from gptlab.experiments.sizes import SizesGrid, write_book_references, write_sizes
from gptlab.tokenizer import get_tokenizer

sm = snakemake
p = sm.params
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

set_threads(sm.threads)
paths = dict(zip(p.model_names, sm.input.models, strict=True))
models = load_models(paths, select_device(p.device))
tokenizer = get_tokenizer()
train_text, _ = split_text(read_text(sm.input.corpus), p.train_ratio)
grid = SizesGrid(
    prompts=p.prompts,
    settings=[(s["temperature"], s.get("top_k")) for s in p.settings],
    seeds=p.seeds,
    max_new_tokens=p.max_new_tokens,
    batch_size=p.batch_size,
)
write_sizes(
    sm.output.generations,
    sm.output.summary,
    sm.output.side_by_side,
    models,
    tokenizer,
    grid,
    train_text=train_text,
    losses=wide_losses(pd.read_csv(sm.input.losses)),
    metadata={"model_paths": paths},
)
write_book_references(
    sm.output.book_reference,
    dict(zip(p.sizes, models.values(), strict=True)),
    tokenizer,
)
