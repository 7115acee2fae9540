# Config validation and target helpers shared by every rule file.
import hashlib
import math
import os
import re
import warnings
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
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


def config_error(key, message):
    raise ValueError(f"config error at {key}: {message}")


CONFIG_SCHEMA = yaml.safe_load(
    Path(workflow.source_path("../schemas/config.schema.yaml")).read_text()
)


def check_schema(cfg, where=""):
    """The first schema violation in ``cfg`` as a config error naming its key (``where`` prefixes it)."""
    error = best_match(Draft202012Validator(CONFIG_SCHEMA).iter_errors(cfg))
    if error is not None:
        key = "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path
        )
        config_error(f"{where}{key.lstrip('.')}" or "(top level)", error.message)


check_schema(config)
validate(config, workflow.source_path("../schemas/config.schema.yaml"))


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


def check_settings(cfg, where=""):
    """The cross-setting checks of a run's model and data sections; ``where`` prefixes the keys named."""
    if cfg["data"]["max_length"] > cfg["model"]["context_length"]:
        config_error(
            f"{where}data.max_length",
            f"{cfg['data']['max_length']} exceeds model.context_length="
            f"{cfg['model']['context_length']}; lower data.max_length",
        )
    if cfg["model"]["emb_dim"] % cfg["model"]["n_heads"]:
        config_error(
            f"{where}model.n_heads",
            f"{cfg['model']['n_heads']} does not divide model.emb_dim={cfg['model']['emb_dim']}",
        )


check_settings(config)
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


# Training studies (config `runs`): every run of variants x seeds, planned and checked before any job.
RUN_SECTIONS = ("model", "data", "training")
# Without a `runs` section there is no study, but its settings still have the schema's defaults.
RUN_OPTIONS = config.get("runs") or {
    key: spec["default"]
    for key, spec in CONFIG_SCHEMA["properties"]["runs"]["properties"].items()
    if "default" in spec
}


def never_empty(names):
    """A wildcard constraint matching exactly ``names`` (nothing at all when there are none)."""
    return "|".join(map(re.escape, names)) or "(?!)"


def corpus_id(path):
    """A readable, stable name for the tokenized copy of the corpus at ``path``."""
    stem = re.sub(r"[^a-z0-9]+", "-", Path(path).stem.lower()).strip("-") or "corpus"
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:8]
    return f"{stem}-{digest}"


def corpus_files(path):
    """The text files of a corpus: the file itself, or a folder's .txt files (its inputs)."""
    path = Path(path)
    return [str(path)] if path.is_file() else sorted(map(str, path.rglob("*.txt")))


def variant_settings(variant, index):
    """This config's model, data and training sections with ``variant``'s overrides, checked like the config."""
    where = f"runs.variants[{index}]"
    for section in RUN_SECTIONS:
        unknown = sorted(set(variant.get(section, {})) - set(config[section]))
        if unknown:
            config_error(
                f"{where}.{section}.{unknown[0]}",
                f"not a {section} setting; it has {', '.join(config[section])}",
            )
    if "seed" in variant.get("training", {}):
        config_error(
            f"{where}.training.seed",
            "a run's seed comes from runs.seeds; remove it here",
        )
    settings = {s: {**config[s], **variant.get(s, {})} for s in RUN_SECTIONS}
    check_schema({**config, **settings}, f"{where}.")
    check_settings(settings, f"{where}.")
    path = variant.get("corpus", {}).get("path")
    if path and not corpus_files(path):
        config_error(
            f"{where}.corpus.path",
            f"{path} is neither a file nor a folder holding .txt files; fix the path",
        )
    return {**settings, "corpus": path}


def plan_runs():
    """Every run of the study, by name: its variant, seed, settings and corpus."""
    if "runs" not in config:
        return {}
    variants = [{"name": RUN_OPTIONS["baseline"]}, *RUN_OPTIONS["variants"]]
    names = [v["name"] for v in variants]
    for index, name in enumerate(names[1:]):
        if name in names[: index + 1]:
            what = "runs.baseline" if name == names[0] else "another variant"
            config_error(
                f"runs.variants[{index}].name",
                f"{name!r} is already the name of {what}",
            )
    runs = {}
    for index, variant in enumerate(variants):
        settings = variant_settings(variant, index - 1) if index else None
        settings = settings or {**{s: config[s] for s in RUN_SECTIONS}, "corpus": None}
        for seed in map(int, RUN_OPTIONS["seeds"]):
            training = {**settings["training"], "seed": seed}
            name = f"{variant['name']}-seed{seed}"
            runs[name] = {**settings, "training": training, "variant": variant["name"]}
            runs[name]["seed"] = seed
    return runs


RUNS = plan_runs()
RUN_NAMES = list(RUNS)
VARIANT_NAMES = list(dict.fromkeys(run["variant"] for run in RUNS.values()))
CORPORA = {corpus_id(p): p for p in {r["corpus"] for r in RUNS.values()} - {None}}


def run_corpus(wildcards):
    """The run's corpus: the study's text, or its variant's corpus tokenized."""
    path = RUNS[wildcards.run]["corpus"]
    if path is None:
        return rules.download_corpus.output[0]
    return rules.tokenize_corpus.output.meta.format(corpus=corpus_id(path))


def run_record(wildcards):
    """What names a run in its metrics: variant, seed, and its settings."""
    run = RUNS[wildcards.run]
    corpus = run["corpus"] or config["corpus"]["local_path"] or config["corpus"]["url"]
    settings = {s: run[s] for s in RUN_SECTIONS}
    return {
        "variant": run["variant"],
        "seed": run["seed"],
        "settings": {**settings, "corpus": corpus},
    }


def run_mem_mb(wildcards):
    """Memory of a run: weights, gradients and AdamW's two moments (16 bytes a parameter), and the logits."""
    run = RUNS[wildcards.run]
    m, d = run["model"], run["data"]
    dim, vocab = m["emb_dim"], m["vocab_size"]
    params = 2 * vocab * dim + m["context_length"] * dim + 12 * m["n_layers"] * dim**2
    logits = d["batch_size"] * d["max_length"] * vocab * 4 * 6
    return 2000 + (16 * params + logits) // 10**6


def every_run(output):
    """``output`` of rule train_run (its name) for every run."""
    return expand(getattr(rules.train_run.output, output), run=RUN_NAMES)


def training_study_targets(wildcards):
    """What `snakemake training_study` makes: the summary, its figure and the report."""
    if not RUNS:
        config_error(
            "runs", "not set: the config has no training study (see config/seeds.yaml)"
        )
    summary, figure = rules.summarize_runs.output, rules.plot_training_study.output
    return [*summary, *figure, "results/reports/training_study.html"]
