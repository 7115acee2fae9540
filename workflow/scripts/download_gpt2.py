import sys
from pathlib import Path

from gptlab.download import DownloadError
from gptlab.gpt2 import download_gpt2

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

try:
    download_gpt2(
        sm.wildcards.size,
        Path(sm.output.manifest).parent,
        sm.params.base_urls,
        check_known_sizes=sm.params.check_known_sizes,
    )
except DownloadError as err:
    err.advise("set gpt2.base_urls in the config to a reachable mirror")
    raise
