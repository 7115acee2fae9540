"""GPT-2 releases: download from (fake) mirrors, manifest, the book's API and the lean loader."""

# ruff: noqa: F811  (the fixtures imported from tests.gpt2_fixtures are used as arguments)

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat

import pytest
import torch

from gptlab.download import DownloadError
from gptlab.gpt2 import (
    FILENAMES,
    GPT2_HPARAMS,
    download_and_load_gpt2,
    download_gpt2,
    gpt2_model_config,
    load_gpt2,
    load_weights_into_gpt,
    read_manifest,
    verify_release_file,
)
from gptlab.model import GPTModel
from gptlab.testing import FileServer
from tests.gpt2_fixtures import TINY, converted, flip_byte, synthetic_ckpt  # noqa: F401  (fixtures)

FAST = dict(backoff=0.0, progress=False, timeout=10, check_known_sizes=False)
SIZE = "124M"


@pytest.fixture
def mirrors(synthetic_ckpt, tmp_path):
    """Two mirror folders ``primary/124M/*`` and ``backup/124M/*`` holding the synthetic release."""
    root = tmp_path / "www"
    for name in ("primary", "backup"):
        shutil.copytree(synthetic_ckpt, root / name / SIZE)
    return root


def _bases(server):
    return dict(base_urls=[server.url("primary"), server.url("backup")])


def test_download_writes_verified_files_and_manifest(mirrors, tmp_path, synthetic_ckpt):
    dest = tmp_path / "gpt2" / SIZE
    with FileServer(mirrors, content_md5=True) as server:
        assert download_gpt2(SIZE, dest, **_bases(server), **FAST) == dest
    for name in FILENAMES:
        assert (dest / name).read_bytes() == (synthetic_ckpt / name).read_bytes()
    manifest = read_manifest(dest)
    assert manifest["model_size"] == SIZE and set(manifest["files"]) == set(FILENAMES)
    entry = manifest["files"]["model.ckpt.index"]
    assert entry["sha256"] == hashlib.sha256((synthetic_ckpt / "model.ckpt.index").read_bytes()).hexdigest()
    assert entry["url"] == server.url(f"primary/{SIZE}/model.ckpt.index")
    assert sorted(p.name for p in dest.iterdir()) == sorted([*FILENAMES, "manifest.json"])


def test_second_run_verifies_locally_without_network(mirrors, tmp_path):
    dest = tmp_path / SIZE
    with FileServer(mirrors) as server:
        download_gpt2(SIZE, dest, **_bases(server), **FAST)
    before = (dest / "manifest.json").read_bytes()
    # the server is gone: a complete, intact folder needs no network
    download_gpt2(SIZE, dest, **_bases(server), **FAST)
    assert (dest / "manifest.json").read_bytes() == before


def test_manifest_mismatch_is_detected_and_repaired(mirrors, tmp_path, synthetic_ckpt):
    dest = tmp_path / SIZE
    with FileServer(mirrors) as server:
        download_gpt2(SIZE, dest, **_bases(server), **FAST)
        n = len(server.requests)
        data = bytearray((dest / "model.ckpt.data-00000-of-00001").read_bytes())
        data[100] ^= 0xFF  # same size, one byte off: only the sha256 can tell
        (dest / "model.ckpt.data-00000-of-00001").write_bytes(bytes(data))
        download_gpt2(SIZE, dest, **_bases(server), **FAST)
        refetched = [p for p, _, _ in server.requests[n:]]
    assert refetched == [f"primary/{SIZE}/model.ckpt.data-00000-of-00001"]
    assert (dest / "model.ckpt.data-00000-of-00001").read_bytes() == (
        synthetic_ckpt / "model.ckpt.data-00000-of-00001"
    ).read_bytes()


def test_manifest_mismatch_without_network_is_an_error(mirrors, tmp_path):
    dest = tmp_path / SIZE
    with FileServer(mirrors) as server:
        download_gpt2(SIZE, dest, **_bases(server), **FAST)
    (dest / "hparams.json").write_text(json.dumps({**TINY, "n_layer": 3}))
    with pytest.raises(DownloadError, match=r"hparams.json(.|\n)*manifest.json there pins their sha256"):
        download_gpt2(SIZE, dest, **_bases(server), retries=0, **FAST)
    assert not (dest / "hparams.json").exists()  # the bad file is moved aside, not left as valid


def test_mirror_serving_other_bytes_than_the_manifest_is_rejected(mirrors, tmp_path):
    dest = tmp_path / SIZE
    with FileServer(mirrors) as server:
        download_gpt2(SIZE, dest, **_bases(server), **FAST)
        (dest / "vocab.bpe").unlink()
        for name in ("primary", "backup"):
            (mirrors / name / SIZE / "vocab.bpe").write_bytes(b"#version: 0.2\nother merges\n")
        with pytest.raises(DownloadError, match="vocab.bpe"):
            download_gpt2(SIZE, dest, **_bases(server), retries=0, **FAST)
    assert not (dest / "vocab.bpe").exists()


def test_known_sizes_reject_files_that_are_not_openais(mirrors, tmp_path):
    with FileServer(mirrors) as server:
        with pytest.raises(DownloadError, match=r"hparams.json(.|\n)*server reports 86 bytes, expected 90"):
            download_gpt2(SIZE, tmp_path / SIZE, **_bases(server), backoff=0, progress=False)


def test_primary_404_falls_back_to_backup(mirrors, tmp_path):
    dest = tmp_path / SIZE
    with FileServer(mirrors, missing={f"primary/{SIZE}/{n}" for n in FILENAMES}) as server:
        download_gpt2(SIZE, dest, **_bases(server), **FAST)
    urls = {e["url"] for e in read_manifest(dest)["files"].values()}
    assert all(u.startswith(server.url("backup")) for u in urls)
    statuses = {p.split("/")[0]: s for p, _, s in server.requests}
    assert statuses == {"primary": 404, "backup": 200}


def test_cut_connection_on_the_big_file_resumes(mirrors, tmp_path, synthetic_ckpt):
    big = f"primary/{SIZE}/model.ckpt.data-00000-of-00001"
    dest = tmp_path / SIZE
    with FileServer(mirrors, cut_after={big: 2_000_000}) as server:
        download_gpt2(SIZE, dest, **_bases(server), **FAST)
    name = "model.ckpt.data-00000-of-00001"
    assert (dest / name).read_bytes() == (synthetic_ckpt / name).read_bytes()
    ranges = [r for p, r, _ in server.requests if p == big]
    assert ranges == [None, "bytes=2000000-", "bytes=4000000-", "bytes=6000000-"]


def test_both_mirrors_failing_names_urls_and_what_helps(mirrors, tmp_path):
    dest = tmp_path / SIZE
    with FileServer(mirrors, missing={f"{m}/{SIZE}/checkpoint" for m in ("primary", "backup")}) as server:
        with pytest.raises(DownloadError) as info:
            download_gpt2(SIZE, dest, **_bases(server), **FAST)
    message = str(info.value)
    assert server.url(f"primary/{SIZE}/checkpoint") in message
    assert server.url(f"backup/{SIZE}/checkpoint") in message
    # what generally helps for a release (not download_file's advice for a single file) ...
    assert f"use another mirror (https://, http:// or file:// of a folder holding {SIZE}/<file>)" in message
    assert f"into {dest} yourself" in message and "copy a verified file" not in message
    # ... and a caller adds where its mirrors are set, first
    assert info.value.advise("set gpt2.base_urls").advice[0] == "set gpt2.base_urls"
    assert "\nFix: set gpt2.base_urls; or check the network connection" in str(info.value)
    assert not (dest / "checkpoint").exists()  # the first file: nothing verified, nothing pinned
    assert not (dest / "manifest.json").exists()


def test_files_verified_before_a_failure_are_pinned(mirrors, tmp_path):
    dest = tmp_path / SIZE
    with FileServer(mirrors, missing={f"{m}/{SIZE}/vocab.bpe" for m in ("primary", "backup")}) as server:
        with pytest.raises(DownloadError, match="vocab.bpe"):
            download_gpt2(SIZE, dest, **_bases(server), **FAST)
        assert set(read_manifest(dest)["files"]) == set(FILENAMES) - {"vocab.bpe"}
        server.missing.clear()
        n = len(server.requests)
        download_gpt2(SIZE, dest, **_bases(server), **FAST)
        assert [p for p, _, _ in server.requests[n:]] == [f"primary/{SIZE}/vocab.bpe"]
    assert set(read_manifest(dest)["files"]) == set(FILENAMES)


def test_file_url_mirror_for_offline_use(mirrors, tmp_path, synthetic_ckpt):
    dest = download_gpt2(SIZE, tmp_path / SIZE, [(mirrors / "primary").as_uri()], **FAST)
    assert (dest / "vocab.bpe").read_bytes() == (synthetic_ckpt / "vocab.bpe").read_bytes()
    # one base URL, not in a list, works too
    again = download_gpt2(SIZE, tmp_path / "again", (mirrors / "backup").as_uri(), **FAST)
    assert {e["url"].split("/")[-3] for e in read_manifest(again)["files"].values()} == {"backup"}


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"model_size='125M' is not a GPT-2 release"):
        download_gpt2("125M", tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "gptlab-gpt2-manifest", "files": {}}))
    with pytest.raises(ValueError, match="is for GPT-2 None, not 124M"):
        download_gpt2("124M", tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        download_gpt2("124M", tmp_path)
    with pytest.raises(ValueError, match="no base URL given for GPT-2 124M"):
        download_gpt2("124M", tmp_path / "empty", [])


def test_book_api_gives_the_same_logits_as_load_gpt2(mirrors, tmp_path, converted):
    with FileServer(mirrors) as server:
        settings, params = download_and_load_gpt2(SIZE, tmp_path / "models", **_bases(server), **FAST)
    assert (tmp_path / "models" / SIZE / "manifest.json").is_file()
    assert settings == TINY and len(params["blocks"]) == TINY["n_layer"]
    assert params["blocks"][0]["attn"]["c_attn"]["w"].shape == (32, 96)  # the book's squeezed arrays
    assert set(params) == {"blocks", "wte", "wpe", "g", "b"}

    torch.manual_seed(123)
    gpt = GPTModel(gpt2_model_config(settings))
    load_weights_into_gpt(gpt, params)
    gpt.eval()
    lean = load_gpt2(converted)
    ids = torch.randint(0, TINY["n_vocab"], (2, 50))
    with torch.no_grad():
        assert torch.equal(gpt(ids), lean(ids))
    # the book's mapping keeps out_head as a separate copy; the lean one ties it
    assert gpt.out_head.weight is not gpt.tok_emb.weight
    assert torch.equal(gpt.out_head.weight, gpt.tok_emb.weight)


def test_load_weights_into_gpt_errors(mirrors, tmp_path):
    with FileServer(mirrors) as server:
        settings, params = download_and_load_gpt2(SIZE, tmp_path, **_bases(server), **FAST)
    wrong = gpt2_model_config({**settings, "n_embd": 64})
    with pytest.raises(ValueError, match=r"shape mismatch for pos_emb.weight \(wpe\): model \(256, 64\)"):
        load_weights_into_gpt(GPTModel(wrong), params)
    with pytest.raises(ValueError, match="the model has 3 transformer blocks, the checkpoint 2"):
        load_weights_into_gpt(GPTModel(gpt2_model_config({**settings, "n_layer": 3})), params)
    no_bias = {**gpt2_model_config(settings), "qkv_bias": False}
    with pytest.raises(ValueError, match="GPT-2 needs qkv_bias=True"):
        load_weights_into_gpt(GPTModel(no_bias), params)


def test_load_gpt2_builds_the_model_from_hparams(converted):
    model = load_gpt2(converted.parent, drop_rate=0.1)  # the folder works too
    assert model.cfg == {
        "vocab_size": 50257,
        "context_length": TINY["n_ctx"],
        "emb_dim": TINY["n_embd"],
        "n_heads": TINY["n_head"],
        "n_layers": TINY["n_layer"],
        "drop_rate": 0.1,
        "qkv_bias": True,
    }
    assert not model.training
    assert model.out_head.weight is model.tok_emb.weight  # tied
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(b.device.type == "cpu" for b in model.buffers())
    assert sum(p.numel() for p in model.parameters()) == sum(
        int(torch.tensor(s).prod()) for s in _tf_shapes()
    )
    # parameters stay trainable and writable (copy-on-write mapping, the file is untouched)
    before = converted.read_bytes()
    assert model.tok_emb.weight.requires_grad
    with torch.no_grad():
        model.tok_emb.weight.add_(1.0)
    assert converted.read_bytes() == before


def _tf_shapes():
    from gptlab.gpt2.layout import tf_variable_shapes

    return list(tf_variable_shapes(TINY).values())


def test_load_gpt2_errors(tmp_path, synthetic_ckpt, converted):
    with pytest.raises(FileNotFoundError, match="convert it first"):
        load_gpt2(synthetic_ckpt)
    with pytest.raises(FileNotFoundError, match="is a model size, not a file"):
        load_gpt2("124M")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="is not a gptlab GPT-2 file"):
        load_gpt2(tmp_path / "other.safetensors")


def test_gpt2_model_config():
    cfg = gpt2_model_config(GPT2_HPARAMS["355M"])
    assert cfg == {
        "vocab_size": 50257,
        "context_length": 1024,
        "emb_dim": 1024,
        "n_heads": 16,
        "n_layers": 24,
        "drop_rate": 0.0,
        "qkv_bias": True,
    }
    with pytest.raises(ValueError, match="lack"):
        gpt2_model_config({"n_vocab": 5})
    with pytest.raises(ValueError, match="n_embd=768 is not divisible by n_head=5"):
        gpt2_model_config({**GPT2_HPARAMS["124M"], "n_head": 5})
    with pytest.raises(ValueError, match=r"n_layer='12' must be a positive integer"):
        gpt2_model_config({**GPT2_HPARAMS["124M"], "n_layer": "12"})


# --------------------------------------------------------------------------- content checks before pinning

DATA = "model.ckpt.data-00000-of-00001"


def test_manifest_records_how_each_file_was_verified(mirrors, tmp_path):
    dest = tmp_path / SIZE
    with FileServer(mirrors) as server:
        download_gpt2(SIZE, dest, **_bases(server), **FAST)
    verified = {name: entry["verified"] for name, entry in read_manifest(dest)["files"].items()}
    assert verified == {
        "checkpoint": "parsed, names model.ckpt",
        "encoder.json": "known sha256",
        "hparams.json": "parsed",
        "model.ckpt.index": "tensor-bundle block crc32c, float32 dtypes, shapes of hparams.json",
        DATA: "tensor-bundle crc32c of every tensor, size",
        "model.ckpt.meta": "trusted on first use",
        "vocab.bpe": "known sha256",
    }


def test_corrupted_transfer_without_content_md5_is_caught_before_pinning(mirrors, tmp_path, synthetic_ckpt):
    """A flipped byte that no Content-MD5 reveals: the tensor checksums do, and nothing is pinned."""
    dest = tmp_path / SIZE
    both = {f"{m}/{SIZE}/{DATA}" for m in ("primary", "backup")}
    with FileServer(mirrors, content_md5=False, corrupt=both) as server:
        with pytest.raises(DownloadError) as info:
            download_gpt2(SIZE, dest, **_bases(server), **FAST)
        message = str(info.value)
        assert message.startswith(f"no copy of {DATA} passes its check, so none was pinned in manifest.json")
        for mirror in ("primary", "backup"):
            url = server.url(f"{mirror}/{SIZE}/{DATA}")
            assert (
                f"{url}: fails its check (tensor-bundle crc32c of every tensor, size): tensor model/"
                in message
            )
        assert "the index records" in message and "Run the download again to fetch it anew" in message
        assert f"moved to {dest / DATA}.bad" in message
        assert not (dest / DATA).exists() and (dest / f"{DATA}.bad").is_file()
        assert DATA not in read_manifest(dest)["files"]  # the files checked before it are pinned
        # the mirror heals (or the next try gets intact bytes): running again fetches the file anew
        server.corrupt.clear()
        n = len(server.requests)
        download_gpt2(SIZE, dest, **_bases(server), **FAST)
        assert [p for p, _, _ in server.requests[n:]] == [
            f"primary/{SIZE}/{DATA}",
            f"primary/{SIZE}/model.ckpt.meta",
            f"primary/{SIZE}/vocab.bpe",
        ]
    assert (dest / DATA).read_bytes() == (synthetic_ckpt / DATA).read_bytes()
    assert set(read_manifest(dest)["files"]) == set(FILENAMES)


def test_a_damaged_copy_from_one_mirror_is_fetched_from_the_next(mirrors, tmp_path, synthetic_ckpt, capsys):
    dest = tmp_path / SIZE
    with FileServer(mirrors, corrupt={f"primary/{SIZE}/{DATA}"}) as server:
        download_gpt2(SIZE, dest, **_bases(server), **FAST)
    assert (dest / DATA).read_bytes() == (synthetic_ckpt / DATA).read_bytes()
    files = read_manifest(dest)["files"]
    assert files[DATA]["url"] == server.url(f"backup/{SIZE}/{DATA}")
    assert {e["url"] for n, e in files.items() if n != DATA} == {
        server.url(f"primary/{SIZE}/{n}") for n in FILENAMES if n != DATA
    }
    log = capsys.readouterr().err
    assert f"{dest / DATA} from {server.url(f'primary/{SIZE}/{DATA}')} fails its check" in log
    assert "trying the next mirror" in log


def test_every_mirror_tried_is_named_when_none_serves_a_good_copy(mirrors, tmp_path):
    """One mirror's copy fails its check, the next has none: the error names both, and why."""
    dest = tmp_path / SIZE
    with FileServer(
        mirrors, corrupt={f"primary/{SIZE}/hparams.json"}, missing={f"backup/{SIZE}/hparams.json"}
    ) as server:
        with pytest.raises(DownloadError) as info:
            download_gpt2(SIZE, dest, **_bases(server), **FAST)
    message = str(info.value)
    assert f"could not download hparams.json to {dest / 'hparams.json'}" in message
    assert f"{server.url(f'primary/{SIZE}/hparams.json')}: fails its check (parsed): " in message
    assert f"{server.url(f'backup/{SIZE}/hparams.json')}: HTTP 404" in message
    assert "use another mirror" in message


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("checkpoint", r"fails its check \(parsed, names model.ckpt\): not text: byte 38 is not UTF-8"),
        ("hparams.json", r"fails its check \(parsed\): .*hparams.json is not valid JSON"),
        (
            "model.ckpt.index",
            r"fails its check \(tensor-bundle block .*\): a data block at bytes 0\.\..* crc32c",
        ),
        # the tokenizer files are checked against the known hash during the transfer, and retried
        ("encoder.json", "sha256 [0-9a-f]{64}, expected " + "196139668be63f3b"),
        ("vocab.bpe", "sha256 [0-9a-f]{64}, expected " + "1ce1664773c50f3e"),
    ],
)
def test_each_checkable_file_is_refused_when_corrupted(mirrors, tmp_path, name, message):
    dest = tmp_path / SIZE
    with FileServer(mirrors, corrupt={f"{m}/{SIZE}/{name}" for m in ("primary", "backup")}) as server:
        with pytest.raises(DownloadError, match=message):
            download_gpt2(SIZE, dest, **_bases(server), **FAST)
    assert not (dest / name).exists()
    manifest = read_manifest(dest)  # None when the first file fails
    assert manifest is None or name not in manifest["files"]


def test_model_ckpt_meta_is_trusted_on_first_use(mirrors, tmp_path, synthetic_ckpt):
    """Nothing can check the MetaGraphDef (and nothing reads it): a damaged one is pinned as received."""
    dest = tmp_path / SIZE
    with FileServer(mirrors, corrupt={f"primary/{SIZE}/model.ckpt.meta"}) as server:
        download_gpt2(SIZE, dest, **_bases(server), **FAST)
    assert (dest / "model.ckpt.meta").read_bytes() != (synthetic_ckpt / "model.ckpt.meta").read_bytes()
    assert read_manifest(dest)["files"]["model.ckpt.meta"]["verified"] == "trusted on first use"


def test_damaged_file_pinned_by_an_older_manifest_is_checked_and_fetched_again(
    mirrors, tmp_path, synthetic_ckpt
):
    """A manifest without "verified" entries (written before content checks) pinned a damaged file."""
    dest = tmp_path / SIZE
    with FileServer(mirrors) as server:
        download_gpt2(SIZE, dest, **_bases(server), **FAST)
        flip_byte(dest / DATA)
        manifest = read_manifest(dest)
        for name, entry in manifest["files"].items():
            del entry["verified"]
            entry["sha256"] = hashlib.sha256((dest / name).read_bytes()).hexdigest()
        (dest / "manifest.json").write_text(json.dumps(manifest))
        n = len(server.requests)
        download_gpt2(SIZE, dest, **_bases(server), **FAST)
        assert [p for p, _, _ in server.requests[n:]] == [f"primary/{SIZE}/{DATA}"]
    assert (dest / DATA).read_bytes() == (synthetic_ckpt / DATA).read_bytes()
    assert (dest / f"{DATA}.bad").is_file()
    files = read_manifest(dest)["files"]
    assert all("verified" in entry for entry in files.values())
    assert files[DATA]["sha256"] == hashlib.sha256((synthetic_ckpt / DATA).read_bytes()).hexdigest()


def test_known_hparams_are_checked_for_openais_sizes(synthetic_ckpt):
    assert verify_release_file(synthetic_ckpt, "hparams.json") == "parsed"
    with pytest.raises(
        ValueError, match=r"OpenAI's 124M has \{'n_vocab': 50257, 'n_ctx': 1024, 'n_embd': 768"
    ):
        verify_release_file(synthetic_ckpt, "hparams.json", model_size="124M")


def test_index_that_does_not_fit_hparams_is_refused(synthetic_ckpt, tmp_path):
    folder = shutil.copytree(synthetic_ckpt, tmp_path / "ckpt")
    (folder / "hparams.json").write_text(json.dumps({**TINY, "n_layer": 3}))
    with pytest.raises(
        ValueError, match=r"model.ckpt.index does not match its hparams.json: missing model/h2/"
    ):
        verify_release_file(folder, "model.ckpt.index")


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["umask022", "umask002"])
def test_manifest_mode_follows_the_umask(mirrors, tmp_path, umask):
    old = os.umask(umask)
    try:
        with FileServer(mirrors) as server:
            download_gpt2(SIZE, tmp_path / SIZE, **_bases(server), **FAST)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / SIZE / "manifest.json").stat().st_mode) == 0o666 & ~umask


# --------------------------------------------------------------------------- the package's structure


def _sibling_imports(module) -> set[str]:
    """The modules of gptlab.gpt2 that ``module`` imports, anywhere in it (inside functions too)."""
    import ast
    import inspect

    names = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names |= {node.module} if node.module else {alias.name for alias in node.names}
    return names


def test_modules_depend_one_way_and_only_tf_imports_tensorflow():
    import importlib
    import inspect

    order = ("layout", "bundle", "fetch", "tf", "load")  # each may import only those before it
    for i, name in enumerate(order):
        module = importlib.import_module(f"gptlab.gpt2.{name}")
        assert _sibling_imports(module) <= set(order[:i]), name
        assert ("import tensorflow" in inspect.getsource(module)) == (name == "tf"), name


def test_gptlab_convert_is_the_tf_module_under_its_old_name():
    from gptlab import convert
    from gptlab.gpt2 import tf

    for name in tf.__all__:
        assert getattr(convert, name) is getattr(tf, name), name
    assert convert.SAFETENSORS == "model.safetensors" and convert.FORMAT == "gptlab-gpt2"
