import sys

from gptlab.experiments.figures import plot_training_study

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

plot_training_study(
    sm.input.summary, sm.input.histories, sm.output.png, sm.output.pdf, baseline=sm.params.baseline
)
