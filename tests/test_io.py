"""gptlab.io: atomic writes that respect the umask, clean up after killed writers and name a full disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from gptlab.io import NoSpaceError, atomic_open, atomic_write, check_writable, remove_orphans, write_json


@pytest.fixture
def umask():
    """``umask(value)`` for the rest of the test; the old one comes back afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask(tmp_path, umask, mask):
    from gptlab.experiments.losses import write_losses_csv
    from gptlab.io import write_table

    umask(mask)
    frame = pd.DataFrame(
        {
            "model": ["m"],
            "split": ["val"],
            "loss": [1.0],
            "perplexity": [2.7],
            "n_batches": [1],
            "n_tokens": [2],
        }
    )
    paths = [
        write_json({"a": 1}, tmp_path / "a.json"),
        atomic_write(tmp_path / "b.bin", lambda tmp: tmp.write_bytes(b"x")),
        write_table(frame, tmp_path / "t.csv"),
        tmp_path / "t.meta.json",
        write_losses_csv(frame, tmp_path / "losses.csv"),
    ]
    with atomic_open(tmp_path / "c.txt", "w") as f:
        f.write("c")
    paths.append(tmp_path / "c.txt")
    for path in paths:
        assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~mask), path.name


def test_checkpoints_follow_the_umask(tmp_path, umask, tiny_config):
    import torch

    from gptlab.model import GPTModel
    from gptlab.training.checkpoint import save_checkpoint

    umask(0o002)
    model = GPTModel(tiny_config)
    path = save_checkpoint(tmp_path / "c.pt", model, torch.optim.AdamW(model.parameters()), {})
    assert oct(path.stat().st_mode & 0o777) == oct(0o664)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_json({"v": 1}, tmp_path / "x.json")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(target, "w") as f:
        f.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


KILLED_WRITER = """
import sys, time
from gptlab.io import atomic_open
with atomic_open(sys.argv[1], "wb") as f:
    f.write(b"x" * 100_000)
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "big.pt"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "writing"
    (orphan,) = tmp_path.glob(".big.pt.*.tmp")
    assert remove_orphans(target) == []  # its writer is alive: left alone
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert orphan.exists() and not target.exists()
    write_json({"ok": True}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.pt"]


def test_temporary_files_of_other_hosts_are_removed_only_when_stale(tmp_path):
    target = tmp_path / "x.csv"
    fresh = tmp_path / ".x.csv.node7.1234.abcd1234.tmp"
    stale = tmp_path / ".x.csv.node8.1234.abcd1234.tmp"
    for path in (fresh, stale):
        path.write_bytes(b"partial")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    assert remove_orphans(target) == [stale]
    assert fresh.exists()


def test_full_disk_names_the_path_and_keeps_the_previous_file(full_disk):
    disk = full_disk(64 * 1024)
    target = write_json({"v": 1}, disk / "out.json")
    with pytest.raises(
        NoSpaceError, match=f"no space left on the file system of {disk} while writing {target}"
    ):
        atomic_write(target, lambda tmp: tmp.write_bytes(os.urandom(1 << 20)))
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert sorted(p.name for p in disk.iterdir()) == ["out.json"]


def test_file_size_limit_is_reported_like_a_full_disk(tmp_path):
    """Where no tmpfs can be mounted, RLIMIT_FSIZE fills up a file just the same (EFBIG)."""
    code = f"""
import resource, signal, torch
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
from gptlab.io import atomic_open, NoSpaceError
try:
    with atomic_open({str(tmp_path / "w.pt")!r}, "wb") as f:
        torch.save({{"w": torch.zeros(1 << 18)}}, f)
except NoSpaceError as err:
    print("NoSpaceError:", err)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert f"NoSpaceError: file-size limit reached on the file system of {tmp_path}" in out.stdout, out.stderr
    assert list(tmp_path.iterdir()) == []


def test_check_writable_tries_for_real(tmp_path):
    assert check_writable(tmp_path / "new" / "out.csv") == tmp_path / "new" / "out.csv"
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match=f"cannot write {blocker / 'out.csv'}"):
        check_writable(blocker / "out.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # the probe is gone
