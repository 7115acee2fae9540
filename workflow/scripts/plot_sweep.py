import sys
from pathlib import Path

from gptlab.experiments.figures import write_all_heatmaps

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

written = write_all_heatmaps(sm.input[0], Path(sm.output.png[0]).parent, metrics=sm.params.metrics)
missing = sorted(set(sm.output) - {str(p) for p in written})
if missing:
    raise ValueError(f"no values to plot for {missing}: the sweep table lacks these metrics")
