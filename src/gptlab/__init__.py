"""gptlab: chapter 5 of *Build a Large Language Model (From Scratch)* as a reproducible study.

The book's public names are exported here so the book's code runs against gptlab.
"""

from .lazy import lazy_exports

# Importing ``gptlab`` (or any of its modules, as each workflow job does) imports none of them:
# each name is imported on first use, so that a job that only downloads or plots starts without torch.
_EXPORTS = {
    ".data": (
        "GPTDatasetV1",
        "create_book_loaders",
        "create_dataloader_v1",
        "read_text",
        "split_text",
    ),
    ".device": (
        "select_device",
        "set_threads",
    ),
    ".generation": (
        "RowSetting",
        "generate",
        "generate_rows",
        "generate_text_simple",
        "print_sampled_tokens",
        "softmax_with_temperature",
    ),
    ".gpt2": (
        "download_and_load_gpt2",
        "download_gpt2",
        "gpt2_model_config",
        "load_gpt2",
        "load_gpt2_params_from_tf_ckpt",
        "load_weights_into_gpt",
    ),
    ".losses": (
        "calc_loss_batch",
        "calc_loss_loader",
        "evaluate_model",
        "perplexity",
    ),
    ".model": (
        "GPT_CONFIG_124M",
        "GPTModel",
        "KVCache",
    ),
    ".tokenizer": (
        "get_tokenizer",
        "text_to_token_ids",
        "token_ids_to_text",
    ),
    ".training.checkpoint": (
        "CheckpointError",
        "load_checkpoint",
        "model_from_checkpoint",
        "save_checkpoint",
    ),
    ".training.config": ("TrainConfig",),
    ".training.loop": (
        "NonFiniteLossError",
        "TrainingInterrupted",
        "TrainState",
        "generate_and_print_sample",
        "train_model",
        "train_model_simple",
    ),
}

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
