import os
import sys
from pathlib import Path

# TensorFlow's start-up messages (oneDNN, CPU features) stay out of the console; the conversion
# only copies values, so oneDNN's kernels never run (its output is the same byte for byte).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from gptlab.convert import convert_tf_checkpoint  # noqa: E402

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)
# What TensorFlow's C++ side writes to the process's stderr goes to the log too.
os.dup2(sys.stderr.fileno(), 2)

convert_tf_checkpoint(Path(sm.input.manifest).parent, sm.output[0], progress=True)
