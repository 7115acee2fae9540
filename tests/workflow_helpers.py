"""Helpers for tests that run the Snakemake workflow in a scratch copy of the repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from gptlab.testing import TINY_GPT2_SHAPES  # the tiny study's synthetic GPT-2 shapes, one per size

__all__ = [
    "REPO",
    "SNAKEMAKE",
    "TINY_GPT2_SHAPES",
    "TINY_RUNS",
    "TINY_RUN_NAMES",
    "copy_workflow",
    "prepare_tiny_study",
    "snakemake",
    "write_config",
]

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
# The tiny training study: 2 variants x 3 seeds, a thread each, so that the 6 runs train side by side.
TINY_RUNS = {
    "seeds": [123, 124, 125],
    "variants": [{"name": "no-dropout", "model": {"drop_rate": 0.0}}],
    "threads": 1,
}
TINY_RUN_NAMES = [f"{v}-seed{s}" for v in ("book", "no-dropout") for s in TINY_RUNS["seeds"]]
WORKFLOW_FILES = ("Snakefile", "config", "workflow", "envs", "src", "profiles")


def copy_workflow(dest: Path, source: Path = REPO) -> Path:
    """Copy what the workflow needs (not results/ or .venv) from ``source`` to ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = source / name
        if not src.exists() and not src.is_symlink():
            continue  # an older revision may lack a folder (e.g. profiles/)
        if src.is_symlink():
            (dest / name).symlink_to(src.readlink())
        elif src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def write_config(path: Path, base: str | Path = "config/test.yaml", **sections) -> Path:
    """A config file: ``base`` (in the repo, or absolute) with ``sections`` merged in, one level deep."""
    config = yaml.safe_load((REPO / base).read_text())
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path.write_text(yaml.safe_dump(config))
    return path


def prepare_tiny_study(
    workdir: Path,
    corpus_text: str | None = None,
    base: str = "config/test.yaml",
    source: Path = REPO,
    mirror: Path | None = None,
    **sections,
) -> Path:
    """Copy the workflow to ``workdir`` and write its tiny offline config; return the config path.

    The corpus is The Verdict from ``../shared/data`` when present, else a generated text
    (or ``corpus_text``). GPT-2 comes from a ``file://`` mirror of synthetic releases, fetched
    by the real download code: the tiny shapes written into ``workdir``, or ``mirror`` (a folder
    with a release per size of :data:`TINY_GPT2_SHAPES`). ``sections`` are merged into ``base``
    (a config in ``source``, the checkout whose workflow is copied).
    """
    from gptlab.testing import write_synthetic_gpt2_checkpoint

    copy_workflow(workdir, source)
    verdict = REPO.parent / "shared" / "data" / "the-verdict.txt"
    if corpus_text is None and verdict.is_file():
        # A copy in the study's folder, named relative to it: tests may edit it (or a copy of the
        # whole study) without touching the shared file. Like any text of one's own, no known hash.
        shutil.copy2(verdict, workdir / "the-verdict.txt")
        corpus = {"local_path": "the-verdict.txt", "sha256": None}
    else:
        from tests.conftest import make_text

        path = workdir / "corpus.txt"
        path.write_text(corpus_text or make_text(4000))
        corpus = {"local_path": str(path), "sha256": None}
    if mirror is None:
        mirror = workdir / "gpt2-mirror"
        for size, shape in TINY_GPT2_SHAPES.items():
            write_synthetic_gpt2_checkpoint(mirror / size, **shape)
    gpt2 = {"sizes": list(TINY_GPT2_SHAPES), "base_urls": [mirror.as_uri()], "check_known_sizes": False}
    return write_config(workdir / "study.yaml", source / base, corpus=corpus, gpt2=gpt2, **sections)


def snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, "--directory", str(workdir), "--snakefile", str(workdir / "Snakefile"), *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
