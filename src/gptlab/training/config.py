"""The settings of a pretraining run, in one place: ``TrainConfig``.

Every default is the book's (chapter 5, listing 5.3 and the code around it), so ``TrainConfig()`` with
``GPT_CONFIG_124M`` is the book's run. The model's shape is not part of it: that is the model config
(``GPT_CONFIG_124M`` or the pipeline's ``model`` section).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass

from ..tokenizer import TOKENIZER_ID


@dataclass(frozen=True)
class TrainConfig:
    """Every training and data setting of a run; checked when it is made, naming the field at fault."""

    num_epochs: int = 10  # total epochs the run should have completed (the book trains 10)
    train_ratio: float = 0.90  # share of the text's characters that trains (the book's 90/10 split)
    batch_size: int = 2  # windows per batch; the book keeps it small so that a laptop can train
    max_length: int | None = None  # tokens per window; None: the model's context_length (256 in the book)
    stride: int | None = None  # tokens between window starts; None: max_length (windows do not overlap)
    seed: int = 123  # torch.manual_seed before the loaders and again before the model, as the book does
    learning_rate: float = 0.0004  # AdamW's lr, the book's value for this small corpus
    weight_decay: float = 0.1  # AdamW's weight decay (the book's)
    eval_freq: int = 5  # evaluate (and print a loss line) every this many optimizer steps
    eval_iter: int = 5  # batches per loss estimate while training: a cheap estimate, not the full loss
    start_context: str = "Every effort moves you"  # prompt of the greedy sample printed after each epoch
    fast: bool = False  # fast mode (gptlab.fast): faster, equal to the book's run only up to rounding

    def __post_init__(self):
        for name in ("num_epochs", "batch_size", "eval_freq", "eval_iter"):
            _at_least_one(name, getattr(self, name))
        for name in ("max_length", "stride"):
            if getattr(self, name) is not None:
                _at_least_one(name, getattr(self, name))
        for name in ("learning_rate", "weight_decay"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}={value} must be a finite number >= 0")
        if not 0 < self.train_ratio < 1:
            raise ValueError(f"train_ratio={self.train_ratio} must be strictly between 0 and 1")
        if not isinstance(self.start_context, str) or not self.start_context:
            raise ValueError(f"start_context={self.start_context!r} must be a non-empty string")

    def replace(self, **changes) -> TrainConfig:
        """A copy with ``changes``; a name that is not a field is a TypeError naming it."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown training setting(s) {', '.join(unknown)}: not fields of TrainConfig")
        return dataclasses.replace(self, **changes)

    def for_model(self, model_config: dict) -> TrainConfig:
        """``max_length`` and ``stride`` filled in for ``model_config``, checked against its context."""
        context = model_config["context_length"]
        max_length = self.max_length or context
        if max_length > context:
            raise ValueError(f"max_length={max_length} exceeds the model's context_length={context}")
        return dataclasses.replace(self, max_length=max_length, stride=self.stride or max_length)

    def record(self, text) -> dict:
        """The settings as checkpoints and ``.meta.json`` files record them, with the text's hash.

        ``text`` is the corpus as a string, or a tokenized corpus (:class:`gptlab.corpus.TokenCorpus`),
        recorded by its tokens' hash and the token where its validation split starts.
        """
        if isinstance(text, str):
            corpus = {"corpus_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
        else:
            corpus = {"corpus_tokens_sha256": text.sha256, "corpus_split_token": text.split(self.train_ratio)}
        return {**dataclasses.asdict(self), "fast": bool(self.fast), **corpus, "tokenizer": TOKENIZER_ID}


def _at_least_one(name: str, value) -> None:
    if value < 1:
        raise ValueError(f"{name}={value} must be >= 1")
