import shutil

import pytest

from gptlab.tokenizer import _default_data_dir, get_tokenizer, text_to_token_ids, token_ids_to_text


def test_book_example_ids():
    tok = get_tokenizer()
    assert tok.encode("Every effort moves you") == [6109, 3626, 6100, 345]
    assert tok.n_vocab == 50257
    assert tok.encode("<|endoftext|>", allowed_special={"<|endoftext|>"}) == [50256]


def test_round_trip_and_batch_dim():
    tok = get_tokenizer()
    ids = text_to_token_ids("Hello, do you like tea? <|endoftext|> In the sunlit terraces", tok)
    assert ids.shape[0] == 1
    assert ids[0].tolist()[:4] == [15496, 11, 466, 345]
    assert token_ids_to_text(ids, tok) == "Hello, do you like tea? <|endoftext|> In the sunlit terraces"


def test_verdict_token_count(verdict_text):
    assert len(get_tokenizer().encode(verdict_text)) == 5145


def test_corrupt_vocabulary_is_refused(tmp_path):
    for name in ("vocab.bpe", "encoder.json"):
        shutil.copy(_default_data_dir() / name, tmp_path / name)
    data = bytearray((tmp_path / "vocab.bpe").read_bytes())
    data[100] ^= 1
    (tmp_path / "vocab.bpe").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="vocab.bpe.*sha256|sha256"):
        get_tokenizer(str(tmp_path))


def test_explicit_directory_with_real_files(tmp_path):
    for name in ("vocab.bpe", "encoder.json"):
        shutil.copy(_default_data_dir() / name, tmp_path / name)
    assert get_tokenizer(str(tmp_path)).encode("Every effort moves you") == [6109, 3626, 6100, 345]
