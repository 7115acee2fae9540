import sys

from gptlab.study.reports import render_report

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

render_report(
    snakemake.input.notebook,
    snakemake.params.parameters,
    snakemake.output.ipynb,
    snakemake.output.html,
    kernel_name=snakemake.params.kernel,
)
