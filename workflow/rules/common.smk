# Config validation and target helpers shared by every rule file.
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


# Checks JSON Schema cannot express; they run before any job starts.
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

LOGS = "results/logs"
BENCH = "results/benchmarks"


def corpus_urls():
    """The local copy (as a file:// URL) when configured, else the download URL."""
    local = config["corpus"]["local_path"]
    return [Path(local).resolve().as_uri()] if local else [config["corpus"]["url"]]


def train_epochs_total():
    return config["training"]["num_epochs"] + config["resume"]["extra_epochs"]


# Report notebook → the artifacts it reads (its papermill parameters).
REPORT_INPUTS = {
    "ex5_4_resume": {
        "history_csv": "results/resume/history.csv",
        "samples_csv": "results/resume/samples.csv",
        "verification_json": (
            "results/resume/verification.json" if config["resume"]["verify"] else ""
        ),
        "losses_png": "results/figures/losses.png",
    },
}


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
