# Exercise 5.5: training and validation loss of every model on the corpus, the book's way.


rule evaluate_losses:
    input:
        corpus=rules.download_corpus.output[0],
        model=model_file,
    output:
        "results/ex5_5/models/{model}.csv",
    log:
        f"{LOGS}/evaluate_losses_{{model}}.log",
    benchmark:
        f"{BENCH}/evaluate_losses_{{model}}.tsv"
    wildcard_constraints:
        model="|".join(MODEL_NAMES),
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=model_mem_mb,
        runtime=30,
        gpu=large_model_gpu,
    params:
        data=config["data"],
        seed=config["evaluation"]["seed"],
        device=config["device"],
    script:
        "../scripts/evaluate_losses.py"


rule combine_losses:
    input:
        per_model(rules.evaluate_losses.output[0]),
    output:
        report(
            "results/ex5_5/losses.csv",
            caption="../report/ex5_5_losses.rst",
            category="Exercise 5.5: losses of the pretrained GPT-2",
        ),
    log:
        f"{LOGS}/combine_losses.log",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/combine_tables.py"


rule plot_model_losses:
    input:
        rules.combine_losses.output[0],
    output:
        png=report(
            "results/figures/ex5_5/losses.png",
            caption="../report/ex5_5_losses.rst",
            category="Exercise 5.5: losses of the pretrained GPT-2",
        ),
        pdf="results/figures/ex5_5/losses.pdf",
    log:
        f"{LOGS}/plot_model_losses.log",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/plot_model_losses.py"
