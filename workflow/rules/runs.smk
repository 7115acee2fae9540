# Training studies (config `runs`): the pretraining run for every variant x seed, one job each in
# results/runs/<variant>-seed<seed>/, then a summary, a figure and a report. Without `runs`, no run.


rule tokenize_corpus:
    input:
        lambda wc: corpus_files(CORPORA[wc.corpus]),
    output:
        tokens="results/corpora/{corpus}/tokens.bin",
        meta="results/corpora/{corpus}/meta.json",
    log:
        f"{LOGS}/tokenize_corpus_{{corpus}}.log",
    benchmark:
        f"{BENCH}/tokenize_corpus_{{corpus}}.tsv"
    wildcard_constraints:
        corpus=never_empty(CORPORA),
    conda:
        "../../envs/torch.yaml"
    threads: RUN_OPTIONS["threads"]
    resources:
        mem_mb=2000,
        runtime=RUN_OPTIONS["runtime"],
    params:
        source=lambda wc: CORPORA[wc.corpus],
    script:
        "../scripts/tokenize_corpus.py"


rule train_run:
    input:
        corpus=run_corpus,
    output:
        checkpoint="results/runs/{run}/checkpoint.pt",
        history="results/runs/{run}/history.csv",
        samples="results/runs/{run}/samples.csv",
        metrics="results/runs/{run}/metrics.json",
    log:
        f"{LOGS}/runs/{{run}}.log",
    benchmark:
        f"{BENCH}/runs/{{run}}.tsv"
    wildcard_constraints:
        run=never_empty(RUN_NAMES),
    retries: RUN_OPTIONS["retries"]
    conda:
        "../../envs/torch.yaml"
    threads: RUN_OPTIONS["threads"]
    resources:
        mem_mb=run_mem_mb,
        runtime=RUN_OPTIONS["runtime"],
        gpu=config["resources"]["gpu"],
    params:
        model=lambda wc: RUNS[wc.run]["model"],
        data=lambda wc: RUNS[wc.run]["data"],
        training=lambda wc: RUNS[wc.run]["training"],
        record=run_record,
        device=config["device"],
        # Intermediate checkpoints, outside the declared outputs (deleted when a job fails):
        # a retried or rerun job continues from them.
        work_dir="results/runs/{run}/work",
    script:
        "../scripts/train_run.py"


rule summarize_runs:
    input:
        history=every_run("history"),
        samples=every_run("samples"),
        metrics=every_run("metrics"),
    output:
        summary=report(
            "results/runs/summary.csv",
            caption="../report/training_study.rst",
            category="Training study",
        ),
        samples="results/runs/final_samples.csv",
    log:
        f"{LOGS}/summarize_runs.log",
    conda:
        "../../envs/torch.yaml"
    params:
        runs=[
            {"run": name, "variant": run["variant"], "seed": run["seed"]}
            for name, run in RUNS.items()
        ],
        variants=VARIANT_NAMES,
        baseline=RUN_OPTIONS["baseline"],
    script:
        "../scripts/summarize_runs.py"


rule plot_training_study:
    input:
        summary=rules.summarize_runs.output.summary,
        histories=every_run("history"),
    output:
        png=report(
            "results/figures/training_study.png",
            caption="../report/training_study.rst",
            category="Training study",
        ),
        pdf="results/figures/training_study.pdf",
    log:
        f"{LOGS}/plot_training_study.log",
    conda:
        "../../envs/torch.yaml"
    params:
        baseline=RUN_OPTIONS["baseline"],
    script:
        "../scripts/plot_training_study.py"
