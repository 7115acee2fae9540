import sys

from gptlab.experiments import figures

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

figures.save(figures.plot_size_comparison(sm.input[0]), sm.output.png.removesuffix(".png"))
