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
from gptlab.study.runs import Reference, run_pretraining, verify_resume
from gptlab.tokenizer import TOKENIZER_ID
from gptlab.training.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from gptlab.training.config import TrainConfig
from gptlab.training.loop import TrainingInterrupted
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
def two_epochs(tmp_path_factory, text_file):
    from tests.conftest import TINY_CONFIG

    out = tmp_path_factory.mktemp("two_epochs")
    finish(run(settings(text_file, TINY_CONFIG, num_epochs=2), out))
    return out


@pytest.fixture(scope="module")
def uninterrupted_fast(tmp_path_factory, text_file):
    from tests.conftest import TINY_CONFIG

    out = tmp_path_factory.mktemp("uninterrupted_fast")
    finish(run(settings(text_file, TINY_CONFIG, fast=True), out))
    return out


def test_resume_after_n_epochs_in_new_process_is_bit_identical(
    tmp_path, text_file, tiny_config, uninterrupted, two_epochs
):
    first = two_epochs
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


# Exercise 5.4's verification as the pipeline runs it: the pretraining process writes its checkpoint
# after 2 epochs, then trains a third in memory (the reference), which the resume must equal.


def study_outputs(folder: Path) -> tuple[Path, Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "checkpoint.pt", folder / "history.csv", folder / "samples.csv"


def pretrain_with_reference(text_file, tiny, folder: Path, work_dir=None):
    """``run_pretraining``: 2 epochs, then a 1-epoch in-memory reference; ``(pretrained, reference)``."""
    names = ("num_epochs", "batch_size", "max_length", "stride", "eval_freq", "eval_iter", "start_context")
    fields = {k: v for k, v in settings(text_file, tiny, num_epochs=2).items() if k in names}
    reference = Reference(1, *study_outputs(folder / "reference"))
    run_pretraining(
        text_file,
        *study_outputs(folder / "pretrained"),
        model_config=tiny,
        config=TrainConfig(**fields),
        device="cpu",
        work_dir=work_dir,
        reference=reference,
    )
    return folder / "pretrained", folder / "reference"


@pytest.fixture(scope="module")
def with_reference(tmp_path_factory, text_file):
    from tests.conftest import TINY_CONFIG

    return pretrain_with_reference(text_file, TINY_CONFIG, tmp_path_factory.mktemp("with_reference"))


def assert_same_checkpoint(path_a: Path, path_b: Path, rng: bool = False):
    a, b = load_checkpoint(path_a), load_checkpoint(path_b)
    assert a["train_state"] == b["train_state"]
    for name in b["model_state_dict"]:
        assert torch.equal(a["model_state_dict"][name], b["model_state_dict"][name]), name
    if rng:
        assert torch.equal(a["rng_state"]["torch_cpu"], b["rng_state"]["torch_cpu"])


def test_the_in_memory_reference_is_a_fresh_uninterrupted_run_and_leaves_the_pretraining_as_it_was(
    with_reference, uninterrupted, two_epochs
):
    pretrained, reference = with_reference
    # the reference equals a run of 3 epochs from scratch in a fresh process, bit for bit
    assert_same_checkpoint(reference / "checkpoint.pt", uninterrupted / "final.pt")
    # the 2-epoch checkpoint (RNG states included, which the resume restores) is a plain 2-epoch run's
    assert_same_checkpoint(pretrained / "checkpoint.pt", two_epochs / "final.pt", rng=True)
    assert load_checkpoint(reference / "checkpoint.pt")["reference"] == {
        "checkpoint_written_at_epoch": 2,
        "in_memory_since": {"epoch": 0, "batch_in_epoch": 0},
    }


@pytest.mark.parametrize("broken", [None, "rng", "position"], ids=["exact", "rng-not-restored", "batch-late"])
def test_the_verification_proves_an_exact_resume_and_catches_a_broken_one(
    tmp_path, text_file, tiny_config, with_reference, broken
):
    """The resume runs in a new process; ``broken`` injects a resume bug there (see pretrain_runner)."""
    pretrained, reference = with_reference
    cfg = settings(text_file, tiny_config, resume_from=str(pretrained / "checkpoint.pt"))
    finish(run({**cfg, "break_resume": broken} if broken else cfg, tmp_path))
    result = verify_resume(tmp_path / "final.pt", reference / "checkpoint.pt", tmp_path / "verification.json")
    assert json.loads((tmp_path / "verification.json").read_text()) == result
    assert result["epochs"] == 3 and result["resume_point_epoch"] == 2
    assert result["never_stopped_at_resume_point"] is True
    assert result["identical"] is result["proves_exact_resume"] is (broken is None)
    if broken:
        # the counters still agree; the weights and losses show the fault
        assert result["history_identical"]["global_step"] and result["parameters_differing"]
        assert not result["history_identical"]["train_losses"]


def test_a_reference_restored_at_the_resume_point_proves_nothing(tmp_path, with_reference):
    """Identical runs prove an exact resume only when the reference passed the resume point in memory."""
    _, reference = with_reference
    ckpt = load_checkpoint(reference / "checkpoint.pt")
    model = model_from_checkpoint(reference / "checkpoint.pt")

    def copy(name, **record):
        return save_checkpoint(
            tmp_path / name, model, None, ckpt["train_state"], ckpt["train_config"], **record
        )

    restored_at_2 = {"checkpoint_written_at_epoch": 2, "in_memory_since": {"epoch": 2, "batch_in_epoch": 0}}
    cases = {
        "restored.pt": (copy("restored.pt", reference=restored_at_2), False),
        "unrecorded.pt": (copy("unrecorded.pt"), None),
        "reference.pt": (reference / "checkpoint.pt", True),
    }
    for name, (made, proves) in cases.items():
        result = verify_resume(reference / "checkpoint.pt", made, tmp_path / f"{name}.json")
        assert result["identical"] is True and result["proves_exact_resume"] is proves, name
        assert result["meaning"] and result["never_stopped_at_resume_point"] is proves, name


def test_a_kill_during_the_reference_costs_one_epoch_not_the_pretraining(
    tmp_path, text_file, tiny_config, with_reference, monkeypatch, capfd
):
    """SIGTERM as the in-memory continuation starts, then a rerun: one epoch retrained, same outputs."""
    import gptlab.training.pretrain as pretraining

    train_model = pretraining.train_model

    def sigterm_at_the_continuation(*args, **kwargs):
        if args[5] == 3:  # num_epochs: the continuation past the 2 pretrained epochs
            signal.raise_signal(signal.SIGTERM)  # caught by gptlab: the run stops after its next step
        return train_model(*args, **kwargs)

    monkeypatch.setattr(pretraining, "train_model", sigterm_at_the_continuation)
    work = tmp_path / "work"
    with pytest.raises(TrainingInterrupted):
        pretrain_with_reference(text_file, tiny_config, tmp_path / "run", work)
    monkeypatch.undo()
    (latest,) = work.glob("latest-*.pt")
    assert load_checkpoint(latest)["train_state"]["epoch"] == 2  # stopped inside the third epoch
    assert load_checkpoint(latest)["train_state"]["batch_in_epoch"] == 1
    (kept,) = work.glob("epoch1-*.pt")
    assert not (tmp_path / "run/reference/checkpoint.pt").exists()
    for path in (tmp_path / "run").rglob("*"):  # Snakemake deletes the outputs of a failed job
        path.unlink() if path.is_file() else None
    capfd.readouterr()
    pretrained, reference = pretrain_with_reference(text_file, tiny_config, tmp_path / "run", work)
    out, err = capfd.readouterr()
    assert f"continuing from intermediate checkpoint {kept} (epoch 1)" in err
    assert "Ep 1 (" not in out and "Ep 2 (" in out  # epoch 1 not retrained
    for made, want in zip((pretrained, reference), with_reference, strict=True):
        assert_same_checkpoint(made / "checkpoint.pt", want / "checkpoint.pt")
        assert (made / "history.csv").read_bytes() == (want / "history.csv").read_bytes()
    assert load_checkpoint(reference / "checkpoint.pt")["reference"]["in_memory_since"]["epoch"] == 1


def test_a_run_with_a_reference_continues_only_a_checkpoint_from_before_its_stop(
    tmp_path, small_text, tiny_config, monkeypatch
):
    """Restored at its stop, the reference would share a broken restore: the kept epoch before is used."""
    import contextlib

    import gptlab.training.pretrain as pretraining
    from gptlab.model import GPTModel
    from gptlab.training.loop import TrainState

    config = TrainConfig(num_epochs=2, eval_freq=3, eval_iter=2).for_model(tiny_config)
    key = settings_key(small_text, tiny_config, config.record(small_text), None, "exact", "cpu")
    latest = intermediate_checkpoint(tmp_path, key)
    kept = latest.with_name("epoch1-" + latest.name.removeprefix("latest-"))
    model = GPTModel(tiny_config)
    optimizer = torch.optim.AdamW(model.parameters())
    for path, epoch in ((latest, 2), (kept, 1)):
        save_checkpoint(path, model, optimizer, TrainState(epoch=epoch).to_dict(), {}, settings_key=key)
    monkeypatch.setattr(pretraining._Run, "train", lambda self, state, *args: state)  # where it starts
    for then_epochs, start in ((0, 2), (1, 1)):
        stages = pretraining.pretrain_in_stages(
            small_text, model_config=tiny_config, config=config, then_epochs=then_epochs, work_dir=tmp_path
        )
        with contextlib.closing(stages):
            assert next(stages).in_memory_since == {"epoch": start, "batch_in_epoch": 0}, then_epochs
