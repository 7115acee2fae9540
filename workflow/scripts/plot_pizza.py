import sys

from gptlab.experiments import figures

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

for fig, png in [
    (figures.plot_toy_distributions(sm.params.temperatures), sm.output.toy),
    (figures.plot_pizza_sweep(sm.input.sweep), sm.output.sweep),
    (figures.plot_next_token_probability(sm.input.next_token), sm.output.next_token),
]:
    figures.save(fig, png.removesuffix(".png"))
