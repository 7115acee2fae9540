import pytest
import torch
from torch.utils.data import DataLoader

from gptlab.data import (
    GPTDatasetV1,
    ResumableRandomSampler,
    create_book_loaders,
    create_dataloader_v1,
    read_text,
    split_text,
)
from gptlab.tokenizer import get_tokenizer

book_ch02 = pytest.importorskip(
    "llms_from_scratch.ch02", reason="the book's package (llms-from-scratch) is not installed"
)


def test_sliding_windows():
    tok = get_tokenizer()
    ds = GPTDatasetV1("one two three four five six seven eight nine ten", tok, max_length=4, stride=2)
    ids = tok.encode("one two three four five six seven eight nine ten")
    assert len(ds) == len(range(0, len(ids) - 4, 2))
    x, y = ds[1]
    assert x.tolist() == ids[2:6] and y.tolist() == ids[3:7]


def test_loader_batches_and_rng_equal_the_books(small_text):
    torch.manual_seed(123)
    ours = [
        (x.clone(), y.clone())
        for x, y in create_dataloader_v1(small_text, batch_size=2, max_length=16, stride=16)
    ]
    after_ours = torch.rand(1)
    torch.manual_seed(123)
    book = list(book_ch02.create_dataloader_v1(small_text, batch_size=2, max_length=16, stride=16))
    after_book = torch.rand(1)
    assert len(ours) == len(book) > 3
    for (a, b), (c, d) in zip(ours, book, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)
    assert torch.equal(after_ours, after_book)  # same global RNG consumption


def test_sampler_replays_an_epoch_from_an_offset():
    data = list(range(10))
    sampler = ResumableRandomSampler(data)
    torch.manual_seed(5)
    full = list(sampler)
    seed = sampler.last_seed
    sampler.resume_from(seed, 4)
    state = torch.get_rng_state()
    assert list(sampler) == full[4:]
    assert torch.equal(state, torch.get_rng_state())  # the replay draws nothing
    assert sorted(full) == data


def test_split_by_characters():
    train, val = split_text("abcdefghij", 0.9)
    assert (train, val) == ("abcdefghi", "j")
    with pytest.raises(ValueError, match="train_ratio=1.0"):
        split_text("abc", 1.0)


def test_book_loader_sizes(verdict_text):
    train_loader, val_loader = create_book_loaders(verdict_text)
    assert (len(train_loader), len(val_loader)) == (9, 1)
    assert isinstance(train_loader, DataLoader)
    assert next(iter(val_loader))[0].shape == (2, 256)


def test_too_short_text_is_a_clear_error():
    with pytest.raises(ValueError, match="yields no (full batch|window)"):
        create_book_loaders("a short text " * 20, max_length=256, stride=256)


def test_missing_corpus_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_text(tmp_path / "nope.txt")


def test_unreadable_texts_are_named_with_what_is_wrong(tmp_path):
    """Every reader of a text (the pipeline's corpus, the CLI's --text) gets these messages."""
    with pytest.raises(IsADirectoryError, match=f"{tmp_path} is a folder"):
        read_text(tmp_path)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{latin1} is not UTF-8 text \(byte 0xe9 at offset 3"):
        read_text(latin1)
    windows = tmp_path / "crlf.txt"
    windows.write_bytes(b"one\r\ntwo\rthree\n")
    assert read_text(windows) == "one\ntwo\nthree\n"  # as open(path).read() gives it
