import sys

from gptlab.download import download_file

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

download_file(
    snakemake.params.urls,
    snakemake.output[0],
    expected_sha256=snakemake.params.sha256,
    remedy=snakemake.params.remedy,
)
