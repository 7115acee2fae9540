"""The tensor-bundle checker against checkpoints written by TensorFlow: same entries, same checksums."""

# ruff: noqa: F811  (the fixtures imported from tests.gpt2_fixtures are used as arguments)

from __future__ import annotations

import shutil

import numpy as np
import pytest

from gptlab.gpt2 import bundle
from gptlab.gpt2.layout import tf_variable_shapes
from tests.gpt2_fixtures import TINY, flip_byte, synthetic_ckpt  # noqa: F401  (fixtures)

tf = pytest.importorskip("tensorflow", reason="writing TF checkpoints needs tensorflow-cpu (gptlab[convert])")

DATA = "model.ckpt.data-00000-of-00001"


@pytest.fixture
def ckpt(synthetic_ckpt, tmp_path):
    """A writable copy of the synthetic release."""
    return shutil.copytree(synthetic_ckpt, tmp_path / "ckpt")


def test_crc32c_and_its_mask():
    assert bundle.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert bundle.crc32c(b"6789", bundle.crc32c(b"12345")) == 0xE3069283
    assert bundle.mask(0) == 0xA282EAD8
    for crc in (0, 1, 0xE3069283, 0xFFFFFFFF):
        assert bundle.unmask(bundle.mask(crc)) == crc


def test_index_holds_what_tensorflow_reads(synthetic_ckpt):
    header, entries = bundle.read_index(synthetic_ckpt / "model.ckpt.index")
    assert header == {"num_shards": 1, "endianness": 0}
    reader = tf.train.load_checkpoint(str(synthetic_ckpt / "model.ckpt"))
    assert {n: list(e.shape) for n, e in entries.items()} == reader.get_variable_to_shape_map()
    assert {n: e.shape for n, e in entries.items()} == tf_variable_shapes(TINY)
    assert all(e.dtype == bundle.DT_FLOAT == tf.float32.as_datatype_enum for e in entries.values())
    # the stored checksums are the crc32c of each tensor's little-endian float32 bytes
    for name, e in entries.items():
        value = reader.get_tensor(name)
        assert e.size == value.nbytes and e.crc32c == bundle.crc32c(value.astype("<f4").tobytes()), name
    # the tensors tile the data file
    spans = sorted((e.offset, e.offset + e.size) for e in entries.values())
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    size = (synthetic_ckpt / DATA).stat().st_size
    assert spans[-1][1] == size
    assert bundle.check_data(synthetic_ckpt / DATA, entries.values()) == size


def test_every_flipped_bit_of_the_index_is_detected(ckpt):
    index = ckpt / "model.ckpt.index"
    good = index.read_bytes()
    missed = []
    for offset in range(len(good)):
        for bit in range(8):
            damaged = bytearray(good)
            damaged[offset] ^= 1 << bit
            try:
                bundle.parse_index(bytes(damaged), index)
                missed.append((offset, bit))
            except bundle.BundleError as err:
                assert err.path == index
    assert not missed, f"undetected bit flips at (byte, bit) {missed[:10]}"
    index.write_bytes(good[:-1])
    with pytest.raises(bundle.BundleError, match="wrong magic number"):
        bundle.read_index(index)


def test_a_flipped_byte_in_any_tensor_fails_here_as_in_tensorflow(ckpt):
    _, entries = bundle.read_index(ckpt / "model.ckpt.index")
    data = ckpt / DATA
    for e in entries.values():
        offset = flip_byte(data, e.offset + e.size // 2)
        with pytest.raises(
            bundle.BundleError, match=f"tensor {e.name} .* has crc32c 0x[0-9a-f]{{8}}, the index"
        ):
            bundle.check_data(data, entries.values())
        reader = tf.train.load_checkpoint(str(ckpt / "model.ckpt"))
        with pytest.raises(tf.errors.OpError, match="Checksum does not match"):
            reader.get_tensor(e.name)
        flip_byte(data, offset)  # restore
    bundle.check_data(data, entries.values())


def test_data_file_of_the_wrong_size(ckpt):
    _, entries = bundle.read_index(ckpt / "model.ckpt.index")
    data = ckpt / DATA
    good = data.read_bytes()
    data.write_bytes(good[:-1])
    with pytest.raises(bundle.BundleError, match=r"truncated"):
        bundle.check_data(data, entries.values())
    data.write_bytes(good + b"\0")
    with pytest.raises(bundle.BundleError, match=r"longer than the index says"):
        bundle.check_data_size(data, entries.values())


def test_not_float32_is_reported(tmp_path):
    """A checkpoint of other dtypes (written by TensorFlow) is read, and refused as a GPT-2 checkpoint."""
    with tf.Graph().as_default():
        a = tf.compat.v1.get_variable("a", initializer=np.arange(6, dtype=np.int64).reshape(2, 3))
        b = tf.compat.v1.get_variable("b", initializer=np.ones(4, dtype=np.float32))
        saver = tf.compat.v1.train.Saver([a, b])
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(tmp_path / "model.ckpt"))
    _, entries = bundle.read_index(tmp_path / "model.ckpt.index")
    assert (entries["a"].shape, entries["a"].size, entries["b"].shape) == ((2, 3), 48, (4,))
    bundle.check_data(tmp_path / DATA, entries.values())
    with pytest.raises(bundle.BundleError, match="tensor a has dtype 9, not float32"):
        bundle.check_float32(tmp_path / "model.ckpt.index", entries.values())
