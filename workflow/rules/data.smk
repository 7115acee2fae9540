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
    script:
        "../scripts/download_corpus.py"
