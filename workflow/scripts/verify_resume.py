import sys

from gptlab.study.runs import verify_resume

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

result = verify_resume(sm.input.resumed, sm.input.uninterrupted, sm.output[0])
print(f"resumed run identical to uninterrupted run: {result['identical']}")
