"""Synthetic checkpoints in OpenAI's layout, and their conversion to safetensors."""

# ruff: noqa: F811  (the fixtures imported from tests.gpt2_fixtures are used as arguments)

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

from gptlab.gpt2 import load_gpt2, verify_gpt2_file
from gptlab.gpt2.layout import tf_variable_shapes
from gptlab.testing import FileServer
from gptlab.tokenizer import ENCODER_JSON_SHA256, VOCAB_BPE_SHA256, get_tokenizer
from tests.gpt2_fixtures import (  # noqa: F401  (fixtures)
    TINY,
    assert_close_rel,
    converted,
    flip_byte,
    numpy_gpt2_logits,
    synthetic_ckpt,
    tf_variables,
)

tf = pytest.importorskip("tensorflow", reason="conversion needs tensorflow-cpu (gptlab[convert])")


TOKENIZER_FILES = ("vocab.bpe", "encoder.json")


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_synthetic_checkpoint_has_openais_layout(synthetic_ckpt, tf_variables):
    assert _files(synthetic_ckpt) == [
        "checkpoint",
        "encoder.json",
        "hparams.json",
        "model.ckpt.data-00000-of-00001",
        "model.ckpt.index",
        "model.ckpt.meta",
        "vocab.bpe",
    ]
    # OpenAI's 77-byte checkpoint file, and an hparams.json like theirs
    assert (synthetic_ckpt / "checkpoint").read_text() == (
        'model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n'
    )
    assert json.loads((synthetic_ckpt / "hparams.json").read_text()) == TINY
    assert tf.train.latest_checkpoint(str(synthetic_ckpt)).endswith("model.ckpt")
    d = TINY["n_embd"]
    shapes = {name: tuple(a.shape) for name, a in tf_variables.items()}
    assert shapes["model/wte"] == (50257, d) and shapes["model/wpe"] == (TINY["n_ctx"], d)
    assert shapes["model/h1/attn/c_attn/w"] == (1, d, 3 * d)
    assert shapes["model/h0/mlp/c_proj/w"] == (1, 4 * d, d)
    assert shapes == tf_variable_shapes(TINY) and len(shapes) == 4 + 12 * TINY["n_layer"]
    assert all(a.dtype == np.float32 for a in tf_variables.values())
    # OpenAI's tokenizer files, so the tokenizer builds from the folder
    digest = {
        n: hashlib.sha256((synthetic_ckpt / n).read_bytes()).hexdigest()
        for n in ("vocab.bpe", "encoder.json")
    }
    assert digest == {"vocab.bpe": VOCAB_BPE_SHA256, "encoder.json": ENCODER_JSON_SHA256}
    assert get_tokenizer(str(synthetic_ckpt)).encode("Every effort moves you") == [6109, 3626, 6100, 345]


def test_synthetic_checkpoint_is_seeded(tmp_path):
    from gptlab.testing import write_synthetic_gpt2_checkpoint

    small = dict(n_vocab=11, n_ctx=8, n_embd=8, n_head=2, n_layer=1)
    a = write_synthetic_gpt2_checkpoint(tmp_path / "a", seed=1, **small)
    b = write_synthetic_gpt2_checkpoint(tmp_path / "b", seed=1, **small)
    c = write_synthetic_gpt2_checkpoint(tmp_path / "c", seed=2, **small)
    read = {k: tf.train.load_checkpoint(str(p / "model.ckpt")) for k, p in dict(a=a, b=b, c=c).items()}
    for name in tf_variable_shapes(small):
        np.testing.assert_array_equal(read["a"].get_tensor(name), read["b"].get_tensor(name))
    assert not np.array_equal(read["a"].get_tensor("model/wte"), read["c"].get_tensor("model/wte"))
    with pytest.raises(ValueError, match="n_embd=8 is not divisible by n_head=3"):
        write_synthetic_gpt2_checkpoint(tmp_path / "d", **{**small, "n_head": 3})


def test_converted_file_layout_and_metadata(converted):
    with safe_open(str(converted), framework="pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["format"] == "gptlab-gpt2" and json.loads(meta["hparams"]) == TINY
    assert "out_head.weight" not in keys  # tied to tok_emb.weight
    assert {"tok_emb.weight", "trf_blocks.1.att.W_value.bias", "final_norm.shift"} <= keys
    assert len(keys) == 4 + 16 * TINY["n_layer"]
    assert _files(converted.parent) == ["model.safetensors"]  # no temporary file left


def test_converted_weights_equal_the_checkpoint(converted, tf_variables):
    with safe_open(str(converted), framework="np") as f:
        w = f.get_tensor("trf_blocks.1.att.W_key.weight")
        b = f.get_tensor("trf_blocks.1.att.W_key.bias")
        fc = f.get_tensor("trf_blocks.0.ff.layers.0.weight")
    d = TINY["n_embd"]
    np.testing.assert_array_equal(w, tf_variables["model/h1/attn/c_attn/w"][0][:, d : 2 * d].T)
    np.testing.assert_array_equal(b, tf_variables["model/h1/attn/c_attn/b"][d : 2 * d])
    np.testing.assert_array_equal(fc, tf_variables["model/h0/mlp/c_fc/w"][0].T)


def test_logits_match_an_independent_numpy_gpt2(converted, tf_variables):
    model = load_gpt2(converted)
    ids = np.random.default_rng(0).integers(0, TINY["n_vocab"], size=(2, 40))
    with torch.no_grad():
        logits = model(torch.from_numpy(ids)).numpy()
    reference = numpy_gpt2_logits(tf_variables, TINY, ids)
    assert np.abs(reference).max() > 1.0  # not a degenerate all-zero comparison
    assert_close_rel(logits, reference, 1e-5)

    # The comparison is sharp enough to catch a swapped query/key split.
    swapped = dict(tf_variables)
    q, k, v = np.split(swapped["model/h0/attn/c_attn/w"], 3, axis=-1)
    swapped["model/h0/attn/c_attn/w"] = np.concatenate([k, q, v], axis=-1)
    with pytest.raises(AssertionError):
        assert_close_rel(logits, numpy_gpt2_logits(swapped, TINY, ids), 1e-5)


def _copy_ckpt(src, dest):
    shutil.copytree(src, dest)
    return dest


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"n_embd": 64},
            r"model/h0/attn/c_attn/w has shape \(1, 32, 96\), hparams.json implies \(1, 64, 192\);.* more",
        ),
        ({"n_layer": 3}, r"missing model/h2/attn/c_attn/b"),
        ({"n_layer": 1}, r"unexpected model/h1/"),
        ({"n_ctx": 1024}, r"model/wpe has shape \(256, 32\), hparams.json implies \(1024, 32\)"),
    ],
)
def test_hparams_mismatch_is_a_clear_error_and_writes_nothing(synthetic_ckpt, tmp_path, change, message):
    from gptlab.convert import convert_tf_checkpoint

    ckpt = _copy_ckpt(synthetic_ckpt, tmp_path / "ckpt")
    (ckpt / "hparams.json").write_text(json.dumps({**TINY, **change}))
    with pytest.raises(ValueError, match=message):
        convert_tf_checkpoint(ckpt)
    assert "model.safetensors" not in _files(ckpt) and not [p for p in _files(ckpt) if p.endswith(".tmp")]


def test_bad_sources(tmp_path, synthetic_ckpt):
    from gptlab.convert import convert_tf_checkpoint

    with pytest.raises(FileNotFoundError, match="holds no TensorFlow checkpoint"):
        convert_tf_checkpoint(tmp_path)
    ckpt = _copy_ckpt(synthetic_ckpt, tmp_path / "ckpt")
    (ckpt / "hparams.json").unlink()
    with pytest.raises(FileNotFoundError, match="hparams.json"):
        convert_tf_checkpoint(ckpt)
    (ckpt / "hparams.json").write_text(json.dumps({"n_vocab": 50257}))
    with pytest.raises(ValueError, match=r"lack \['n_ctx', 'n_embd', 'n_head', 'n_layer'\]"):
        convert_tf_checkpoint(ckpt)


def test_prefix_and_default_destination(synthetic_ckpt, tmp_path, converted):
    from gptlab.convert import convert_tf_checkpoint

    ckpt = _copy_ckpt(synthetic_ckpt, tmp_path / "ckpt")
    (ckpt / "checkpoint").unlink()  # a bare prefix works too
    out = convert_tf_checkpoint(ckpt / "model.ckpt")
    assert out == ckpt / "model.safetensors"
    assert out.read_bytes() == converted.read_bytes()  # deterministic


def test_loading_never_imports_tensorflow(converted):
    code = (
        "import sys, torch; from gptlab.gpt2 import load_gpt2; import gptlab.pretrained;"
        f"m = load_gpt2({str(converted)!r}); m(torch.tensor([[1, 2, 3]]));"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --------------------------------------------------------------------------- damage, modes, full disks

DATA = "model.ckpt.data-00000-of-00001"


def _header_and_data(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def test_converted_file_records_the_sha256_of_its_data(converted):
    header, data = _header_and_data(converted)
    meta = header["__metadata__"]
    assert meta["format_version"] == "2"
    assert meta["data_sha256"] == hashlib.sha256(data).hexdigest()
    assert verify_gpt2_file(converted) == (
        f"the SHA-256 of the {len(data):,} bytes of tensor data matches the digest in the header"
    )
    assert verify_gpt2_file(converted.parent) == verify_gpt2_file(converted)  # the folder works too


def test_a_flipped_byte_in_model_safetensors_is_detected(converted, tmp_path):
    damaged = tmp_path / "model.safetensors"
    shutil.copyfile(converted, damaged)
    flip_byte(damaged, damaged.stat().st_size - 3)
    message = (
        rf"{damaged} is damaged: the SHA-256 of its [\d,]+ bytes of tensor data is [0-9a-f]{{64}}, its header"
    )
    with pytest.raises(ValueError, match=message):
        load_gpt2(damaged)
    with pytest.raises(ValueError, match=r"Convert the checkpoint again \(gptlab convert DIR --out "):
        verify_gpt2_file(damaged)
    # without the check, the damage loads silently
    model = load_gpt2(damaged, verify=False)
    assert not torch.equal(model.tok_emb.weight, load_gpt2(converted).tok_emb.weight)


def test_a_truncated_model_safetensors_is_detected(converted, tmp_path, synthetic_ckpt):
    ckpt = shutil.copytree(synthetic_ckpt, tmp_path / "tf")
    short = tmp_path / "model.safetensors"
    short.write_bytes(converted.read_bytes()[:-4])
    with pytest.raises(
        ValueError, match=rf"{short} is damaged \(truncated\).*gptlab convert {ckpt} --out {short}"
    ):
        load_gpt2(tmp_path)


def test_a_file_without_digest_loads_with_a_warning(converted, tmp_path):
    """format_version 1 files (written before digests) hold no digest: nothing to verify, no error."""
    header, data = _header_and_data(converted)
    del header["__metadata__"]["data_sha256"]
    header["__metadata__"]["format_version"] = "1"
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    old = tmp_path / "model.safetensors"
    old.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    line = verify_gpt2_file(old)
    assert line.startswith("no digest of the tensor data (format_version 1")
    assert "convert it again to enable verification" in line
    with pytest.warns(UserWarning, match=f"{old}: no digest of the tensor data"):
        model = load_gpt2(old)
    assert torch.equal(model.tok_emb.weight, load_gpt2(converted).tok_emb.weight)
    header["__metadata__"]["format_version"] = "2"  # a current file without its digest is damaged
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    old.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    with pytest.raises(ValueError, match="is damaged: its header lacks data_sha256"):
        verify_gpt2_file(old)


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["umask022", "umask002"])
def test_converted_file_mode_follows_the_umask(synthetic_ckpt, tmp_path, umask):
    from gptlab.convert import convert_tf_checkpoint

    old = os.umask(umask)
    try:
        out = convert_tf_checkpoint(synthetic_ckpt, tmp_path / "model.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 1 MiB tmpfs (needs root, or a kernel that lets this user mount one)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"cannot mount a tmpfs here ({err}); the file-size-limit test covers the same path")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_conversion_onto_a_full_disk_names_the_destination(synthetic_ckpt, tiny_tmpfs):
    from gptlab.convert import convert_tf_checkpoint
    from gptlab.io import NoSpaceError

    dest = tiny_tmpfs / "model.safetensors"
    with pytest.raises(
        NoSpaceError, match=f"no space left on the file system of {tiny_tmpfs} while writing {dest}"
    ):
        convert_tf_checkpoint(synthetic_ckpt, dest)
    assert list(tiny_tmpfs.iterdir()) == []  # no partial file, no temporary file


def test_conversion_past_a_file_size_limit_names_the_destination(synthetic_ckpt, tmp_path):
    dest = tmp_path / "out" / "model.safetensors"
    code = f"""
import resource, signal, sys
from gptlab.convert import convert_tf_checkpoint
from gptlab.io import NoSpaceError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    convert_tf_checkpoint({str(synthetic_ckpt)!r}, {str(dest)!r})
except NoSpaceError as err:
    print(err)
    sys.exit(3)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stderr[-2000:]
    assert (
        f"file-size limit reached on the file system of {dest.parent} while writing {dest}" in result.stdout
    )
    assert list(dest.parent.iterdir()) == []


@pytest.fixture
def mirror(synthetic_ckpt, tmp_path):
    root = tmp_path / "www"
    shutil.copytree(synthetic_ckpt, root / "124M")
    return root


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        # TensorFlow finds the bad tensor ("Checksum does not match"); the bundle check names it
        (DATA, r"tensor model/\S+ \(bytes [\d,]+\.\.[\d,]+\) has crc32c 0x[0-9a-f]{8}, the index records"),
        ("model.ckpt.index", r"a data block at bytes 0\.\.\d+ fails its crc32c check"),
        ("hparams.json", "not valid JSON"),
    ],
)
def test_file_damaged_after_download_is_unpinned_and_fetched_again(mirror, tmp_path, converted, name, reason):
    from gptlab.convert import convert_tf_checkpoint
    from gptlab.gpt2 import download_gpt2, read_manifest

    folder = tmp_path / "gpt2" / "124M" / "tf"
    options = dict(check_known_sizes=False, progress=False, backoff=0)
    with FileServer(mirror) as server:
        download_gpt2("124M", folder, [server.base_url], **options)
        flip_byte(folder / name)  # damage on disk after the download verified it
        with pytest.raises(ValueError) as info:
            convert_tf_checkpoint(folder, tmp_path / "model.safetensors")
        message = str(info.value)
        assert re.search(reason, message), message
        assert message.startswith(f"{folder / name} is damaged: ")
        assert f"moved to {folder / name}.bad and {folder / 'manifest.json'} removed" in message
        assert "in the pipeline, run snakemake again" in message
        assert (
            f"gptlab download --size 124M --dir {folder}" in message and f"gptlab convert {folder}" in message
        )
        assert not (folder / name).exists() and (folder / f"{name}.bad").is_file()
        assert read_manifest(folder) is None
        assert not (tmp_path / "model.safetensors").exists()

        n = len(server.requests)
        download_gpt2("124M", folder, [server.base_url], **options)
        assert [path for path, _, _ in server.requests[n:]] == [f"124M/{name}"]
    assert len(read_manifest(folder)["files"]) == 7
    out = convert_tf_checkpoint(folder, tmp_path / "model.safetensors")
    assert out.read_bytes() == converted.read_bytes()


@pytest.mark.parametrize("name", [DATA, "model.ckpt.index"])
def test_file_missing_after_download_is_fetched_again(mirror, tmp_path, name):
    from gptlab.convert import convert_tf_checkpoint
    from gptlab.gpt2 import download_gpt2, read_manifest

    folder = tmp_path / "tf"
    options = dict(check_known_sizes=False, progress=False, backoff=0)
    with FileServer(mirror) as server:
        download_gpt2("124M", folder, [server.base_url], **options)
        (folder / name).unlink()
        message = f"{folder / name} is missing. Nothing was moved and {folder / 'manifest.json'} removed"
        with pytest.raises(FileNotFoundError, match=re.escape(message)):
            convert_tf_checkpoint(folder)
        assert read_manifest(folder) is None
        n = len(server.requests)
        download_gpt2("124M", folder, [server.base_url], **options)
        assert [path for path, _, _ in server.requests[n:]] == [f"124M/{name}"]
    assert convert_tf_checkpoint(folder).is_file()


def test_pipeline_downloads_a_damaged_file_again_after_conversion_fails(tmp_path):
    """The download rule's only output is manifest.json: un-pinning removes it, so the next run downloads."""
    from gptlab.testing import write_synthetic_gpt2_checkpoint
    from tests.workflow_helpers import copy_workflow, snakemake, write_config

    workdir = copy_workflow(tmp_path / "wf")
    write_synthetic_gpt2_checkpoint(workdir / "mirror" / "124M", n_ctx=64, n_embd=32, n_head=4, n_layer=2)
    gpt2 = {"sizes": ["124M"], "base_urls": [(workdir / "mirror").as_uri()], "check_known_sizes": False}
    (workdir / "corpus.txt").write_text("Every effort moves you.\n")  # the config wants one; unused here
    corpus = {"local_path": str(workdir / "corpus.txt"), "sha256": None}
    config = str(write_config(workdir / "study.yaml", gpt2=gpt2, corpus=corpus))
    tf_dir = workdir / "results" / "gpt2" / "124M" / "tf"
    target = "results/gpt2/124M/model.safetensors"

    first = snakemake(workdir, "results/gpt2/124M/tf/manifest.json", "--cores", "1", "--configfile", config)
    assert first.returncode == 0, first.stderr[-3000:]
    flip_byte(tf_dir / DATA)  # damaged on disk after the download verified it
    failed = snakemake(workdir, "--cores", "1", "--configfile", config, "--", target)
    assert failed.returncode != 0
    assert f"{DATA} is damaged: tensor model/" in failed.stderr
    assert not (tf_dir / "manifest.json").exists() and (tf_dir / f"{DATA}.bad").is_file()

    again = snakemake(workdir, "--cores", "1", "--configfile", config, "--", target)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "rule download_gpt2:" in again.stderr and "rule convert_gpt2:" in again.stderr
    assert (tf_dir / DATA).read_bytes() == (workdir / "mirror" / "124M" / DATA).read_bytes()
    assert verify_gpt2_file(workdir / target).endswith("matches the digest in the header")
