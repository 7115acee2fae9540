"""The ``gptlab`` command, on a tiny checkpoint and a synthetic GPT-2 served from 127.0.0.1.

Most runs call ``gptlab.cli.main`` in this process (one torch import for all); a
few run ``python -m gptlab.cli`` and the installed ``gptlab`` script as separate
processes, to check exit codes, stderr and streamed stdout as a shell sees them.
"""

# ruff: noqa: F811  (the fixtures imported from tests.gpt2_fixtures are used as arguments)

from __future__ import annotations

import errno
import io
import math
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import zipfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pandas as pd
import pytest
import torch

from gptlab.cli import main
from gptlab.experiments.common import load_model
from gptlab.experiments.losses import evaluate_losses
from gptlab.generation import generate, generate_text_simple
from gptlab.gpt2 import FILENAMES, load_gpt2
from gptlab.testing import FileServer
from gptlab.tokenizer import get_tokenizer
from gptlab.training.checkpoint import save_checkpoint
from tests.conftest import EXPERIMENT_CONFIG, make_model, make_text
from tests.gpt2_fixtures import converted, synthetic_ckpt  # noqa: F401  (fixtures)

PROMPT = "Every effort moves you"
CPU = ("--device", "cpu")

pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*args, capsys):
    """Run ``gptlab ARGS`` in this process: ``(exit code, stdout, stderr)``."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def cli_process(*args, script=None, timeout=300, prefix=(), preexec_fn=None):
    """Run ``gptlab ARGS`` as its own process (``python -m gptlab.cli`` or the installed script).

    ``prefix`` goes before the command (e.g. :func:`without_root_privileges`); ``preexec_fn``
    runs in the child before it starts (umask, resource limits).
    """
    command = [*prefix, *([script] if script else [sys.executable, "-m", "gptlab.cli"])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        command + [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        preexec_fn=preexec_fn,
    )


def without_root_privileges() -> list[str]:
    """A command prefix under which file permissions apply to the process, even when it runs as root.

    Root ignores permission bits (capabilities CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH); setpriv
    drops both from the child. Skips the test where that is not possible.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root, which ignores permission bits, and setpriv (util-linux) is missing")
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"running as root and cannot drop CAP_DAC_OVERRIDE here: {probe.stderr.strip()}")
    return prefix


def flip_checkpoint_tensor_byte(path: Path) -> None:
    """Flip one bit in the middle of the largest tensor stored in a torch.save file (a zip archive)."""
    with zipfile.ZipFile(path) as archive:
        entry = max(
            (i for i in archive.infolist() if "/data/" in i.filename and not i.filename.endswith(".pkl")),
            key=lambda i: i.file_size,
        )
    assert entry.compress_type == zipfile.ZIP_STORED  # torch stores tensors uncompressed
    with open(path, "r+b") as f:
        f.seek(entry.header_offset)
        header = f.read(30)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        _flip(f, entry.header_offset + 30 + name_len + extra_len + entry.file_size // 2)


def flip_safetensors_data_byte(path: Path) -> None:
    """Flip one bit in the middle of the tensor data of a .safetensors file (after its JSON header)."""
    with open(path, "r+b") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        start, size = 8 + header_len, path.stat().st_size
        assert size > start
        _flip(f, start + (size - start) // 2)


def _flip(f, offset: int) -> None:
    f.seek(offset)
    byte = f.read(1)[0]
    f.seek(offset)
    f.write(bytes([byte ^ 0x01]))


def assert_one_line_error(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gptlab: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def decode(ids) -> str:
    return get_tokenizer().decode(list(ids))


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A gptlab checkpoint of a tiny GPT-2-vocabulary model with a short loss history."""
    model = make_model(seed=5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.05)
    state = {
        "epoch": 2,
        "batch_in_epoch": 1,
        "epoch_seed": 9,
        "global_step": 7,
        "tokens_seen": 123456,
        "train_losses": [9.5, 8.25, 7.125, 6.0625],
        "val_losses": [9.75, 8.5, 7.375, 6.8125],
        "track_tokens_seen": [1000, 2000, 3000, 4000],
        "eval_steps": [0, 2, 4, 6],
        "eval_epochs": [1, 1, 2, 2],
        "samples": ["Every effort moves you forward"],
    }
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model, optimizer, state, {"num_epochs": 3, "learning_rate": 3e-4})
    return path


@pytest.fixture(scope="module")
def release(synthetic_ckpt, tmp_path_factory):
    """The synthetic GPT-2 served over HTTP as '124M', fetched and converted with the command."""
    base = tmp_path_factory.mktemp("release")
    mirror = base / "mirror"
    shutil.copytree(synthetic_ckpt, mirror / "124M")
    root = base / "gpt2"
    tf_dir = root / "124M" / "tf"
    out, err = io.StringIO(), io.StringIO()
    with FileServer(mirror, content_md5=True) as server, redirect_stdout(out), redirect_stderr(err):
        download = main(
            ["download", "--size", "124M", "--dir", str(tf_dir), "--mirror", server.base_url]
            + ["--no-check-known-sizes", "--quiet"]
        )
    requested = sorted({path for path, _, status in server.requests if status == 200})
    download_out = out.getvalue()
    out.seek(0)
    out.truncate()
    with redirect_stdout(out), redirect_stderr(err):
        convert = main(["convert", str(tf_dir), "--quiet"])
    return {
        "root": root,
        "tf_dir": tf_dir,
        "download": (download, download_out, err.getvalue()),
        "requested": requested,
        "convert": (convert, out.getvalue()),
    }


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text(make_text(700, seed=3), encoding="utf-8")
    return path


# --- the command and its help ----------------------------------------------------------------


def test_sizes_and_file_name_agree_with_the_library():
    from gptlab import convert, gpt2
    from gptlab.cli import common

    assert common.SIZES == gpt2.SIZES
    assert common.SAFETENSORS == convert.SAFETENSORS


@pytest.mark.parametrize("verb", ["generate", "evaluate", "inspect", "download", "convert"])
def test_every_verb_has_help_with_examples(verb, capsys):
    code, out, _ = cli(verb, "--help", capsys=capsys)
    assert code == 0
    assert out.startswith(f"usage: gptlab {verb}")
    examples = out.split("examples:", 1)[1]
    assert f"gptlab {verb} " in examples


def test_top_level_help_lists_the_verbs_and_exit_codes(capsys):
    code, out, _ = cli("--help", capsys=capsys)
    assert code == 0
    for verb in ("generate", "evaluate", "inspect", "download", "convert"):
        assert verb in out
    assert "exit codes" in out


# --- generate --------------------------------------------------------------------------------


def test_installed_script_greedy_equals_generate_text_simple(ckpt):
    script = Path(sys.executable).with_name("gptlab")
    assert script.is_file(), f"{script} missing: pip install -e . --no-deps"
    result = cli_process(
        "generate", "--model", ckpt, "--prompt", PROMPT, "--temperature", "0", "--max-new-tokens", "12",
        *CPU, script=str(script),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    model = load_model(ckpt)
    ids = torch.tensor([get_tokenizer().encode(PROMPT)])
    expected = generate_text_simple(model, ids, 12, EXPERIMENT_CONFIG["context_length"])
    assert result.stdout == decode(expected[0].tolist()) + "\n"


def test_samples_are_seeded_one_stream_each(ckpt, capsys):
    args = ("generate", "--model", ckpt, "--prompt", PROMPT, "--max-new-tokens", "8", "--top-k", "20", *CPU)
    code, out, _ = cli(*args, "--seed", "5", "--num-samples", "3", capsys=capsys)
    assert code == 0
    headers = re.findall(r"^--- sample (\d)/3 \(seed (\d+)\) ---$", out, flags=re.M)
    assert headers == [("1", "5"), ("2", "6"), ("3", "7")]
    samples = re.split(r"^--- sample \d/3 \(seed \d+\) ---\n", out, flags=re.M)[1:]
    # exactly the library's per-row streams, seeds 5, 6, 7
    model = load_model(ckpt)
    ids = torch.tensor([get_tokenizer().encode(PROMPT)])
    rows = generate(model, ids, 8, 64, temperature=1.0, top_k=20, seeds=[5, 6, 7])
    assert samples == [decode(r) + "\n" for r in rows.tolist()]
    assert len(set(samples)) == 3
    # sample 2 alone (seed 6) is the same text: it does not depend on the batch
    code, alone, _ = cli(*args, "--seed", "6", capsys=capsys)
    assert code == 0 and alone == samples[1]


def test_stream_prints_the_same_text_as_without(release, capsys):
    args = (
        "generate", "--gpt2", "124M", "--gpt2-dir", release["root"], "--prompt", "The café’s",
        "--max-new-tokens", "20", "--temperature", "1.3", "--top-k", "40", "--top-p", "0.95",
        "--seed", "11", "--num-samples", "2", *CPU,
    )  # fmt: skip
    code, plain, _ = cli(*args, capsys=capsys)
    assert code == 0
    streamed = cli_process(*args, "--stream")
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == plain
    assert plain.count("The café’s") == 2


def test_on_token_reports_every_new_token_in_order():
    model = make_model(seed=1)
    ids = torch.tensor([[6109, 3626, 6100, 345]])
    seen = []
    out = generate(
        model, ids, 9, 64, temperature=1.0, seeds=[3, 4], on_token=lambda t: seen.append(t.clone())
    )
    assert torch.equal(torch.cat(seen, dim=1), out[:, 4:])
    assert torch.equal(out, generate(model, ids, 9, 64, temperature=1.0, seeds=[3, 4]))


def test_generate_from_converted_gpt2_reads_its_hparams(release, capsys):
    folder = release["root"] / "124M"
    model = load_gpt2(folder)
    ids = torch.tensor([get_tokenizer().encode(PROMPT)])
    expected = decode(generate_text_simple(model, ids, 10, model.pos_emb.num_embeddings)[0].tolist()) + "\n"
    greedy = ("--prompt", PROMPT, "--temperature", "0", "--max-new-tokens", "10", *CPU)
    code, by_size, _ = cli(
        "generate", "--gpt2", "124M", "--gpt2-dir", release["root"], *greedy, capsys=capsys
    )
    assert code == 0 and by_size == expected
    code, by_path, _ = cli("generate", "--model", folder / "model.safetensors", *greedy, capsys=capsys)
    assert code == 0 and by_path == expected


def test_generate_says_when_the_gpt2_weights_are_not_openais(release, ckpt, capsys):
    args = ("--prompt", PROMPT, "--temperature", "0", "--max-new-tokens", "3", *CPU)
    code, out, err = cli("generate", "--gpt2", "124M", "--gpt2-dir", release["root"], *args, capsys=capsys)
    assert code == 0 and out.startswith(PROMPT)
    assert "Synthetic weights: these numbers are not the book's. GPT-2 124M: not OpenAI's weights: " in err
    assert "its hparams differ from OpenAI's 124M (n_layer 2 vs 12" in err
    code, _, err = cli("generate", "--model", ckpt, *args, capsys=capsys)  # a training checkpoint: no notice
    assert code == 0 and "Synthetic" not in err


# --- evaluate --------------------------------------------------------------------------------


def _table(out: str) -> dict:
    rows = re.findall(r"^(train|val)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)$", out, flags=re.M)
    return {s: (float(loss), float(ppl), int(b), int(t)) for s, loss, ppl, b, t in rows}


def test_evaluate_prints_evaluate_losses(ckpt, text_file, tmp_path, capsys):
    text = text_file.read_text(encoding="utf-8")
    expected = evaluate_losses({"m": ckpt}, text, max_length=64, stride=64, batch_size=2, seed=123)
    # defaults: the book's settings, windows of the model's whole context (64 < 256)
    code, out, _ = cli("evaluate", "--model", ckpt, "--text", text_file, "--csv", tmp_path / "l.csv", *CPU,
                       capsys=capsys)  # fmt: skip
    assert code == 0
    table = _table(out)
    for row in expected.itertuples():
        loss, ppl, batches, tokens = table[row.split]
        assert loss == pytest.approx(row.loss, abs=1e-6)
        assert ppl == pytest.approx(row.perplexity, abs=1e-4)
        assert (batches, tokens) == (row.n_batches, row.n_tokens)
    written = pd.read_csv(tmp_path / "l.csv")
    assert written["loss"].tolist() == expected["loss"].tolist()
    assert written["perplexity"].tolist() == [math.exp(x) for x in expected["loss"]]

    other = evaluate_losses({"m": ckpt}, text, max_length=16, stride=8, batch_size=3, train_ratio=0.8, seed=1)
    code, out, _ = cli(
        "evaluate", "--model", ckpt, "--text", text_file, "--context-length", "16", "--stride", "8",
        "--batch-size", "3", "--train-ratio", "0.8", "--seed", "1", *CPU, capsys=capsys,
    )  # fmt: skip
    assert code == 0
    table = _table(out)
    for row in other.itertuples():
        assert table[row.split][0] == pytest.approx(row.loss, abs=1e-6)
        assert table[row.split][2:] == (row.n_batches, row.n_tokens)


# --- inspect ---------------------------------------------------------------------------------


def test_inspect_checkpoint(ckpt, capsys):
    from gptlab.training.checkpoint import integrity, load_checkpoint

    assert not ckpt.with_name("tiny.pt.sha256").exists()  # the digest is inside the file
    code, out, _ = cli("inspect", ckpt, capsys=capsys)
    assert code == 0
    line = integrity(load_checkpoint(ckpt), ckpt)
    assert line.startswith("ok: ") and "digest" in line
    assert f"integrity   {line}\n" in out
    assert "format      gptlab-checkpoint v2\n" in out
    assert "context_length=64" in out and "emb_dim=32" in out and "n_layers=2" in out
    n_params = sum(p.numel() for p in make_model().parameters())
    assert f"parameters  {n_params:,} " in out
    assert "epoch 2 completed, global step 7" in out and "123,456 tokens seen" in out
    assert re.search(r"^\s+6\s+4,000\s+6\.0625\s+6\.8125$", out, flags=re.M)  # the last evaluation
    assert re.search(r"^\s+2\s+2,000\s+8\.2500\s+8\.5000$", out, flags=re.M)
    assert not re.search(r"^\s+0\s+1,000", out, flags=re.M)  # only the last three
    assert "lr=0.0003 weight_decay=0.05" in out and "resumed" in out


def test_inspect_refuses_a_checkpoint_with_a_flipped_bit(ckpt, tmp_path, capsys):
    damaged = tmp_path / "tiny.pt"
    shutil.copy(ckpt, damaged)
    flip_checkpoint_tensor_byte(damaged)  # still a valid zip: only the digest can tell
    assert not damaged.with_name("tiny.pt.sha256").exists()
    code, out, err = cli("inspect", damaged, capsys=capsys)
    assert code == 1 and out == ""
    assert_one_line_error(err, str(damaged), "damaged", "move it aside")
    assert "delete" not in err.lower()
    assert damaged.is_file()  # never removed for the user


def test_inspect_refuses_truncated_checkpoints(ckpt, tmp_path, capsys):
    damaged = tmp_path / "tiny.pt"
    shutil.copy(ckpt, damaged)
    with open(damaged, "r+b") as f:
        f.truncate(damaged.stat().st_size // 2)
    code, out, err = cli("inspect", damaged, capsys=capsys)
    assert code == 1 and out == ""
    assert_one_line_error(err, str(damaged), "cannot be read", "truncated")
    assert "delete" not in err.lower()


def test_inspect_converted_gpt2(release, capsys):
    folder = release["root"] / "124M"
    code, out, _ = cli("inspect", folder, capsys=capsys)
    assert code == 0
    assert "n_vocab=50257 n_ctx=256 n_embd=32 n_head=4 n_layer=2" in out
    model = load_gpt2(folder)
    n_params = sum(p.numel() for p in model.parameters())  # tied: tok_emb counted once
    assert f"parameters  {n_params:,} " in out
    assert "no OpenAI release has this shape" in out
    assert re.search(r"^integrity   header only .*--verify", out, flags=re.M)
    code, same, _ = cli("inspect", folder / "model.safetensors", capsys=capsys)
    assert code == 0 and same == out


def test_inspect_verify_reads_the_weights_of_a_converted_gpt2(release, tmp_path, capsys):
    from gptlab import gpt2

    if not hasattr(gpt2, "verify_gpt2_file"):
        pytest.skip("gptlab.gpt2.verify_gpt2_file is not in this gptlab yet; inspect --verify calls it")
    file = release["root"] / "124M" / "model.safetensors"
    code, out, err = cli("inspect", file.parent, "--verify", capsys=capsys)
    assert code == 0, err
    assert f"integrity   {gpt2.verify_gpt2_file(file)}\n" in out
    assert "n_vocab=50257 n_ctx=256" in out

    damaged = tmp_path / "model.safetensors"
    shutil.copy(file, damaged)
    flip_safetensors_data_byte(damaged)
    # the header is intact: without --verify the damage goes unnoticed, and the output says so
    code, out, _ = cli("inspect", damaged, capsys=capsys)
    assert code == 0 and "--verify" in out
    code, out, err = cli("inspect", damaged, "--verify", capsys=capsys)
    assert code == 1 and out == ""
    assert_one_line_error(err, str(damaged), "damaged", "gptlab convert")


def test_inspect_refuses_truncated_safetensors(release, tmp_path, capsys):
    damaged = tmp_path / "model.safetensors"
    data = (release["root"] / "124M" / "model.safetensors").read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    code, out, err = cli("inspect", damaged, capsys=capsys)
    assert code == 1 and out == ""
    assert_one_line_error(err, str(damaged), "move it aside", "gptlab convert")
    assert "delete" not in err.lower()


# --- download and convert ----------------------------------------------------------------------


def test_download_then_convert(release, converted):
    code, out, err = release["download"]
    assert code == 0, err
    assert out.strip() == str(release["tf_dir"])
    assert release["requested"] == sorted(f"124M/{name}" for name in FILENAMES)
    for name in (*FILENAMES, "manifest.json"):
        assert (release["tf_dir"] / name).is_file()
    code, out = release["convert"]
    assert code == 0
    dest = release["root"] / "124M" / "model.safetensors"  # the parent of 'tf'
    assert out.strip() == str(dest)
    assert dest.read_bytes() == converted.read_bytes()  # the library's conversion, byte for byte


def test_convert_writes_beside_the_checkpoint_or_to_out(synthetic_ckpt, tmp_path, capsys):
    from gptlab.cli.weights import default_destination

    assert (
        default_destination(tmp_path / "gpt2" / "355M" / "tf")
        == tmp_path / "gpt2" / "355M" / "model.safetensors"
    )
    assert default_destination(synthetic_ckpt) is None  # convert_tf_checkpoint's default: beside it
    code, out, _ = cli(
        "convert", synthetic_ckpt, "--out", tmp_path / "x.safetensors", "--quiet", capsys=capsys
    )
    assert code == 0 and out.strip() == str(tmp_path / "x.safetensors")
    assert load_gpt2(tmp_path / "x.safetensors").pos_emb.num_embeddings == 256


def test_download_failure_is_one_line_naming_the_url(synthetic_ckpt, tmp_path, capsys):
    shutil.copytree(synthetic_ckpt, tmp_path / "mirror" / "124M")
    with FileServer(tmp_path / "mirror", missing={"124M/hparams.json"}) as server:
        code, out, err = cli(
            "download", "--size", "124M", "--dir", tmp_path / "tf", "--mirror", server.base_url,
            "--no-check-known-sizes", "--quiet", capsys=capsys,
        )  # fmt: skip
    assert code == 1 and out == ""
    assert_one_line_error(err, f"{server.base_url}/124M/hparams.json", "404", "set --mirror to a reachable")


# --- errors ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def empty_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("empty")


USAGE_ERRORS = {
    "negative temperature": (["--temperature", "-0.5"], "--temperature -0.5"),
    "top-k zero": (["--top-k", "0"], "--top-k 0"),
    "top-p zero": (["--top-p", "0"], "--top-p 0.0"),
    "top-p above one": (["--top-p", "1.5"], "--top-p 1.5"),
    "prompt too long": (["--prompt", "word " * 80], "longer than the context"),
    "not a number": (["--max-new-tokens", "many"], "'many' is not an integer"),
    "negative token count": (["--max-new-tokens", "-1"], "-1 must be >= 0"),
    "both prompt options": (["--prompt", "a", "--prompt-file", "f"], "not allowed with"),
    "nan temperature": (["--temperature", "nan"], "argument --temperature: 'nan' is not a finite number"),
    "infinite temperature": (["--temperature", "inf"], "argument --temperature: 'inf' is not a finite"),
    "overflowing temperature": (["--temperature", "1e999"], "'1e999' is not a finite number"),
    "nan top-p": (["--top-p", "NaN"], "argument --top-p: 'NaN' is not a finite number"),
    "negative infinite top-p": (["--top-p=-inf"], "argument --top-p: '-inf' is not a finite"),
    "seed above 2**64-1": (
        ["--seed", str(2**64)],
        f"argument --seed: {2**64} must be between 0 and {2**64 - 1} (2**64 - 1",
    ),
    "negative seed": (["--seed", "-1"], f"argument --seed: -1 must be between 0 and {2**64 - 1}"),
    "last sample's seed above 2**64-1": (
        ["--seed", str(2**64 - 2), "--num-samples", "3"],
        (f"would seed the last sample with {2**64}, beyond 2**64 - 1", f"use --seed {2**64 - 3} or less"),
    ),
}


@pytest.mark.parametrize("extra,needle", USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys())
def test_generate_usage_errors_exit_2(ckpt, extra, needle, capsys):
    code, out, err = cli("generate", "--model", ckpt, *extra, *CPU, capsys=capsys)
    assert code == 2 and out == ""
    assert_one_line_error(err, *(needle if isinstance(needle, tuple) else (needle,)))


def test_seeds_up_to_2_pow_64_minus_1_are_accepted(ckpt, text_file, capsys):
    args = ("generate", "--model", ckpt, "--prompt", PROMPT, "--max-new-tokens", "3", "--top-k", "5", *CPU)
    code, out, err = cli(*args, "--seed", 2**64 - 2, "--num-samples", "2", capsys=capsys)
    assert code == 0, err
    assert f"--- sample 2/2 (seed {2**64 - 1}) ---" in out
    code, alone, err = cli(*args, "--seed", 2**64 - 1, capsys=capsys)
    assert code == 0, err
    assert alone == out.split(f"--- sample 2/2 (seed {2**64 - 1}) ---\n")[1]
    code, out, err = cli(
        "evaluate", "--model", ckpt, "--text", text_file, "--context-length", "16", "--seed", 2**64 - 1, *CPU,
        capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    assert f"seed {2**64 - 1}" in out and set(_table(out)) == {"train", "val"}


def test_other_usage_errors_exit_2(ckpt, text_file, capsys):
    cases = [
        (["generate", "--gpt2", "7B"], "invalid choice: '7B'"),
        (["download", "--size", "2B"], "invalid choice: '2B'"),
        (["generate", "--model", ckpt, "--gpt2", "124M"], "not allowed with"),
        (["generate"], "one of the arguments --model --gpt2 is required"),
        (
            ["evaluate", "--model", ckpt, "--text", text_file, "--context-length", "128"],
            "--context-length 64",
        ),
        (
            ["evaluate", "--model", ckpt, "--text", text_file, "--train-ratio", "1"],
            "strictly between 0 and 1",
        ),
        (
            ["evaluate", "--model", ckpt, "--text", text_file, "--train-ratio", "nan"],
            "argument --train-ratio: 'nan' is not a finite number",
        ),
        (
            ["evaluate", "--model", ckpt, "--text", text_file, "--train-ratio", "inf"],
            "argument --train-ratio: 'inf' is not a finite number",
        ),
        (
            ["evaluate", "--model", ckpt, "--text", text_file, "--seed", "18446744073709551616"],
            "argument --seed: 18446744073709551616 must be between 0 and 18446744073709551615",
        ),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ]
    for args, needle in cases:
        code, out, err = cli(*args, capsys=capsys)
        assert code == 2 and out == "", args
        assert_one_line_error(err, needle)


def test_failures_exit_1(ckpt, empty_dir, capsys):
    cases = [
        (["generate", "--model", empty_dir / "nope.pt"], "nope.pt does not exist"),
        (["generate", "--gpt2", "124M", "--gpt2-dir", empty_dir], "gptlab download --size 124M"),
        (["generate", "--model", ckpt, "--prompt-file", empty_dir / "p.txt"], "p.txt does not exist"),
        (["evaluate", "--model", ckpt, "--text", empty_dir / "t.txt"], "t.txt does not exist"),
        (["inspect", empty_dir / "gone.pt"], "gone.pt does not exist"),
        (["inspect", empty_dir], "has no model.safetensors"),
        (["convert", empty_dir / "tf"], "does not exist"),
    ]
    for args, needle in cases:
        code, out, err = cli(*args, capsys=capsys)
        assert code == 1 and out == "", args
        assert_one_line_error(err, needle)


def test_a_release_downloaded_but_not_converted_says_so(empty_dir, capsys):
    tf_dir = empty_dir / "gpt2" / "355M" / "tf"
    tf_dir.mkdir(parents=True)
    (tf_dir / "model.ckpt.index").write_bytes(b"")
    code, _, err = cli("generate", "--gpt2", "355M", "--gpt2-dir", empty_dir / "gpt2", capsys=capsys)
    assert code == 1
    assert_one_line_error(err, f"gptlab convert {tf_dir}")


def test_debug_shows_the_exception(empty_dir):
    from gptlab.training.checkpoint import CheckpointError

    damaged = empty_dir / "damaged.pt"
    damaged.write_bytes(b"not a checkpoint")
    for args in (["--debug", "inspect", damaged], ["inspect", damaged, "--debug"]):
        with pytest.raises(CheckpointError, match="cannot be read"):
            main([str(a) for a in args])


def test_a_usage_error_as_a_process_exits_2_with_one_line(ckpt):
    result = cli_process("generate", "--model", ckpt, "--temperature", "-1", *CPU)
    assert result.returncode == 2 and result.stdout == ""
    assert_one_line_error(result.stderr, "--temperature -1.0 must be >= 0")


def test_nan_temperature_as_a_process_is_a_usage_error(ckpt):
    result = cli_process("generate", "--model", ckpt, "--temperature", "nan", *CPU)
    assert result.returncode == 2 and result.stdout == ""
    assert_one_line_error(result.stderr, "--temperature: 'nan' is not a finite number", "give one such as")


# --- files that cannot be read or written ------------------------------------------------------


def test_unreadable_prompt_and_text_files_are_named(ckpt, tmp_path, capsys):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Every effort moves you, café".encode("latin-1"))
    offset = len("Every effort moves you, caf")
    cases = [
        (["generate", "--model", ckpt, "--prompt-file", tmp_path], f"--prompt-file {tmp_path} is a folder"),
        (["evaluate", "--model", ckpt, "--text", tmp_path], f"--text {tmp_path} is a folder"),
        (
            ["generate", "--model", ckpt, "--prompt-file", latin1],
            f"--prompt-file {latin1} is not UTF-8 text (byte 0xe9 at offset {offset}",
        ),
        (
            ["evaluate", "--model", ckpt, "--text", latin1],
            f"--text {latin1} is not UTF-8 text (byte 0xe9 at offset {offset}",
        ),
    ]
    for args, needle in cases:
        code, out, err = cli(*args, *CPU, capsys=capsys)
        assert code == 1 and out == "", args
        assert_one_line_error(err, needle)
        assert "IsADirectoryError" not in err and "UnicodeDecodeError" not in err


def test_a_file_without_read_permission_is_named(ckpt, tmp_path):
    prefix = without_root_privileges()
    secret = tmp_path / "secret.txt"
    secret.write_text(PROMPT, encoding="utf-8")
    secret.chmod(0)
    for option, verb in (("--prompt-file", "generate"), ("--text", "evaluate")):
        result = cli_process(verb, "--model", ckpt, option, secret, *CPU, prefix=prefix)
        assert result.returncode == 1 and result.stdout == "", result.stderr
        assert_one_line_error(result.stderr, f"{option} {secret} cannot be read (permission denied)", "chmod")


@pytest.fixture
def not_a_model(tmp_path):
    """A .pt file that cannot be loaded: a command that reaches the model fails with 'cannot be read'."""
    path = tmp_path / "not-a-model.pt"
    path.write_bytes(b"not a checkpoint")
    return path


def test_evaluate_checks_csv_is_writable_before_loading_the_model(not_a_model, text_file, tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    out_csv = a_file / "losses.csv"  # its "folder" is a regular file: nobody, not even root, can write
    code, out, err = cli("evaluate", "--model", not_a_model, "--text", text_file, "--csv", out_csv, *CPU,
                         capsys=capsys)  # fmt: skip
    assert code == 1 and out == ""
    # the --csv error, not the model's: the folder is checked before the model is loaded
    assert_one_line_error(err, f"cannot write {out_csv}", "pass --csv a path in a folder you can write to")
    assert "not-a-model.pt" not in err

    code, out, err = cli("evaluate", "--model", not_a_model, "--text", text_file, "--csv", tmp_path, *CPU,
                         capsys=capsys)  # fmt: skip
    assert code == 1 and out == ""
    assert_one_line_error(err, f"--csv {tmp_path} is a folder", f"--csv {tmp_path / 'losses.csv'}")


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder in which no file can be created: a read-only tmpfs as root, else permission bits."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("running as root (permission bits do not apply) and there is no mount command")
    result = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"running as root and a read-only tmpfs cannot be mounted here: {result.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run([shutil.which("umount") or "umount", str(folder)], check=True)


def test_evaluate_refuses_a_read_only_csv_folder_before_loading(
    not_a_model, text_file, read_only_dir, capsys
):
    out_csv = read_only_dir / "sub" / "losses.csv"  # a missing subfolder is created when writing: not here
    code, out, err = cli("evaluate", "--model", not_a_model, "--text", text_file, "--csv", out_csv, *CPU,
                         capsys=capsys)  # fmt: skip
    assert code == 1 and out == ""
    assert_one_line_error(err, f"cannot write {out_csv}: {read_only_dir} does not accept new files", "--csv")
    assert list(read_only_dir.iterdir()) == []


def _evaluate_args(ckpt, text_file, out_csv):
    return (
        "evaluate",
        "--model",
        ckpt,
        "--text",
        text_file,
        "--context-length",
        "16",
        "--csv",
        out_csv,
        *CPU,
    )


def test_evaluate_csv_gets_the_permissions_of_the_umask(ckpt, text_file, tmp_path):
    out_csv = tmp_path / "losses.csv"
    result = cli_process(*_evaluate_args(ckpt, text_file, out_csv), preexec_fn=lambda: os.umask(0o022))
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(f"wrote {out_csv}\n")
    assert stat.S_IMODE(out_csv.stat().st_mode) == 0o644
    assert list(pd.read_csv(out_csv)["split"]) == ["train", "val"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["losses.csv"]  # no temporary file left


def test_a_full_disk_while_writing_csv_is_one_line_naming_the_file(ckpt, text_file, tmp_path):
    import resource

    from gptlab.io import NoSpaceError, no_space_error

    out_csv = tmp_path / "losses.csv"
    limit = 40  # bytes: the CSV's header alone is longer, so writing it hits the file-size limit (EFBIG)

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ

    result = cli_process(*_evaluate_args(ckpt, text_file, out_csv), preexec_fn=small_files)
    assert result.returncode == 1, result.stderr
    expected = no_space_error(OSError(errno.EFBIG, os.strerror(errno.EFBIG)), out_csv)
    assert isinstance(expected, NoSpaceError)
    assert result.stderr == f"gptlab: error: {expected.strerror}\n"  # the library's message, as is
    assert str(out_csv) in result.stderr
    assert not out_csv.exists() and list(tmp_path.iterdir()) == []  # no partial file, no temporary file
