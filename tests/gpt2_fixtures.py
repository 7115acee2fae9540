"""Shared GPT-2 fixtures: one tiny synthetic checkpoint per session, and an independent NumPy GPT-2.

Imported by the GPT-2 test modules (``from tests.gpt2_fixtures import ...``). The
checkpoint is cached at module level so TensorFlow writes it once per
session, whichever test module asks first.
"""

from __future__ import annotations

import numpy as np
import pytest

# Tiny, but with the real vocabulary (the tokenizer needs it) and n_ctx=256 so
# that the book's exercise-5.5 settings (max_length=256) apply unchanged.
TINY = {"n_vocab": 50257, "n_ctx": 256, "n_embd": 32, "n_head": 4, "n_layer": 2}
SEED = 7
_cache: dict = {}


def _once(key, make):
    if key not in _cache:
        _cache[key] = make()
    return _cache[key]


@pytest.fixture(scope="session")
def synthetic_ckpt(tmp_path_factory):
    """A folder with a synthetic GPT-2 release of shape TINY (read-only for tests: copy to modify)."""
    pytest.importorskip("tensorflow", reason="writing TF checkpoints needs tensorflow-cpu (gptlab[convert])")
    from gptlab.testing import write_synthetic_gpt2_checkpoint

    return _once(
        "synthetic",
        lambda: write_synthetic_gpt2_checkpoint(tmp_path_factory.mktemp("synthetic"), seed=SEED, **TINY),
    )


@pytest.fixture(scope="session")
def converted(synthetic_ckpt, tmp_path_factory):
    """``model.safetensors`` converted from :func:`synthetic_ckpt` (in its own folder)."""
    from gptlab.convert import convert_tf_checkpoint

    return _once(
        "converted",
        lambda: convert_tf_checkpoint(
            synthetic_ckpt, tmp_path_factory.mktemp("converted") / "model.safetensors"
        ),
    )


@pytest.fixture(scope="session")
def tf_variables(synthetic_ckpt):
    """The checkpoint's variables, read with TensorFlow directly (not through gptlab)."""
    import tensorflow as tf

    def read():
        reader = tf.train.load_checkpoint(str(synthetic_ckpt / "model.ckpt"))
        return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}

    return _once("variables", read)


def flip_byte(path, offset: int | None = None) -> int:
    """Invert one byte of ``path`` in place (by default the middle one); return its offset."""
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    return offset


def numpy_gpt2_logits(v: dict, hparams: dict, ids: np.ndarray) -> np.ndarray:
    """OpenAI's GPT-2 forward pass (gpt-2/src/model.py) in float64 NumPy, from the raw TF variables."""
    v = {k: np.asarray(a, dtype=np.float64) for k, a in v.items()}
    n_head = hparams["n_head"]

    def norm(x, g, b, eps=1e-5):
        u = x.mean(-1, keepdims=True)
        s = ((x - u) ** 2).mean(-1, keepdims=True)
        return (x - u) / np.sqrt(s + eps) * g + b

    def conv1d(x, scope):
        return x @ v[f"{scope}/w"][0] + v[f"{scope}/b"]

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    def split_heads(x):  # [batch, seq, d] -> [batch, head, seq, d/head]
        b, t, d = x.shape
        return x.reshape(b, t, n_head, d // n_head).transpose(0, 2, 1, 3)

    def attn(x, scope):
        q, k, vv = np.split(conv1d(x, f"{scope}/c_attn"), 3, axis=-1)
        q, k, vv = split_heads(q), split_heads(k), split_heads(vv)
        w = q @ k.transpose(0, 1, 3, 2) / np.sqrt(vv.shape[-1])
        t = w.shape[-1]
        keep = np.tril(np.ones((t, t)))
        w = w * keep - 1e10 * (1 - keep)
        w = np.exp(w - w.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        a = (w @ vv).transpose(0, 2, 1, 3)
        a = a.reshape(a.shape[0], a.shape[1], -1)
        return conv1d(a, f"{scope}/c_proj")

    t = ids.shape[1]
    h = v["model/wte"][ids] + v["model/wpe"][np.arange(t)]
    for i in range(hparams["n_layer"]):
        s = f"model/h{i}"
        h = h + attn(norm(h, v[f"{s}/ln_1/g"], v[f"{s}/ln_1/b"]), f"{s}/attn")
        m = norm(h, v[f"{s}/ln_2/g"], v[f"{s}/ln_2/b"])
        h = h + conv1d(gelu(conv1d(m, f"{s}/mlp/c_fc")), f"{s}/mlp/c_proj")
    h = norm(h, v["model/ln_f/g"], v["model/ln_f/b"])
    return h @ v["model/wte"].T


def assert_close_rel(actual, reference, rel=1e-5):
    """max |actual - reference| <= rel * max |reference| (relative to the logits' scale)."""
    actual, reference = np.asarray(actual, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    err = np.abs(actual - reference).max()
    scale = np.abs(reference).max()
    assert err <= rel * scale, f"max abs error {err:.3g} > {rel} x {scale:.3g}"
    return err / scale
