"""Conversion lives in :mod:`gptlab.gpt2.tf`; this name keeps existing imports working."""

from .gpt2.layout import DIGEST_KEY, FORMAT, FORMAT_VERSION, SAFETENSORS, read_hparams
from .gpt2.tf import (
    convert_tf_checkpoint,
    find_tf_checkpoint,
    import_tensorflow,
    iter_tf_variables,
    load_gpt2_params_from_tf_ckpt,
)

__all__ = [
    "DIGEST_KEY",
    "FORMAT",
    "FORMAT_VERSION",
    "SAFETENSORS",
    "convert_tf_checkpoint",
    "find_tf_checkpoint",
    "import_tensorflow",
    "iter_tf_variables",
    "load_gpt2_params_from_tf_ckpt",
    "read_hparams",
]
