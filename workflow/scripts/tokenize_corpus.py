import os
import sys

from gptlab.corpus import tokenize_corpus

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

meta = tokenize_corpus(sm.params.source, os.path.dirname(sm.output.meta), threads=sm.threads)
print(f"{meta['n_tokens']:,} tokens from {len(meta['documents']):,} documents")
