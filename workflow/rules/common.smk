# Config validation and target helpers shared by every rule file.
import hashlib
import math
import os
from pathlib import Path

from snakemake.utils import validate

# Jobs import the project's library from this checkout, whichever environment
# (venv, conda, cluster node) runs them.
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        filter(
            None, [str(Path(workflow.basedir) / "src"), os.environ.get("PYTHONPATH")]
        )
    )
)


validate(config, workflow.source_path("../schemas/config.schema.yaml"))


def config_error(key, message):
    raise ValueError(f"config error at {key}: {message}")


def non_finite_numbers(value, key=""):
    """Keys holding NaN or an infinity (YAML's .nan/.inf), which JSON Schema lets through."""
    if isinstance(value, float) and not math.isfinite(value):
        return [key]
    if isinstance(value, dict):
        return [
            k
            for name, v in value.items()
            for k in non_finite_numbers(v, f"{key}.{name}".lstrip("."))
        ]
    if isinstance(value, list):
        return [
            k for i, v in enumerate(value) for k in non_finite_numbers(v, f"{key}[{i}]")
        ]
    return []


# Checks JSON Schema cannot express; they run before any job starts.
for key in non_finite_numbers(config)[:1]:
    config_error(key, "must be a finite number (not .nan or .inf)")
if config["data"]["max_length"] > config["model"]["context_length"]:
    config_error(
        "data.max_length",
        f"{config['data']['max_length']} exceeds model.context_length="
        f"{config['model']['context_length']}; lower data.max_length",
    )
if config["model"]["emb_dim"] % config["model"]["n_heads"]:
    config_error(
        "model.n_heads",
        f"{config['model']['n_heads']} does not divide model.emb_dim={config['model']['emb_dim']}",
    )
if (
    config["corpus"]["local_path"]
    and not Path(config["corpus"]["local_path"]).is_file()
):
    config_error(
        "corpus.local_path",
        f"{config['corpus']['local_path']} is not a file; fix the path or set it to null to download",
    )
if config["corpus"]["local_path"] and config["corpus"]["sha256"]:
    # A local text is hashed now: a mismatch is a setting to fix, not a job to retry.
    local_sha256 = hashlib.sha256(
        Path(config["corpus"]["local_path"]).read_bytes()
    ).hexdigest()
    if local_sha256 != config["corpus"]["sha256"].lower():
        config_error(
            "corpus.sha256",
            f"{config['corpus']['local_path']} (corpus.local_path) has sha256 {local_sha256}, "
            f"not {config['corpus']['sha256']}. If it is the text you mean to study, set "
            f"corpus.sha256 to {local_sha256} (or null to skip the check); otherwise fix "
            "corpus.local_path",
        )

LOGS = "results/logs"
BENCH = "results/benchmarks"


def corpus_urls():
    """The local copy (a path, relative to the working directory or absolute) if set, else the URL."""
    local = config["corpus"]["local_path"]
    return [local] if local else [config["corpus"]["url"]]


def corpus_local_input():
    """The local copy as an input file, so that editing it reruns everything that depends on it."""
    local = config["corpus"]["local_path"]
    return [local] if local else []


def train_epochs_total():
    return config["training"]["num_epochs"] + config["resume"]["extra_epochs"]


# The models of the experiments: the one pretrained here, and each GPT-2 release.
TRAINED = "trained"
MODELS = {
    TRAINED: "results/pretrain/checkpoint.pt",
    **{
        f"gpt2-{size}": f"results/gpt2/{size}/model.safetensors"
        for size in config["gpt2"]["sizes"]
    },
}
GPT2_MODELS = [name for name in MODELS if name != TRAINED]
HEATMAP_METRICS = [
    "distinct_1",
    "distinct_2",
    "repetition_rate",
    "mean_logprob",
    "verbatim_span",
    "unique_text_fraction",
]


def model_mem_mb(wildcards, input):
    """Memory for jobs holding models: the weights (memory-mapped) twice over, plus room to work."""
    return 2000 + 2 * int(input.size_mb)


def large_model_gpu(wildcards, input):
    """A GPU for jobs on models over 1 GB (GPT-2 774M and 1558M), where it pays off."""
    return config["resources"]["gpu"] if input.size_mb > 1000 else 0


def per_model(pattern, models=MODELS):
    return expand(pattern, model=models)


# Report notebook → the artifacts it reads (its papermill parameters).
REPORT_INPUTS = {
    "ex5_1_pizza": {
        "pizza_book_csv": "results/ex5_1/pizza_book.csv",
        "pizza_sweep_csv": "results/ex5_1/pizza_sweep.csv",
        "next_token_csv": "results/ex5_1/next_token.csv",
        "toy_png": "results/figures/ex5_1/toy_distributions.png",
        "sweep_png": "results/figures/ex5_1/pizza_sweep.png",
        "next_token_png": "results/figures/ex5_1/next_token.png",
    },
    "ex5_2_sweep": {
        "generations_csv": "results/ex5_2/generations.csv",
        "cells_csv": "results/ex5_2/cells.csv",
        "recommended_csv": "results/ex5_2/recommended.csv",
        "heatmap_pngs": expand(
            "results/figures/ex5_2/heatmap_{metric}.png", metric=HEATMAP_METRICS
        ),
    },
    "ex5_3_determinism": {
        "determinism_csv": "results/ex5_3/determinism.csv",
        "determinism_png": "results/figures/ex5_3/determinism.png",
    },
    "ex5_4_resume": {
        "history_csv": "results/resume/history.csv",
        "samples_csv": "results/resume/samples.csv",
        "verification_json": (
            "results/resume/verification.json" if config["resume"]["verify"] else ""
        ),
        "losses_png": "results/figures/losses.png",
    },
    "ex5_5_losses": {
        "losses_csv": "results/ex5_5/losses.csv",
        "losses_png": "results/figures/ex5_5/losses.png",
    },
    "ex5_6_sizes": {
        "generations_csv": "results/ex5_6/generations.csv",
        "summary_csv": "results/ex5_6/summary.csv",
        "side_by_side_csv": "results/ex5_6/side_by_side.csv",
        "book_reference_csv": "results/ex5_6/book_reference.csv",
        "sizes_png": "results/figures/ex5_6/sizes.png",
    },
}


def report_artifacts(wildcards):
    paths = []
    for value in REPORT_INPUTS[wildcards.report].values():
        paths += value if isinstance(value, list) else [value] if value else []
    return paths


def notebook_digest(wildcards):
    """Content hash of a report notebook: editing it re-renders that report (a params change)."""
    import hashlib

    path = (
        Path(workflow.basedir) / "workflow" / "notebooks" / f"{wildcards.report}.ipynb"
    )
    return hashlib.sha256(path.read_bytes()).hexdigest()


def all_targets():
    targets = [
        "results/pretrain/checkpoint.pt",
        "results/resume/checkpoint.pt",
        "results/figures/losses.png",
    ]
    targets += expand("results/reports/{report}.html", report=REPORT_INPUTS)
    if config["resume"]["verify"]:
        targets.append("results/resume/verification.json")
    return targets
