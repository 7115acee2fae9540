# OpenAI's GPT-2 releases: download (on the submitting host) and convert to safetensors.
localrules:
    download_gpt2,


rule download_gpt2:
    output:
        # Only the manifest is declared: Snakemake deletes the outputs of a failed job, and the
        # verified files beside it (and any .part file) must survive for a rerun to resume.
        # convert_gpt2 removes the manifest when it finds a damaged file (moved to <file>.bad),
        # so that the next run downloads that file again and re-verifies the others.
        manifest="results/gpt2/{size}/tf/manifest.json",
    log:
        f"{LOGS}/download_gpt2_{{size}}.log",
    conda:
        "../../envs/torch.yaml"
    params:
        base_urls=config["gpt2"]["base_urls"],
        check_known_sizes=config["gpt2"]["check_known_sizes"],
    script:
        "../scripts/download_gpt2.py"


rule convert_gpt2:
    input:
        manifest=rules.download_gpt2.output.manifest,
    output:
        "results/gpt2/{size}/model.safetensors",
    log:
        f"{LOGS}/convert_gpt2_{{size}}.log",
    benchmark:
        f"{BENCH}/convert_gpt2_{{size}}.tsv"
    conda:
        "../../envs/convert.yaml"
    resources:
        # Variables are streamed one at a time: memory stays near the largest tensor.
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/convert_gpt2.py"
