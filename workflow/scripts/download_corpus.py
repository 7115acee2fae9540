import sys

from gptlab.download import DownloadError, download_file

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

try:
    download_file(snakemake.params.urls, snakemake.output[0], expected_sha256=snakemake.params.sha256)
except DownloadError as err:
    err.advise(
        "set corpus.local_path in the config to a copy of the text (offline machines), or corpus.url to a "
        "reachable mirror; if the file there is the text you mean to study but differs from corpus.sha256, "
        "set corpus.sha256 to its sha256 (or null)"
    )
    raise
