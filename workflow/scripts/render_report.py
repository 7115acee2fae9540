import os
import sys

from gptlab.study.reports import render_report

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)
# The notebook's kernel, a child process, writes its start-up messages to the file descriptors it
# inherits: they go to this job's log, not to the console.
os.dup2(sys.stdout.fileno(), 1)
os.dup2(sys.stdout.fileno(), 2)

render_report(
    snakemake.input.notebook,
    snakemake.params.parameters,
    snakemake.output.ipynb,
    snakemake.output.html,
    kernel_name=snakemake.params.kernel,
)
