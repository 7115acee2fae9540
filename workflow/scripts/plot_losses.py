import sys

import pandas as pd

from gptlab.experiments.figures import plot_losses
from gptlab.io import save_figure

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

save_figure(plot_losses(pd.read_csv(snakemake.input.history)), snakemake.output)
