# Pretraining (section 5.2) and exercise 5.4: resume from the checkpoint for more epochs.
TRAIN_PARAMS = dict(
    model=config["model"],
    data=config["data"],
    training=config["training"],
    device=config["device"],
)

# Exercise 5.4's verification: after writing its checkpoint, the pretraining job trains on in memory
# for as many epochs as the resumed run: the run that never stopped, which that one must equal.
REFERENCE_CHECKPOINT = "results/resume/uninterrupted/checkpoint.pt"
REFERENCE_OUTPUTS = (
    dict(
        reference_checkpoint=REFERENCE_CHECKPOINT,
        reference_history="results/resume/uninterrupted/history.csv",
        reference_samples="results/resume/uninterrupted/samples.csv",
    )
    if reference_epochs()
    else {}
)


rule pretrain:
    input:
        corpus=rules.download_corpus.output[0],
    output:
        **REFERENCE_OUTPUTS,
        checkpoint="results/pretrain/checkpoint.pt",
        history=report(
            "results/pretrain/history.csv",
            caption="../report/pretrain_history.rst",
            category="Section 5.2: pretraining",
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
        reference_epochs=reference_epochs(),
        run_name="pretrain",
        # Intermediate checkpoints live outside the declared outputs, which
        # Snakemake deletes when a job fails: a rerun continues from them.
        work_dir="results/pretrain/work",
    script:
        "../scripts/pretrain.py"


rule resume:
    input:
        corpus=rules.download_corpus.output[0],
        checkpoint=rules.pretrain.output.checkpoint,
    output:
        checkpoint="results/resume/checkpoint.pt",
        history=report(
            "results/resume/history.csv",
            caption="../report/resume_history.rst",
            category="Exercise 5.4: resume training",
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


rule verify_resume:
    input:
        resumed=rules.resume.output.checkpoint,
        uninterrupted=REFERENCE_CHECKPOINT,
    output:
        "results/resume/verification.json",
    log:
        f"{LOGS}/verify_resume.log",
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=8000,  # two checkpoints of the book's model, each with its optimizer state
    script:
        "../scripts/verify_resume.py"


rule plot_losses:
    input:
        history=rules.resume.output.history,
    output:
        png=report(
            "results/figures/losses.png",
            caption="../report/losses.rst",
            category="Exercise 5.4: resume training",
        ),
        pdf="results/figures/losses.pdf",
    log:
        f"{LOGS}/plot_losses.log",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/plot_losses.py"
