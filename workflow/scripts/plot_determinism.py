import sys

from gptlab.experiments.figures import plot_determinism
from gptlab.io import save_figure

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

save_figure(plot_determinism(sm.input[0]), sm.output)
