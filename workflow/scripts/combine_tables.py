import sys

from gptlab.io import concat_tables

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

# Per-model tables in, one table out; a named output gathers the input list of the same name.
# The combined sidecar holds each part's own (experiment, models, settings): reports read them there.
named = dict(sm.output.items())
jobs = [(getattr(sm.input, n), out) for n, out in named.items()] or [(sm.input, sm.output[0])]
for parts, out in jobs:
    print(f"{out}: {len(parts)} parts")
    concat_tables(parts, out)
