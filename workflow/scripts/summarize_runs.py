import sys

from gptlab.experiments.training_study import summarize_runs

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

files = zip(sm.input.history, sm.input.samples, sm.input.metrics, strict=True)
runs = [
    {**run, "history": history, "samples": samples, "metrics": metrics}
    for run, (history, samples, metrics) in zip(sm.params.runs, files, strict=True)
]
summary, _ = summarize_runs(
    runs, sm.output.summary, sm.output.samples, variants=sm.params.variants, baseline=sm.params.baseline
)
print(f"{len(summary)} runs summarized")
