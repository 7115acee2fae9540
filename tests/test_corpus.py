"""Token corpora: chunked tokenization equals whole-text encoding; streamed windows equal the book's."""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from gptlab.corpus import TokenCorpus, corpus_sources, tokenize_corpus
from gptlab.data import GPTDatasetV1, ResumableRandomSampler, read_text
from gptlab.tokenizer import TOKENIZER_ID, get_tokenizer
from tests.conftest import REPO, make_text

VERDICT = Path(__file__).resolve().parents[1].parent / "shared/data/the-verdict.txt"
EOT = 50256


def token_ids(folder) -> list[int]:
    return np.fromfile(Path(folder) / "tokens.bin", dtype="<u2").tolist()


def expected_ids(path) -> list[int]:
    """What tokenizing the whole (newline-normalised) text at once gives, plus the eot."""
    return get_tokenizer().encode_ordinary(read_text(path)) + [EOT]


# --- tokenization ---------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2])
def test_the_verdict_in_small_chunks_equals_whole_encoding(tmp_path, threads):
    if not VERDICT.is_file():
        pytest.skip(f"The Verdict is not at {VERDICT} (it is kept outside the repository)")
    meta = tokenize_corpus(VERDICT, tmp_path / "c", threads=threads, chunk_chars=200, progress=False)
    ids = token_ids(tmp_path / "c")
    assert ids == get_tokenizer().encode_ordinary(VERDICT.read_text(encoding="utf-8")) + [EOT]
    assert meta["n_tokens"] == len(ids) and meta["documents"][0]["n_tokens"] == len(ids) - 1


TRICKY = [
    "word", "Word", "x", "42", "3.14", "'s", "'ll", "don't", " ", "  ", "\t", "\n", "\n\n", " \n", "\n ",
    "\r\n", "\r", "\r\r\n", "é", "日本語", "🙂", "\u00a0", "\u2028", "\x1c", "!", "...", "--",
    "<|endoftext|>",
]  # fmt: skip


@pytest.mark.parametrize("chunk_chars", [1, 3, 17, 64])
def test_random_texts_are_cut_only_where_encoding_cannot_change(tmp_path, chunk_chars):
    """Whitespace of every kind, CR/LF mixes and multi-byte characters split across reads."""
    rng = random.Random(chunk_chars)
    enc = get_tokenizer()
    for i in range(40):
        path = tmp_path / f"t{i}.txt"
        path.write_bytes("".join(rng.choice(TRICKY) for _ in range(rng.randint(0, 300))).encode())
        tokenize_corpus(path, tmp_path / "c", chunk_chars=chunk_chars, progress=False)
        assert token_ids(tmp_path / "c") == enc.encode_ordinary(read_text(path)) + [EOT], path.read_bytes()


def make_folder_corpus(root: Path) -> dict[str, bytes]:
    files = {
        "b.txt": make_text(300, seed=1).replace(". ", ".\n").encode(),
        "a/z.txt": make_text(200, seed=2).replace(". ", ".\r\n").encode(),  # Windows newlines
        "a/y.txt": ("one line " * 400).encode(),  # no point where a cut is safe
        "a-b/x.txt": b"Old Mac\rnewlines\r\rhere\n" * 20,
        "a/empty.txt": b"",
        "c/d/deep.txt": "Caf\u00e9 \u00fcber na\u00efve\n".encode() * 30,
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "notes.md").write_text("not part of the corpus\n")
    (root / "dir.txt").mkdir()  # a folder, not a text file
    return files


def test_a_folder_corpus_is_every_document_then_an_eot(tmp_path):
    src = tmp_path / "src"
    files = make_folder_corpus(src)
    order = ["a/empty.txt", "a/y.txt", "a/z.txt", "a-b/x.txt", "b.txt", "c/d/deep.txt"]  # folder by folder
    assert [p.relative_to(src).as_posix() for p in corpus_sources(src)] == order

    meta = tokenize_corpus(src, tmp_path / "c", threads=2, chunk_chars=16, progress=False)
    ids = token_ids(tmp_path / "c")
    assert ids == sum((expected_ids(src / name) for name in order), [])
    assert meta == json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["n_tokens"] == len(ids) and meta["dtype"] == "uint16" and meta["eot_id"] == EOT
    assert meta["tokenizer"] == TOKENIZER_ID
    assert meta["tokens_sha256"] == hashlib.sha256((tmp_path / "c" / "tokens.bin").read_bytes()).hexdigest()
    assert [d["name"] for d in meta["documents"]] == order
    for doc in meta["documents"]:
        own = expected_ids(src / doc["name"])[:-1]
        assert ids[doc["offset"] : doc["offset"] + doc["n_tokens"]] == own
        assert ids[doc["offset"] + doc["n_tokens"]] == EOT
        assert doc["bytes"] == len(files[doc["name"]])
        assert doc["sha256"] == hashlib.sha256(files[doc["name"]]).hexdigest()
    assert meta["documents"][0]["n_tokens"] == 0  # the empty file: its eot only


def test_a_single_file_is_its_own_source(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("hi\n")
    assert corpus_sources(path) == [path]


# --- errors ---------------------------------------------------------------------------------------


def test_missing_empty_or_wrong_sources_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*does not exist"):
        tokenize_corpus(tmp_path / "nowhere", tmp_path / "c", progress=False)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(ValueError, match=r"empty holds no \.txt file"):
        corpus_sources(tmp_path / "empty")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"data\.csv is not a \.txt file"):
        corpus_sources(tmp_path / "data.csv")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    ("data", "offset", "byte"),
    [(b"hello\n" * 100 + b"\xff rest\n", 600, "0xff"), (b"abc \xe2\x82", 4, "0xe2")],  # bad byte; cut short
)
def test_text_that_is_not_utf8_is_named_with_its_offset(tmp_path, data, offset, byte):
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.txt").write_text("fine\n")
    (src / "latin.txt").write_bytes(data)
    with pytest.raises(ValueError, match=rf"latin\.txt is not UTF-8 text \(byte {byte} at offset {offset}:"):
        tokenize_corpus(src, tmp_path / "c", chunk_chars=64, progress=False)


def test_a_failed_tokenization_leaves_no_complete_looking_folder(tmp_path):
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("fine\n")
    bad.write_bytes(b"\xff")
    tokenize_corpus(good, tmp_path / "c", progress=False)
    TokenCorpus(tmp_path / "c")
    with pytest.raises(ValueError, match="not UTF-8"):
        tokenize_corpus(bad, tmp_path / "c", progress=False)
    with pytest.raises(
        FileNotFoundError, match=r"c holds no complete token corpus \(meta\.json is missing\)"
    ):
        TokenCorpus(tmp_path / "c")
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["tokens.bin"]  # no temporary file left


def test_truncated_or_damaged_tokens_are_detected(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(make_text(200))
    tokenize_corpus(path, tmp_path / "c", progress=False)
    tokens = tmp_path / "c" / "tokens.bin"
    data = tokens.read_bytes()
    corpus = TokenCorpus(tmp_path / "c")
    corpus.verify()
    tokens.write_bytes(data[:-2])
    with pytest.raises(ValueError, match="truncated, delete the folder to tokenize again"):
        TokenCorpus(tmp_path / "c")
    tokens.write_bytes(data[:10] + b"\x00\x00" + data[12:])
    with pytest.raises(ValueError, match="damaged"):
        TokenCorpus(tmp_path / "c").verify()
    (tmp_path / "c" / "meta.json").write_text("{}")
    with pytest.raises(ValueError, match="is not the meta.json of a token corpus"):
        TokenCorpus(tmp_path / "c")


# --- loaders --------------------------------------------------------------------------------------


class FixedIds:
    """A 'tokenizer' whose encoding of anything is the given ids: GPTDatasetV1 over known tokens."""

    def __init__(self, ids):
        self.ids = ids

    def encode(self, txt, allowed_special=None):
        return self.ids


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> TokenCorpus:
    root = tmp_path_factory.mktemp("corpus")
    (root / "src").mkdir()
    for i in range(3):
        (root / "src" / f"doc{i}.txt").write_text(make_text(700, seed=i))
    tokenize_corpus(root / "src", root / "c", progress=False)
    return TokenCorpus(root / "c")


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def assert_same_batches(got, want):
    assert len(got) == len(want) > 0
    for (x, y), (x_ref, y_ref) in zip(got, want, strict=True):
        assert x.dtype == x_ref.dtype == torch.int64
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_loaders_give_the_books_windows_order_and_rng_use(corpus):
    ids = token_ids(corpus.path)
    ratio, bs, max_length, stride = 0.85, 3, 32, 24
    split = corpus.split(ratio)
    assert split == int(ratio * len(ids))

    train_loader, val_loader = corpus.loaders(ratio, bs, max_length, stride, seed=7)
    assert isinstance(train_loader.sampler, ResumableRandomSampler)
    got_train, got_val = batches(train_loader), batches(val_loader)
    after = torch.rand(4)

    ref_train = GPTDatasetV1(None, FixedIds(ids[:split]), max_length, stride)
    ref_val = GPTDatasetV1(None, FixedIds(ids[split:]), max_length, stride)
    torch.manual_seed(7)
    want_train = batches(
        DataLoader(ref_train, batch_size=bs, sampler=ResumableRandomSampler(ref_train), drop_last=True)
    )
    want_val = batches(DataLoader(ref_val, batch_size=bs, shuffle=False, drop_last=False))
    assert_same_batches(got_train, want_train)
    assert_same_batches(got_val, want_val)
    assert len(train_loader) == len(ref_train) // bs and len(val_loader) == -(-len(ref_val) // bs)
    assert torch.equal(after, torch.rand(4))  # the same global RNG draws as the book's loaders

    copy = pickle.loads(pickle.dumps(train_loader.dataset))  # as for worker processes: no open file
    assert all(torch.equal(a, b) for a, b in zip(copy[5], train_loader.dataset[5], strict=True))
    assert type(pickle.loads(pickle.dumps(train_loader.sampler))) is type(train_loader.sampler)


def test_the_order_is_the_books_permutation_made_ints_a_block_at_a_time(corpus):
    n = 150_001  # more than two of the blocks the order is converted in
    train_loader, _ = corpus.loaders(0.9, 2, 16, 16)
    assert type(train_loader.sampler) is ResumableRandomSampler
    sampler = ResumableRandomSampler(range(n))
    for offset in (0, 70_000):
        torch.manual_seed(3)
        list(sampler)
        generator = torch.Generator()
        generator.manual_seed(sampler.last_seed)
        want = torch.randperm(n, generator=generator).tolist()
        sampler.resume_from(sampler.last_seed, offset)
        assert list(sampler) == want[offset:]


def test_training_resumes_mid_epoch(corpus):
    train_loader, _ = corpus.loaders(0.9, 2, 16, 12, seed=11)
    full = batches(train_loader)
    seed = train_loader.sampler.last_seed
    again, _ = corpus.loaders(0.9, 2, 16, 12, seed=99)
    again.sampler.resume_from(seed, 5 * 2)
    assert_same_batches(batches(again), full[5:])
    assert again.sampler.last_seed == seed


def test_splits_too_small_for_a_window_are_clear_errors(corpus):
    with pytest.raises(ValueError, match=r"training split \(\d+ tokens\) yields no window"):
        corpus.loaders(0.001, 2, 256, 256)
    with pytest.raises(ValueError, match=r"training split \(\d+ tokens\) yields no full batch of 1000"):
        corpus.loaders(0.9, 1000, 16, 16)
    with pytest.raises(ValueError, match=r"validation split \(\d+ tokens\) yields no window"):
        corpus.loaders(0.999, 2, 64, 64)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        corpus.split(1.0)


# --- memory ---------------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, sys
    import torch
    from gptlab.corpus import TokenCorpus

    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

    train, val = TokenCorpus(sys.argv[1]).loaders(0.9, 8, 256, 256)
    it = iter(train)
    next(it)  # allocator and lazy imports warm
    base = peak = rss()
    for i, _ in enumerate(it):
        if i % 50 == 0:
            peak = max(peak, rss())
    for _ in val:
        pass
    loader_growth, batches = max(peak, rss()) - base, i + 2

    n = 4_000_000  # indices of an epoch: the book's sampler holds them all as Python ints
    sampler = type(train.sampler)(range(n))
    base = peak = rss()
    for i, _ in enumerate(sampler):
        if i % 500_000 == 0:
            peak = max(peak, rss())
    print(json.dumps({"loader_growth": loader_growth, "sampler_growth": peak - base, "batches": batches}))
    """
)


def test_memory_stays_flat_while_streaming_an_epoch(tmp_path):
    if not Path("/proc/self/status").is_file():
        pytest.skip("reads VmRSS from /proc (Linux)")
    n = 16_000_000  # 32 MB of tokens
    np.random.default_rng(0).integers(0, EOT, n, dtype=np.uint16).tofile(tmp_path / "tokens.bin")
    meta = {"format_version": 1, "dtype": "uint16", "n_tokens": n, "tokens_sha256": "", "documents": []}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["batches"] == int(0.9 * n) // 256 // 8  # a whole epoch was read
    # Reading through one long-lived memmap would add the 32 MB of touched pages here.
    assert info["loader_growth"] < 2 * n / 4, info
    # The order is 32 MB of int64; as one Python list it would be ~160 MB more.
    assert info["sampler_growth"] < 64 * 2**20, info
