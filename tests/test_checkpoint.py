import os

import pytest
import torch

from gptlab.checkpoint import (
    CheckpointError,
    atomic_write,
    capture_rng_state,
    load_checkpoint,
    load_into,
    model_from_checkpoint,
    restore_rng_state,
    save_book_checkpoint,
    save_checkpoint,
)
from gptlab.model import GPTModel


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
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)
    path.with_name(path.name + ".sha256").unlink()  # without the digest, torch's reader still refuses it
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_checkpoint(path)


def test_flipped_byte_is_refused(saved):
    path, *_ = saved
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
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
    assert set(ckpt) == {"model_state_dict", "optimizer_state_dict"}
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
