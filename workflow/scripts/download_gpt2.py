import sys
from pathlib import Path

from gptlab.gpt2 import download_gpt2

sm = snakemake
sys.stdout = sys.stderr = open(sm.log[0], "w", buffering=1)

base_url, *backup = sm.params.base_urls
download_gpt2(
    sm.wildcards.size,
    Path(sm.output.manifest).parent,
    base_url=base_url,
    backup_base_url=backup[0] if backup else None,
    check_known_sizes=sm.params.check_known_sizes,
    mirror_option=sm.params.mirror_option,
)
