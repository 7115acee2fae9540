# The decoding experiments: exercises 5.1 (pizza), 5.2 (temperature x top-k),
# 5.3 (determinism) and 5.6 (model sizes), each a table per model, then combined.
SAMPLING = config["sampling"]
DEVICE_PARAMS = dict(device=config["device"])


rule pizza_toy:
    output:
        book=report(
            "results/ex5_1/pizza_book.csv",
            caption="../report/ex5_1_pizza.rst",
            category="Exercise 5.1: pizza",
        ),
        sweep="results/ex5_1/pizza_sweep.csv",
    log:
        f"{LOGS}/pizza_toy.log",
    conda:
        "../../envs/torch.yaml"
    params:
        **{
            key: SAMPLING["pizza"][key]
            for key in (
                "temperatures",
                "num_draws",
                "seed",
                "sweep_points",
                "confidence",
                "interval",
            )
        },
    script:
        "../scripts/pizza_toy.py"


rule pizza_next_token:
    input:
        model=model_file,
    output:
        "results/ex5_1/models/{model}.csv",
    log:
        f"{LOGS}/pizza_next_token_{{model}}.log",
    wildcard_constraints:
        model="|".join(MODEL_NAMES),
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=model_mem_mb,
        runtime=15,
        gpu=large_model_gpu,
    params:
        **DEVICE_PARAMS,
        prompts=SAMPLING["pizza"]["prompts"],
        target=SAMPLING["pizza"]["target"],
        next_token_temperatures=SAMPLING["pizza"]["next_token_temperatures"],
    script:
        "../scripts/pizza_next_token.py"


rule combine_next_token:
    input:
        per_model(rules.pizza_next_token.output[0]),
    output:
        "results/ex5_1/next_token.csv",
    log:
        f"{LOGS}/combine_next_token.log",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/combine_tables.py"


rule plot_pizza:
    input:
        sweep=rules.pizza_toy.output.sweep,
        next_token=rules.combine_next_token.output[0],
    output:
        toy=report(
            "results/figures/ex5_1/toy_distributions.png",
            caption="../report/ex5_1_pizza.rst",
            category="Exercise 5.1: pizza",
        ),
        toy_pdf="results/figures/ex5_1/toy_distributions.pdf",
        sweep=report(
            "results/figures/ex5_1/pizza_sweep.png",
            caption="../report/ex5_1_pizza.rst",
            category="Exercise 5.1: pizza",
        ),
        sweep_pdf="results/figures/ex5_1/pizza_sweep.pdf",
        next_token=report(
            "results/figures/ex5_1/next_token.png",
            caption="../report/ex5_1_pizza.rst",
            category="Exercise 5.1: pizza",
        ),
        next_token_pdf="results/figures/ex5_1/next_token.pdf",
    log:
        f"{LOGS}/plot_pizza.log",
    conda:
        "../../envs/torch.yaml"
    params:
        temperatures=SAMPLING["pizza"]["temperatures"],
    script:
        "../scripts/plot_pizza.py"


rule sweep:
    input:
        corpus=rules.download_corpus.output[0],
        model=model_file,
    output:
        generations="results/ex5_2/models/{model}/generations.csv",
        cells="results/ex5_2/models/{model}/cells.csv",
        recommended="results/ex5_2/models/{model}/recommended.csv",
    log:
        f"{LOGS}/sweep_{{model}}.log",
    benchmark:
        f"{BENCH}/sweep_{{model}}.tsv"
    wildcard_constraints:
        model="|".join(MODEL_NAMES),
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=model_mem_mb,
        runtime=60,
        gpu=large_model_gpu,
    params:
        **SAMPLING["sweep"],
        **DEVICE_PARAMS,
        prompts=SAMPLING["prompts"],
        seeds=SAMPLING["seeds"],
        batch_size=SAMPLING["batch_size"],
        train_ratio=config["data"]["train_ratio"],
    script:
        "../scripts/sweep.py"


rule combine_sweep:
    input:
        generations=per_model(rules.sweep.output.generations),
        cells=per_model(rules.sweep.output.cells),
        recommended=per_model(rules.sweep.output.recommended),
    output:
        generations="results/ex5_2/generations.csv",
        cells=report(
            "results/ex5_2/cells.csv",
            caption="../report/ex5_2_sweep.rst",
            category="Exercise 5.2: temperature and top-k",
        ),
        recommended=report(
            "results/ex5_2/recommended.csv",
            caption="../report/ex5_2_sweep.rst",
            category="Exercise 5.2: temperature and top-k",
        ),
    log:
        f"{LOGS}/combine_sweep.log",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/combine_tables.py"


rule plot_sweep:
    input:
        rules.combine_sweep.output.cells,
    output:
        png=report(
            expand(
                "results/figures/ex5_2/heatmap_{metric}.png", metric=HEATMAP_METRICS
            ),
            caption="../report/ex5_2_sweep.rst",
            category="Exercise 5.2: temperature and top-k",
        ),
        pdf=expand("results/figures/ex5_2/heatmap_{metric}.pdf", metric=HEATMAP_METRICS),
    log:
        f"{LOGS}/plot_sweep.log",
    conda:
        "../../envs/torch.yaml"
    params:
        metrics=HEATMAP_METRICS,
    script:
        "../scripts/plot_sweep.py"


rule determinism:
    input:
        model=rules.pretrain.output.checkpoint,
    output:
        report(
            "results/ex5_3/determinism.csv",
            caption="../report/ex5_3_determinism.rst",
            category="Exercise 5.3: determinism",
        ),
    log:
        f"{LOGS}/determinism.log",
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=model_mem_mb,
        runtime=15,
    params:
        **SAMPLING["determinism"],
        **DEVICE_PARAMS,
        model_name=TRAINED,
    script:
        "../scripts/determinism.py"


rule plot_determinism:
    input:
        rules.determinism.output[0],
    output:
        png=report(
            "results/figures/ex5_3/determinism.png",
            caption="../report/ex5_3_determinism.rst",
            category="Exercise 5.3: determinism",
        ),
        pdf="results/figures/ex5_3/determinism.pdf",
    log:
        f"{LOGS}/plot_determinism.log",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/plot_determinism.py"


rule sizes:
    input:
        corpus=rules.download_corpus.output[0],
        losses=rules.combine_losses.output[0],
        models=expand(rules.convert_gpt2.output[0], size=config["gpt2"]["sizes"]),
    output:
        generations="results/ex5_6/generations.csv",
        summary=report(
            "results/ex5_6/summary.csv",
            caption="../report/ex5_6_sizes.rst",
            category="Exercise 5.6: model sizes",
        ),
        side_by_side=report(
            "results/ex5_6/side_by_side.csv",
            caption="../report/ex5_6_sizes.rst",
            category="Exercise 5.6: model sizes",
        ),
        book_reference="results/ex5_6/book_reference.csv",
    log:
        f"{LOGS}/sizes.log",
    benchmark:
        f"{BENCH}/sizes.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=model_mem_mb,
        runtime=60,
        gpu=large_model_gpu,
    params:
        **SAMPLING["sizes"],
        **DEVICE_PARAMS,
        model_names=GPT2_MODELS,
        sizes=config["gpt2"]["sizes"],
        prompts=SAMPLING["prompts"],
        seeds=SAMPLING["seeds"],
        batch_size=SAMPLING["batch_size"],
        train_ratio=config["data"]["train_ratio"],
    script:
        "../scripts/sizes.py"


rule plot_sizes:
    input:
        rules.sizes.output.summary,
    output:
        png=report(
            "results/figures/ex5_6/sizes.png",
            caption="../report/ex5_6_sizes.rst",
            category="Exercise 5.6: model sizes",
        ),
        pdf="results/figures/ex5_6/sizes.pdf",
    log:
        f"{LOGS}/plot_sizes.log",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/plot_sizes.py"
