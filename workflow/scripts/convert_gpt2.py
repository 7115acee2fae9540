import sys
from pathlib import Path

from gptlab.convert import convert_tf_checkpoint

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

convert_tf_checkpoint(Path(sm.input.manifest).parent, sm.output[0], progress=True)
