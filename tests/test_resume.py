"""Checkpoint and exact resume: a resumed run equals an uninterrupted one, bit for bit."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gptlab.checkpoint import load_checkpoint
from gptlab.pretrain import intermediate_checkpoint, pretrain

RUNNER = Path(__file__).with_name("pretrain_runner.py")


@pytest.fixture(scope="module")
def text_file(tmp_path_factory, small_text):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text(small_text)
    return path


def settings(text_file, tiny, **overrides):
    base = dict(
        text_file=str(text_file),
        model_config=tiny,
        num_epochs=3,
        batch_size=2,
        max_length=tiny["context_length"],
        stride=tiny["context_length"],
        eval_freq=7,
        eval_iter=3,
        start_context="Every effort moves you",
    )
    return {**base, **overrides}


def run(cfg, out: Path, **popen):
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(RUNNER), json.dumps(cfg), str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(proc, expect=0):
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == expect, stderr[-3000:]
    return stdout


def assert_same_run(dir_a: Path, dir_b: Path):
    ha = json.loads((dir_a / "history.json").read_text())
    hb = json.loads((dir_b / "history.json").read_text())
    for key in ("train_losses", "val_losses", "track_tokens_seen", "eval_steps", "samples", "global_step"):
        assert ha[key] == hb[key], key
    a = load_checkpoint(dir_a / "final.pt")["model_state_dict"]
    b = load_checkpoint(dir_b / "final.pt")["model_state_dict"]
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, text_file):
    from tests.conftest import TINY_CONFIG

    out = tmp_path_factory.mktemp("uninterrupted")
    finish(run(settings(text_file, TINY_CONFIG), out))
    return out


@pytest.fixture(scope="module")
def uninterrupted_fast(tmp_path_factory, text_file):
    from tests.conftest import TINY_CONFIG

    out = tmp_path_factory.mktemp("uninterrupted_fast")
    finish(run(settings(text_file, TINY_CONFIG, fast=True), out))
    return out


def test_resume_after_n_epochs_in_new_process_is_bit_identical(
    tmp_path, text_file, tiny_config, uninterrupted
):
    first = tmp_path / "first"
    finish(run(settings(text_file, tiny_config, num_epochs=2), first))
    assert load_checkpoint(first / "final.pt")["train_state"]["epoch"] == 2
    resumed = tmp_path / "resumed"
    cfg = settings(text_file, tiny_config, num_epochs=3, resume_from=str(first / "final.pt"))
    finish(run(cfg, resumed))
    assert_same_run(resumed, uninterrupted)
    # and the continuation really trained: one more epoch than the checkpoint it started from
    assert json.loads((resumed / "history.json").read_text())["epoch"] == 3


@pytest.mark.parametrize("fast", [False, True], ids=["exact", "fast"])
def test_sigterm_mid_epoch_then_rerun_is_bit_identical(tmp_path, text_file, tiny_config, fast, request):
    uninterrupted = request.getfixturevalue("uninterrupted_fast" if fast else "uninterrupted")
    work, out = tmp_path / "work", tmp_path / "out"
    cfg = settings(text_file, tiny_config, work_dir=str(work), fast=fast)
    proc = run(cfg, out)
    # wait for the first evaluation line, then send SIGTERM as SLURM would
    line = proc.stdout.readline()
    assert line.startswith("Ep 1 (Step 000000)"), line
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGTERM)
    stdout = proc.stdout.read()
    proc.wait(timeout=120)
    assert proc.returncode == 3, proc.stderr.read()[-2000:]
    (latest_path,) = work.glob("latest-*.pt")
    latest = load_checkpoint(latest_path)
    assert latest["train_config"]["fast"] is fast
    stopped_at = latest["train_state"]["global_step"]
    assert 0 <= stopped_at and latest["train_state"]["epoch"] < 3 and not (out / "final.pt").exists()
    rerun_stdout = finish(run(cfg, out))
    assert_same_run(out, uninterrupted)
    # the rerun continued instead of starting over: it did not print step 0 again
    assert "(Step 000000)" not in rerun_stdout, (stdout, rerun_stdout)


def test_book_style_continuation_from_book_format(tmp_path, text_file, tiny_config, uninterrupted):
    """The book's exercise 5.4 way: model + optimizer only, loaders re-seeded, counters from 0."""
    ckpt = load_checkpoint(uninterrupted / "final.pt")
    book_file = tmp_path / "model_and_optimizer.pth"
    torch.save({k: ckpt[k] for k in ("model_state_dict", "optimizer_state_dict")}, book_file)
    out = tmp_path / "book"
    cfg = settings(text_file, tiny_config, num_epochs=1, resume_from=str(book_file), resume_mode="book")
    stdout = finish(run(cfg, out))
    hist = json.loads((out / "history.json").read_text())
    assert hist["global_step"] == hist["eval_steps"][-1] or hist["global_step"] > 0
    assert stdout.startswith("Ep 1 (Step 000000)")
    # it continued from trained weights: the first loss is far below an untrained model's ~10.8
    assert (
        hist["train_losses"][0] < json.loads((uninterrupted / "history.json").read_text())["train_losses"][0]
    )


def test_exact_resume_refuses_book_format(tmp_path, text_file, tiny_config, uninterrupted):
    ckpt = load_checkpoint(uninterrupted / "final.pt")
    book_file = tmp_path / "model_and_optimizer.pth"
    torch.save({k: ckpt[k] for k in ("model_state_dict", "optimizer_state_dict")}, book_file)
    proc = run(settings(text_file, tiny_config, num_epochs=4, resume_from=str(book_file)), tmp_path / "x")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "resume_mode='book'" in stderr


def test_fast_and_exact_runs_never_share_intermediate_checkpoints(tiny_config):
    train = dict(seed=123, learning_rate=4e-4, num_epochs=3)
    exact = intermediate_checkpoint("w", tiny_config, {**train, "fast": False}, None, "exact")
    quick = intermediate_checkpoint("w", tiny_config, {**train, "fast": True}, None, "exact")
    assert exact != quick
    # exact mode keeps the name it had before the switch existed, so older runs still resume
    assert exact == intermediate_checkpoint("w", tiny_config, train, None, "exact")


def test_exact_resume_refuses_the_other_mode(
    tmp_path, text_file, tiny_config, uninterrupted, uninterrupted_fast
):
    for made, other in ((uninterrupted, True), (uninterrupted_fast, False)):
        cfg = settings(text_file, tiny_config, num_epochs=4, resume_from=str(made / "final.pt"), fast=other)
        proc = run(cfg, tmp_path / f"x{other}")
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode != 0 and f"Resume with fast={not other}" in stderr


def test_book_style_continuation_keeps_each_modes_optimizer(
    text_file, tiny_config, uninterrupted, uninterrupted_fast
):
    """Loading a fused AdamW state must not make the exact mode's AdamW fused (or the reverse)."""
    text = text_file.read_text()
    common = dict(model_config=tiny_config, num_epochs=1, eval_freq=50, resume_mode="book", progress=False)
    _, optimizer, _, config = pretrain(
        text, resume_from=uninterrupted_fast / "final.pt", fast=False, **common
    )
    assert config["fast"] is False
    assert not optimizer.param_groups[0]["fused"] and not optimizer.param_groups[0]["foreach"]
    _, optimizer, _, config = pretrain(text, resume_from=uninterrupted / "final.pt", fast=True, **common)
    assert config["fast"] is True and optimizer.param_groups[0]["fused"]
