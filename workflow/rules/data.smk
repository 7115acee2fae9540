# Downloads run on the submitting host: cluster compute nodes often have no internet.
localrules:
    download_corpus,


rule download_corpus:
    input:
        corpus_local_input(),
    output:
        "results/data/corpus.txt",
    log:
        f"{LOGS}/download_corpus.log",
    conda:
        "../../envs/torch.yaml"
    params:
        urls=corpus_urls(),
        sha256=config["corpus"]["sha256"],
        remedy="set corpus.local_path in the config to a copy of the text (offline machines), "
        "or corpus.url to a reachable mirror; if the file there is the text you mean to study "
        "but differs from corpus.sha256, set corpus.sha256 to its sha256 (or null)",
    script:
        "../scripts/download_corpus.py"
