import sys

from gptlab.experiments.figures.pizza import (
    plot_next_token_probability,
    plot_pizza_sweep,
    plot_toy_distributions,
)
from gptlab.io import save_figure

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

out = sm.output
save_figure(plot_toy_distributions(sm.params.temperatures), [out.toy, out.toy_pdf])
save_figure(plot_pizza_sweep(sm.input.sweep), [out.sweep, out.sweep_pdf])
save_figure(plot_next_token_probability(sm.input.next_token), [out.next_token, out.next_token_pdf])
