"""OpenAI's pretrained GPT-2 weights: download, verify, convert, load (book section 5.5).

Two ways in:

* the book's API, so the book's code runs against gptlab:
  ``settings, params = download_and_load_gpt2("124M", "gpt2")``, then
  ``load_weights_into_gpt(GPTModel(gpt2_model_config(settings)), params)``;
* the lean path the pipeline uses: :func:`download_gpt2` into a folder,
  :func:`convert_tf_checkpoint` once, then :func:`load_gpt2`, which
  memory-maps ``model.safetensors`` into a model built on the meta device (no
  random init, no second copy of the weights) and needs no TensorFlow.

Everything is importable from here; the modules, each depending only on those
above it:

================  ====================================================================
``layout``        file names, sizes, formats, ``hparams.json``, OpenAI's variable names
                  and shapes and how they map onto ``GPTModel`` (NumPy only)
``bundle``        TensorFlow's tensor-bundle index and data files read and checked
                  (block and tensor CRC-32Cs) without TensorFlow
``fetch``         :func:`download_gpt2`: mirrors, the manifest, each file's content
                  check before its sha256 is pinned, :func:`unpin_damaged_file`
``tf``            the only module that imports TensorFlow (inside functions):
                  :func:`convert_tf_checkpoint` and the book's TF reader
``load``          :func:`load_gpt2`, :func:`verify_gpt2_file`, :func:`release_origin`
                  (OpenAI's or not), the book's :func:`download_and_load_gpt2` and
                  :func:`load_weights_into_gpt`
================  ====================================================================

``gptlab.convert`` re-exports ``tf``'s public names.
"""

from ..lazy import lazy_exports

# Each name is imported on first use, so that ``gptlab.gpt2.fetch`` (downloading) and
# ``gptlab.gpt2.tf`` (converting) start without torch, which only :mod:`.load` needs.
_EXPORTS = {
    "..download": ("DownloadError",),
    ".fetch": (
        "BACKUP_BASE_URL",
        "BASE_URL",
        "CHECKS",
        "DOWNLOAD_ORDER",
        "KNOWN_SHA256",
        "MANIFEST_FORMAT",
        "TRUSTED",
        "download_gpt2",
        "gpt2_urls",
        "read_manifest",
        "unpin_damaged_file",
        "verify_release_file",
        "write_manifest",
    ),
    ".layout": (
        "DATA",
        "DIGEST_KEY",
        "FILENAMES",
        "FORMAT",
        "FORMAT_VERSION",
        "GPT2_HPARAMS",
        "HPARAM_KEYS",
        "KNOWN_FILE_SIZES",
        "MANIFEST",
        "SAFETENSORS",
        "SIZES",
        "check_hparams",
        "check_tf_layout",
        "gpt2_model_config",
        "read_hparams",
        "tf_variable_shapes",
    ),
    ".load": (
        "download_and_load_gpt2",
        "gpt2_file",
        "load_gpt2",
        "load_weights_into_gpt",
        "read_gpt2_hparams",
        "release_origin",
        "verify_gpt2_file",
    ),
    ".tf": (
        "convert_tf_checkpoint",
        "find_tf_checkpoint",
        "import_tensorflow",
        "iter_tf_variables",
        "load_gpt2_params_from_tf_ckpt",
    ),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
