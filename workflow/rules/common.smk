# Config validation and target helpers shared by every rule file.
import hashlib
import math
import os
import warnings
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

# `snakemake --report` evaluates each job's resources inside its own event loop, where Snakemake
# cannot size input files (`input.size_mb` in model_mem_mb, large_model_gpu): it leaves the value
# undetermined, as it should, and Python warns about the coroutine it did not run.
warnings.filterwarnings(
    "ignore",
    message=r"coroutine 'InputFiles\._predicated_size_files\.<locals>\.sizes' was never awaited",
    category=RuntimeWarning,
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
NON_FINITE = non_finite_numbers(config)
if NON_FINITE:
    config_error(NON_FINITE[0], "must be a finite number (not .nan or .inf)")
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


def workflow_file(path):
    """A file the workflow ships with, ``path`` relative to the repository, wherever the study runs.

    Outputs and logs are named relative to the working directory (``--directory``); the workflow's
    own files (notebooks) are found next to the Snakefile, and named relative to the working
    directory, so that in the repository itself they keep their plain names.
    """
    return os.path.relpath(Path(workflow.basedir) / path)


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


def reference_epochs():
    """Epochs the pretraining job trains on in memory for exercise 5.4's verification; 0 without it."""
    return config["resume"]["extra_epochs"] if config["resume"]["verify"] else 0


# The models of the experiments: the one pretrained here, and each GPT-2 release.
TRAINED = "trained"
GPT2_MODELS = [f"gpt2-{size}" for size in config["gpt2"]["sizes"]]
MODEL_NAMES = [TRAINED, *GPT2_MODELS]
HEATMAP_METRICS = [
    "distinct_1",
    "distinct_2",
    "repetition_rate",
    "mean_logprob",
    "verbatim_span",
    "seed_disagreement",
]


def model_file(wildcards):
    """The file of model ``{model}``: the pretraining checkpoint, or a converted GPT-2 release."""
    if wildcards.model == TRAINED:
        return rules.pretrain.output.checkpoint
    return rules.convert_gpt2.output[0].format(
        size=wildcards.model.removeprefix("gpt2-")
    )


def model_mem_mb(wildcards, input):
    """Memory for jobs holding models: the weights (memory-mapped) twice over, plus room to work."""
    return 2000 + 2 * int(input.size_mb)


def large_model_gpu(wildcards, input):
    """A GPU for jobs on models over 1 GB (GPT-2 774M and 1558M), where it pays off."""
    return config["resources"]["gpu"] if input.size_mb > 1000 else 0


def per_model(pattern):
    """``pattern`` (a rule's output with ``{model}``) for every model of the experiments."""
    return expand(pattern, model=MODEL_NAMES)


# Reports: REPORT_INPUTS (report.smk) maps each notebook to the artifacts it reads.
def report_artifacts(wildcards):
    paths = []
    for value in REPORT_INPUTS[wildcards.report].values():
        paths += value if isinstance(value, list) else [value] if value else []
    return paths


def notebook_digest(wildcards):
    """Content hash of a report notebook: editing it re-renders that report (a params change)."""
    path = workflow_file(f"workflow/notebooks/{wildcards.report}.ipynb")
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
