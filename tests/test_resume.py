"""Checkpoint and exact resume: a resumed run equals an uninterrupted one, bit for bit."""

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gptlab.model import GPT_CONFIG_124M
from gptlab.tokenizer import TOKENIZER_ID
from gptlab.training.checkpoint import load_checkpoint
from gptlab.training.config import TrainConfig
from gptlab.training.pretrain import intermediate_checkpoint, pretrain, settings_key

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


def test_intermediate_checkpoints_are_keyed_by_everything_that_determines_the_result(tmp_path, tiny_config):
    train = dict(seed=123, learning_rate=4e-4, num_epochs=3, fast=False, corpus_sha256="a" * 64)
    base = settings_key("text", tiny_config, train, None, "exact", "cpu")
    path = intermediate_checkpoint("w", base)
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"one")
    other_ckpt = tmp_path / "d.pt"
    other_ckpt.write_bytes(b"two")
    variants = [
        settings_key("text", tiny_config, {**train, "fast": True}, None, "exact", "cpu"),
        settings_key("text", tiny_config, {**train, "corpus_sha256": "b" * 64}, None, "exact", "cpu"),
        settings_key("text", tiny_config, {**train, "learning_rate": 1e-3}, None, "exact", "cpu"),
        settings_key("text", {**tiny_config, "drop_rate": 0.0}, train, None, "exact", "cpu"),
        settings_key("text", tiny_config, train, ckpt, "exact", "cpu"),
        settings_key("text", tiny_config, train, other_ckpt, "exact", "cpu"),
        settings_key("text", tiny_config, train, ckpt, "book", "cpu"),
        settings_key("text", tiny_config, train, None, "exact", "meta"),
    ]
    names = {intermediate_checkpoint("w", key) for key in variants}
    assert path not in names and len(names) == len(variants)
    # the number of epochs is not part of the key: a longer run continues a shorter one
    assert path == intermediate_checkpoint(
        "w", settings_key("t", tiny_config, {**train, "num_epochs": 9}, None, "exact", "cpu")
    )
    assert base["versions"]["torch"] == torch.__version__ and base["versions"]["results"] >= 1


def test_train_config_is_the_books_by_default_and_names_a_bad_field(tiny_config):
    book = TrainConfig().for_model(GPT_CONFIG_124M)
    assert dataclasses.astuple(book) == (
        10,
        0.9,
        2,
        256,
        256,
        123,
        0.0004,
        0.1,
        5,
        5,
        "Every effort moves you",
        False,
    )
    assert list(book.record("text")) == [
        *(f.name for f in dataclasses.fields(TrainConfig)),
        "corpus_sha256",
        "tokenizer",
    ]
    assert TrainConfig(max_length=16).for_model(tiny_config).stride == 16
    bad = [
        (dict(num_epochs=0), "num_epochs=0 must be >= 1"),
        (dict(eval_iter=0), "eval_iter=0 must be >= 1"),
        (dict(stride=0), "stride=0 must be >= 1"),
        (dict(train_ratio=1.0), "train_ratio=1.0 must be strictly between 0 and 1"),
        (dict(weight_decay=float("nan")), "weight_decay=nan must be a finite number"),
        (dict(start_context=""), "start_context='' must be a non-empty string"),
    ]
    for fields, message in bad:
        with pytest.raises(ValueError, match=message):
            TrainConfig(**fields)
    with pytest.raises(ValueError, match="max_length=64 exceeds the model's context_length=32"):
        TrainConfig(max_length=64).for_model(tiny_config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        book.seed = 1
    with pytest.raises(TypeError, match="learning_rat: not fields of TrainConfig"):
        pretrain("text", model_config=tiny_config, learning_rat=1e-3)


def _pretrain(text, tiny, work, **kw):
    common = dict(model_config=tiny, num_epochs=2, eval_freq=3, eval_iter=2, progress=False, work_dir=work)
    return pretrain(text, **{**common, **kw})


def test_a_changed_text_never_continues_the_old_texts_checkpoint(tmp_path, small_text, tiny_config, capfd):
    """The stale-checkpoint bug: same work dir, same settings, another corpus."""
    work = tmp_path / "work"
    _pretrain(small_text, tiny_config, work)
    other_text = small_text.replace("painter", "sculptor")
    capfd.readouterr()
    _, _, state, config = _pretrain(other_text, tiny_config, work)
    assert "continuing from intermediate checkpoint" not in capfd.readouterr().err
    _, _, fresh, _ = _pretrain(other_text, tiny_config, None)
    assert state.train_losses == fresh.train_losses and state.samples == fresh.samples
    assert config["corpus_sha256"] == hashlib.sha256(other_text.encode()).hexdigest()
    assert config["tokenizer"] == TOKENIZER_ID
    keys = [load_checkpoint(p)["settings_key"] for p in work.glob("latest-*.pt")]
    assert sorted(k["train"]["corpus_sha256"] for k in keys) == sorted(
        hashlib.sha256(t.encode()).hexdigest() for t in (small_text, other_text)
    )


def test_fewer_epochs_than_the_intermediate_checkpoint_holds_trains_from_the_start(
    tmp_path, small_text, tiny_config, capfd
):
    work = tmp_path / "work"
    _pretrain(small_text, tiny_config, work, num_epochs=3)
    capfd.readouterr()
    _, _, state, config = _pretrain(small_text, tiny_config, work, num_epochs=2)
    assert "holds 3 epochs, more than the 2 asked for" in capfd.readouterr().err
    assert state.epoch == config["num_epochs"] == 2
    _, _, fresh, _ = _pretrain(small_text, tiny_config, None, num_epochs=2)
    assert state.train_losses == fresh.train_losses
    # and a longer run continues the shorter one's checkpoint, as before
    _, _, longer, _ = _pretrain(small_text, tiny_config, work, num_epochs=3)
    assert "continuing from intermediate checkpoint" in capfd.readouterr().err and longer.epoch == 3


def test_exact_resume_refuses_a_checkpoint_of_another_text_or_settings(tmp_path, small_text, tiny_config):
    from gptlab.training.checkpoint import CheckpointError, save_checkpoint

    model, optimizer, state, config = _pretrain(small_text, tiny_config, None, num_epochs=1)
    first = save_checkpoint(tmp_path / "first.pt", model, optimizer, state.to_dict(), config)
    with pytest.raises(CheckpointError, match="corpus_sha256: checkpoint '[0-9a-f]+' vs now"):
        _pretrain(small_text + " More.", tiny_config, None, resume_from=first)
    with pytest.raises(CheckpointError, match="learning_rate: checkpoint 0.0004 vs now 0.001"):
        _pretrain(small_text, tiny_config, None, resume_from=first, learning_rate=1e-3)
    # the book's way continues from the weights whatever the text
    _pretrain(small_text + " More.", tiny_config, None, num_epochs=1, resume_from=first, resume_mode="book")


def test_non_finite_settings_and_losses_stop_training_with_a_clear_error(small_text, tiny_config):
    from gptlab.training.loop import NonFiniteLossError

    with pytest.raises(ValueError, match="learning_rate=inf must be a finite number"):
        _pretrain(small_text, tiny_config, None, learning_rate=float("inf"))
    with pytest.raises(NonFiniteLossError, match="training loss is nan at epoch 1, step 1:"):
        _pretrain(small_text, tiny_config, None, learning_rate=1e30)


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
