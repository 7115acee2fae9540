"""Corpus splitting and the book's sliding-window data loaders (chapter 2).

The loaders are ordinary ``torch.utils.data.DataLoader`` objects that draw from
PyTorch's global RNG exactly as the book's do. The shuffling sampler remembers
the seed of each epoch's permutation, so training can stop mid-epoch and resume
on the very same batch order.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from .tokenizer import ENDOFTEXT, get_tokenizer


class GPTDatasetV1(Dataset):
    """Input/target windows of ``max_length`` tokens, every ``stride`` tokens."""

    def __init__(self, txt, tokenizer, max_length, stride):
        if max_length < 1 or stride < 1:
            raise ValueError(f"max_length={max_length} and stride={stride} must be >= 1")
        token_ids = torch.tensor(tokenizer.encode(txt, allowed_special={ENDOFTEXT}))
        starts = range(0, len(token_ids) - max_length, stride)
        self.input_ids = [token_ids[i : i + max_length] for i in starts]
        self.target_ids = [token_ids[i + 1 : i + max_length + 1] for i in starts]

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, idx):
        return self.input_ids[idx], self.target_ids[idx]


ORDER_BLOCK = 1 << 16  # indices of an epoch's order turned into Python ints at a time


class ResumableRandomSampler(RandomSampler):
    """``RandomSampler`` that records each epoch's seed and can replay it.

    Without a resume request it consumes the global RNG exactly as
    ``RandomSampler`` does (one int64 draw per epoch), so book runs stay
    bit-identical. ``resume_from(seed, offset)`` makes the next iteration
    reuse ``seed`` (drawing nothing) and skip the first ``offset`` samples.
    """

    def __init__(self, data_source):
        super().__init__(data_source)
        self.last_seed: int | None = None
        self._resume: tuple[int, int] | None = None

    def resume_from(self, seed: int, offset: int) -> None:
        self._resume = (int(seed), int(offset))

    def __iter__(self):
        if self._resume is not None:
            seed, offset = self._resume
            self._resume = None
        else:
            seed, offset = int(torch.empty((), dtype=torch.int64).random_().item()), 0
        self.last_seed = seed
        generator = torch.Generator()
        generator.manual_seed(seed)
        order = torch.randperm(len(self.data_source), generator=generator)[offset:]
        # Python ints a block at a time: a corpus of millions of windows needs no list of them all.
        for block in order.split(ORDER_BLOCK):
            yield from block.tolist()


def create_dataloader_v1(
    txt,
    batch_size=4,
    max_length=256,
    stride=128,
    shuffle=True,
    drop_last=True,
    num_workers=0,
    tokenizer=None,
):
    tokenizer = tokenizer or get_tokenizer()
    dataset = GPTDatasetV1(txt, tokenizer, max_length, stride)
    if shuffle and len(dataset) == 0:
        raise ValueError(
            f"the training text yields no window of max_length={max_length} tokens: "
            "use a longer text or a smaller max_length"
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ResumableRandomSampler(dataset) if shuffle else None,
        drop_last=drop_last,
        num_workers=num_workers,
    )


def read_text(path) -> str:
    """The UTF-8 text of ``path``, newlines as ``open(path).read()`` gives them.

    Errors name the file and say what is wrong: ``FileNotFoundError``,
    ``IsADirectoryError``, ``PermissionError`` (``OSError``), or ``ValueError``
    for bytes that are not UTF-8 (with their offset and a way to convert them).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist; pass a UTF-8 text file") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{path} is a folder; pass a UTF-8 text file") from None
    except PermissionError:
        raise PermissionError(
            f"{path} cannot be read (permission denied); make it readable (chmod u+r) or pass another file"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}: {err.reason}); "
            f"convert it, e.g. 'iconv -f latin1 -t utf-8 {path} > {path.stem}.utf8{path.suffix}'"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_text(text: str, train_ratio: float = 0.90) -> tuple[str, str]:
    """Split by characters, as the book does: first ``train_ratio`` for training."""
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio={train_ratio} must be strictly between 0 and 1")
    split_idx = int(train_ratio * len(text))
    return text[:split_idx], text[split_idx:]


def create_book_loaders(
    text: str,
    train_ratio: float = 0.90,
    batch_size: int = 2,
    max_length: int = 256,
    stride: int = 256,
    seed: int | None = 123,
    tokenizer=None,
):
    """The chapter-5 train/val loaders (seeded as in the book before creating them)."""
    train_data, val_data = split_text(text, train_ratio)
    if seed is not None:
        torch.manual_seed(seed)
    common = dict(batch_size=batch_size, max_length=max_length, stride=stride, tokenizer=tokenizer)
    try:
        train_loader = create_dataloader_v1(train_data, drop_last=True, shuffle=True, **common)
    except ValueError as exc:
        raise ValueError(f"{exc} (training split of {len(train_data)} characters)") from None
    val_loader = create_dataloader_v1(val_data, drop_last=False, shuffle=False, **common)
    sizes = (f"{len(train_data)} characters", f"{len(val_data)} characters")
    return checked_loaders(train_loader, val_loader, *sizes, batch_size=batch_size, max_length=max_length)


def checked_loaders(train_loader, val_loader, train_size: str, val_size: str, *, batch_size, max_length):
    """The loaders, or an error when the training split fills no batch or the validation split no window.

    ``train_size`` and ``val_size`` say how large each split is ("2,000 characters", "500 tokens").
    """
    if len(train_loader) == 0:
        raise ValueError(
            f"the training split ({train_size}) yields no full batch of {batch_size} "
            f"windows of {max_length} tokens: lower max_length/batch_size or raise train_ratio"
        )
    if len(val_loader) == 0:
        raise ValueError(
            f"the validation split ({val_size}) yields no window of {max_length} "
            "tokens: lower max_length or train_ratio"
        )
    return train_loader, val_loader
