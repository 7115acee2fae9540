import sys

from gptlab.experiments import figures

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

figures.save(figures.plot_determinism_table(sm.input[0]), sm.output.png.removesuffix(".png"))
