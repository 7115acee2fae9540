"""The ``gptlab`` command, on a tiny checkpoint and a synthetic GPT-2 served from 127.0.0.1.

Most runs call ``gptlab.cli.main`` in this process (one torch import for all); a
few run ``python -m gptlab.cli`` and the installed ``gptlab`` script as separate
processes, to check exit codes, stderr and streamed stdout as a shell sees them.
"""

# ruff: noqa: F811  (the fixtures imported from tests.gpt2_fixtures are used as arguments)

from __future__ import annotations

import io
import math
import os
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pandas as pd
import pytest
import torch

from gptlab.checkpoint import save_checkpoint
from gptlab.cli import main
from gptlab.generation import generate, generate_text_simple
from gptlab.gpt2 import FILENAMES, load_gpt2
from gptlab.pretrained import evaluate_losses, load_model
from gptlab.testing import FileServer
from gptlab.tokenizer import get_tokenizer
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


def cli_process(*args, script=None, timeout=300):
    """Run ``gptlab ARGS`` as its own process (``python -m gptlab.cli`` or the installed script)."""
    command = [script] if script else [sys.executable, "-m", "gptlab.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        command + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env
    )


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
    code, out, _ = cli("inspect", ckpt, capsys=capsys)
    assert code == 0
    assert "matches tiny.pt.sha256" in out
    assert "context_length=64" in out and "emb_dim=32" in out and "n_layers=2" in out
    n_params = sum(p.numel() for p in make_model().parameters())
    assert f"parameters  {n_params:,} " in out
    assert "epoch 2 completed, global step 7" in out and "123,456 tokens seen" in out
    assert re.search(r"^\s+6\s+4,000\s+6\.0625\s+6\.8125$", out, flags=re.M)  # the last evaluation
    assert re.search(r"^\s+2\s+2,000\s+8\.2500\s+8\.5000$", out, flags=re.M)
    assert not re.search(r"^\s+0\s+1,000", out, flags=re.M)  # only the last three
    assert "lr=0.0003 weight_decay=0.05" in out and "resumed" in out


def test_inspect_refuses_truncated_checkpoints(ckpt, tmp_path, capsys):
    damaged = tmp_path / "tiny.pt"
    shutil.copy(ckpt, damaged)
    shutil.copy(ckpt.with_name("tiny.pt.sha256"), tmp_path / "tiny.pt.sha256")
    with open(damaged, "r+b") as f:
        f.truncate(damaged.stat().st_size // 2)
    code, out, err = cli("inspect", damaged, capsys=capsys)
    assert code == 1 and out == ""
    assert_one_line_error(err, str(damaged), "corrupt or truncated")
    # without the sidecar the damage is found when reading it
    (tmp_path / "tiny.pt.sha256").unlink()
    code, out, err = cli("inspect", damaged, capsys=capsys)
    assert code == 1 and out == ""
    assert_one_line_error(err, "cannot be read", "truncated")


def test_inspect_converted_gpt2(release, capsys):
    folder = release["root"] / "124M"
    code, out, _ = cli("inspect", folder, capsys=capsys)
    assert code == 0
    assert "n_vocab=50257 n_ctx=256 n_embd=32 n_head=4 n_layer=2" in out
    model = load_gpt2(folder)
    n_params = sum(p.numel() for p in model.parameters())  # tied: tok_emb counted once
    assert f"parameters  {n_params:,} " in out
    assert "no OpenAI release has this shape" in out
    code, same, _ = cli("inspect", folder / "model.safetensors", capsys=capsys)
    assert code == 0 and same == out


def test_inspect_refuses_truncated_safetensors(release, tmp_path, capsys):
    damaged = tmp_path / "model.safetensors"
    data = (release["root"] / "124M" / "model.safetensors").read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    code, out, err = cli("inspect", damaged, capsys=capsys)
    assert code == 1 and out == ""
    assert_one_line_error(err, str(damaged))


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
}


@pytest.mark.parametrize("extra,needle", USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys())
def test_generate_usage_errors_exit_2(ckpt, extra, needle, capsys):
    code, out, err = cli("generate", "--model", ckpt, *extra, *CPU, capsys=capsys)
    assert code == 2 and out == ""
    assert_one_line_error(err, needle)


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
    from gptlab.checkpoint import CheckpointError

    damaged = empty_dir / "damaged.pt"
    damaged.write_bytes(b"not a checkpoint")
    for args in (["--debug", "inspect", damaged], ["inspect", damaged, "--debug"]):
        with pytest.raises(CheckpointError, match="cannot be read"):
            main([str(a) for a in args])


def test_a_usage_error_as_a_process_exits_2_with_one_line(ckpt):
    result = cli_process("generate", "--model", ckpt, "--temperature", "-1", *CPU)
    assert result.returncode == 2 and result.stdout == ""
    assert_one_line_error(result.stderr, "--temperature -1.0 must be >= 0")
