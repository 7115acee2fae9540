# Pretraining (section 5.2) and exercise 5.4: resume from the checkpoint for more epochs.
TRAIN_PARAMS = dict(
    model=config["model"],
    data=config["data"],
    training=config["training"],
    device=config["device"],
)


rule pretrain:
    input:
        corpus="results/data/corpus.txt",
    output:
        checkpoint="results/pretrain/checkpoint.pt",
        history=report(
            "results/pretrain/history.csv",
            caption="../report/pretrain_history.rst",
            category="5.2 Pretraining",
        ),
        samples="results/pretrain/samples.csv",
    log:
        f"{LOGS}/pretrain.log",
    benchmark:
        f"{BENCH}/pretrain.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=config["resources"]["gpu"],
    params:
        **TRAIN_PARAMS,
        num_epochs=config["training"]["num_epochs"],
        run_name="pretrain",
        # Intermediate checkpoints live outside the declared outputs, which
        # Snakemake deletes when a job fails: a rerun continues from them.
        work_dir="results/pretrain/work",
    script:
        "../scripts/pretrain.py"


rule resume:
    input:
        corpus="results/data/corpus.txt",
        checkpoint="results/pretrain/checkpoint.pt",
    output:
        checkpoint="results/resume/checkpoint.pt",
        history=report(
            "results/resume/history.csv",
            caption="../report/resume_history.rst",
            category="5.4 Resume training",
        ),
        samples="results/resume/samples.csv",
    log:
        f"{LOGS}/resume.log",
    benchmark:
        f"{BENCH}/resume.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=config["resources"]["gpu"],
    params:
        **TRAIN_PARAMS,
        extra_epochs=config["resume"]["extra_epochs"],
        work_dir="results/resume/work",
    script:
        "../scripts/resume.py"


rule train_uninterrupted:
    input:
        corpus="results/data/corpus.txt",
    output:
        checkpoint="results/resume/uninterrupted/checkpoint.pt",
        history="results/resume/uninterrupted/history.csv",
        samples="results/resume/uninterrupted/samples.csv",
    log:
        f"{LOGS}/train_uninterrupted.log",
    benchmark:
        f"{BENCH}/train_uninterrupted.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=config["resources"]["gpu"],
    params:
        **TRAIN_PARAMS,
        num_epochs=train_epochs_total(),
        run_name="uninterrupted",
        work_dir="results/resume/uninterrupted/work",
    script:
        "../scripts/pretrain.py"


rule verify_resume:
    input:
        resumed="results/resume/checkpoint.pt",
        uninterrupted="results/resume/uninterrupted/checkpoint.pt",
    output:
        "results/resume/verification.json",
    log:
        f"{LOGS}/verify_resume.log",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=10,
    script:
        "../scripts/verify_resume.py"


rule plot_losses:
    input:
        history="results/resume/history.csv",
    output:
        png=report(
            "results/figures/losses.png",
            caption="../report/losses.rst",
            category="5.4 Resume training",
        ),
        pdf="results/figures/losses.pdf",
    log:
        f"{LOGS}/plot_losses.log",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/plot_losses.py"
