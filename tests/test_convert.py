"""Synthetic checkpoints in OpenAI's layout, and their conversion to safetensors."""

# ruff: noqa: F811  (the fixtures imported from tests.gpt2_fixtures are used as arguments)

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

from gptlab.gpt2 import load_gpt2
from gptlab.gpt2_params import tf_variable_shapes
from gptlab.tokenizer import ENCODER_JSON_SHA256, VOCAB_BPE_SHA256, get_tokenizer
from tests.gpt2_fixtures import (  # noqa: F401  (fixtures)
    TINY,
    assert_close_rel,
    converted,
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
