import os

import pytest
import torch

from gptlab.io import atomic_write
from gptlab.model import GPTModel
from gptlab.training.checkpoint import (
    DIGEST,
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    load_into,
    model_from_checkpoint,
    restore_rng_state,
    save_book_checkpoint,
    save_checkpoint,
)
from tests.conftest import TINY_CONFIG as TINY


@pytest.fixture
def saved(tmp_path, tiny_config):
    torch.manual_seed(0)
    model = GPTModel(tiny_config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "ckpt.pt", model, opt, {"epoch": 1, "global_step": 4}, {"lr": 1e-3})
    return path, model, opt


def test_round_trip(saved, tiny_config):
    path, model, opt = saved
    ckpt = load_checkpoint(path, model_config=tiny_config)
    assert ckpt["train_state"] == {"epoch": 1, "global_step": 4}
    restored = model_from_checkpoint(path)
    idx = torch.randint(0, 100, (1, 8))
    model.eval()
    assert torch.equal(restored(idx), model(idx))
    opt2 = torch.optim.AdamW(restored.parameters(), lr=1e-3)
    load_into(ckpt, restored, opt2)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert not list(path.parent.glob(".*.tmp"))


def test_truncated_checkpoint_is_refused(saved):
    path, *_ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot be read .* truncated, damaged") as err:
        load_checkpoint(path)
    assert "delete" not in str(err.value) and f"mv {path} {path}.damaged" in str(err.value)


def test_flipped_byte_in_tensor_data_is_refused(saved):
    """No sidecar anywhere: the digest inside the file catches a byte that torch would load silently."""
    path, model, _ = saved
    data = bytearray(path.read_bytes())
    weights = model.state_dict()["trf_blocks.0.att.W_query.weight"].numpy().tobytes()
    at = data.find(weights) + len(weights) // 2
    assert at > len(weights) // 2  # the tensor's bytes are stored as they are
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    assert list(path.parent.iterdir()) == [path]
    torch.load(path, weights_only=True)  # torch's own reader does not notice
    with pytest.raises(CheckpointError, match="is damaged: its content .* differs from the digest") as err:
        load_checkpoint(path)
    assert "delete" not in str(err.value)


def test_digest_covers_values_beside_tensors(saved):
    path, *_ = saved
    raw = torch.load(path, weights_only=True)
    raw["train_state"]["epoch"] = 7  # the digest stays the old one
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="is damaged"):
        load_checkpoint(path)


def test_version_1_checkpoints_with_a_sidecar_still_load_and_are_checked(saved):
    import hashlib

    path, *_ = saved
    raw = torch.load(path, weights_only=True)
    del raw[DIGEST]
    raw["version"] = 1
    torch.save(raw, path)
    sidecar = path.with_name(path.name + ".sha256")
    sidecar.write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")
    assert load_checkpoint(path)["train_state"]["epoch"] == 1
    sidecar.write_text("0" * 64 + f"  {path.name}\n")
    with pytest.raises(CheckpointError, match="does not match its sha256 sidecar"):
        load_checkpoint(path)


def test_incompatible_model_config_is_named(saved, tiny_config):
    path, *_ = saved
    with pytest.raises(CheckpointError, match="emb_dim: checkpoint 32 vs requested 64"):
        load_checkpoint(path, model_config={**tiny_config, "emb_dim": 64})
    other = GPTModel({**tiny_config, "n_layers": 1})
    with pytest.raises(CheckpointError, match="does not fit"):
        load_into(load_checkpoint(path), other)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_arbitrary_pickles_are_not_executed(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model_state_dict": _Evil()}, path)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)


def test_book_format_loads(tmp_path, tiny_config):
    torch.manual_seed(1)
    model = GPTModel(tiny_config)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
    save_book_checkpoint(tmp_path / "model_and_optimizer.pth", model, opt)
    ckpt = load_checkpoint(tmp_path / "model_and_optimizer.pth")
    assert set(ckpt) == {"model_state_dict", "optimizer_state_dict", DIGEST}  # the book reads two keys
    with pytest.raises(CheckpointError, match="pass model_config"):
        model_from_checkpoint(tmp_path / "model_and_optimizer.pth")
    restored = model_from_checkpoint(tmp_path / "model_and_optimizer.pth", model_config=tiny_config)
    assert torch.equal(restored.out_head.weight, model.out_head.weight)


def test_not_a_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="no 'model_state_dict'"):
        load_checkpoint(tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.pt"

    def boom(tmp):
        tmp.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, boom)
    assert list(tmp_path.iterdir()) == []


def test_rng_state_round_trip():
    import random

    import numpy as np

    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    state = capture_rng_state()
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(99), random.seed(99), np.random.seed(99)
    restore_rng_state(state)
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], got[0]) and expected[1:] == got[1:]


SAVER = """
import sys, torch
from gptlab.training.checkpoint import save_checkpoint
from gptlab.model import GPTModel
from tests.conftest import TINY_CONFIG
models = []
for seed in (0, 1):
    torch.manual_seed(seed)
    models.append(GPTModel(TINY_CONFIG))
print("ready", flush=True)
i = 0
while True:
    save_checkpoint(sys.argv[1], models[i % 2], None, {"epoch": i % 2})
    i += 1
"""


def _start_saver(path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(path)], cwd=repo, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_kill_at_any_moment_of_a_save_leaves_a_checkpoint_that_loads(tmp_path):
    """SIGKILL a process that saves in a loop, at many moments: the file is always one whole checkpoint."""
    import random
    import signal
    import time

    path = tmp_path / "ckpt.pt"
    rng = random.Random(0)
    epochs = set()
    for _ in range(12):
        proc = _start_saver(path)
        time.sleep(0.3 + rng.random() * 0.4)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        epochs.add(load_checkpoint(path)["train_state"]["epoch"])  # never "damaged"
    assert epochs <= {0, 1}
    save_checkpoint(path, GPTModel(TINY), None, {"epoch": 5})  # the next save cleans up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_a_reader_racing_a_writer_never_sees_a_damaged_checkpoint(tmp_path):
    import time

    path = tmp_path / "ckpt.pt"
    proc = _start_saver(path)
    try:
        while not path.exists():
            time.sleep(0.01)
        loads, deadline = 0, time.monotonic() + 4
        while time.monotonic() < deadline:
            assert load_checkpoint(path)["train_state"]["epoch"] in (0, 1)
            loads += 1
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert loads > 20


def test_a_full_disk_names_the_checkpoint_and_keeps_the_previous_one(full_disk, saved):
    from gptlab.io import NoSpaceError

    _, model, opt = saved
    disk = full_disk(2 * 1024 * 1024)
    small = GPTModel({**TINY, "n_layers": 1, "emb_dim": 8, "n_heads": 2, "vocab_size": 500})
    path = save_checkpoint(disk / "ckpt.pt", small, None, {"epoch": 1})
    with pytest.raises(
        NoSpaceError, match=f"no space left on the file system of {disk} while writing {path}"
    ):
        save_checkpoint(path, model, opt, {"epoch": 2})  # ~20 MB with the optimizer: does not fit
    assert load_checkpoint(path)["train_state"]["epoch"] == 1
    assert sorted(p.name for p in disk.iterdir()) == ["ckpt.pt"]
