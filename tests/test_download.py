"""The verified, resumable downloader against a real HTTP server on 127.0.0.1 (no internet)."""

from __future__ import annotations

import hashlib
import os

import pytest

from gptlab.download import VERDICT_SHA256, DownloadError, download_file, download_verdict
from gptlab.testing import FileServer
from tests.conftest import VERDICT

SIZE = 300_000
FAST = dict(backoff=0.0, progress=False, timeout=10)


@pytest.fixture
def served(tmp_path):
    """A folder with one random binary file of SIZE bytes, and its sha256."""
    root = tmp_path / "www"
    root.mkdir()
    data = os.urandom(SIZE)
    (root / "blob.bin").write_bytes(data)
    return root, data, hashlib.sha256(data).hexdigest()


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_clean_download_with_progress_bar(served, tmp_path, capsys):
    root, data, sha = served
    dest = tmp_path / "out" / "blob.bin"
    with FileServer(root, content_md5=True) as server:
        result = download_file(
            server.url("blob.bin"), dest, expected_size=SIZE, expected_sha256=sha, backoff=0
        )
    assert dest.read_bytes() == data
    assert (result.path, result.size, result.sha256, result.url) == (dest, SIZE, sha, server.url("blob.bin"))
    assert open(result, "rb").read(4) == data[:4]  # usable as a path
    assert _leftovers(dest.parent) == ["blob.bin"]
    assert "blob.bin" in capsys.readouterr().err  # tqdm bar on stderr


def test_file_url(served, tmp_path):
    root, data, sha = served
    result = download_file([(root / "blob.bin").as_uri()], tmp_path / "b", expected_sha256=sha, **FAST)
    assert result.path.read_bytes() == data
    plain = download_file(root / "blob.bin", tmp_path / "c", expected_sha256=sha, **FAST)  # a local path
    assert plain.path.read_bytes() == data


def test_cut_connection_resumes_with_range(served, tmp_path):
    root, data, sha = served
    dest = tmp_path / "blob.bin"
    with FileServer(root, cut_after={"blob.bin": SIZE // 3 + 1}) as server:
        download_file([server.url("blob.bin")], dest, expected_sha256=sha, retries=4, **FAST)
    assert dest.read_bytes() == data
    ranges = [r for _, r, _ in server.requests]
    assert ranges[0] is None and len(ranges) == 3
    offsets = [int(r.removeprefix("bytes=").rstrip("-")) for r in ranges[1:]]
    assert offsets == [SIZE // 3 + 1, 2 * (SIZE // 3 + 1)]
    assert [s for *_, s in server.requests] == [200, 206, 206]


def test_interrupted_download_resumes_on_the_next_call(served, tmp_path):
    root, data, sha = served
    dest = tmp_path / "blob.bin"
    with FileServer(root, cut_after={"blob.bin": 1000}) as server:
        with pytest.raises(DownloadError, match="1000 bytes kept") as info:
            download_file([server.url("blob.bin")], dest, expected_sha256=sha, retries=0, **FAST)
        assert server.url("blob.bin") in str(info.value)
        assert not dest.exists()  # nothing under the final name
        assert (tmp_path / "blob.bin.part").stat().st_size == 1000
        server.cut_after.clear()
        download_file([server.url("blob.bin")], dest, expected_sha256=sha, retries=0, **FAST)
    assert dest.read_bytes() == data
    assert server.requests[-1][1:] == ("bytes=1000-", 206)
    assert _leftovers(tmp_path) == ["blob.bin", "www"]


def test_server_ignoring_range_restarts_cleanly(served, tmp_path):
    root, data, sha = served
    dest = tmp_path / "blob.bin"
    with FileServer(root, cut_after={"blob.bin": 5000}, ignore_range=True) as server:
        with pytest.raises(DownloadError):
            download_file([server.url("blob.bin")], dest, retries=0, **FAST)
        server.cut_after.clear()
        download_file([server.url("blob.bin")], dest, expected_sha256=sha, **FAST)
    assert dest.read_bytes() == data  # not 5000 stale bytes + the whole file


@pytest.mark.parametrize("check", ["content_md5", "sha256"])
def test_corrupted_byte_is_detected(served, tmp_path, check):
    root, _, sha = served
    dest = tmp_path / "blob.bin"
    with FileServer(root, corrupt={"blob.bin"}, content_md5=check == "content_md5") as server:
        with pytest.raises(DownloadError, match="MD5" if check == "content_md5" else "sha256"):
            download_file(
                [server.url("blob.bin")],
                dest,
                expected_sha256=sha if check == "sha256" else None,
                retries=1,
                **FAST,
            )
    # a Content-MD5 mismatch is a damaged transfer: retried once from scratch; a complete file with
    # another sha256 is another file: retrying the same URL cannot help
    assert len(server.requests) == (2 if check == "content_md5" else 1)
    assert _leftovers(tmp_path) == ["www"]  # no file, no corrupt .part


def test_corrupt_range_after_resume_is_detected(served, tmp_path):
    """Content-MD5 of a 206 covers the range: a flipped byte in the resumed part is caught."""
    root, data, _ = served
    dest = tmp_path / "blob.bin"
    with FileServer(root, content_md5=True, cut_after={"blob.bin": 1000}) as server:
        with pytest.raises(DownloadError):
            download_file([server.url("blob.bin")], dest, retries=0, **FAST)
        server.cut_after.clear()
        server.corrupt.add("blob.bin")
        with pytest.raises(DownloadError, match="Content-MD5"):
            download_file([server.url("blob.bin")], dest, retries=0, **FAST)
        assert not dest.exists()
        server.corrupt.clear()
        download_file([server.url("blob.bin")], dest, retries=0, **FAST)
    assert dest.read_bytes() == data


def test_whole_file_md5_of_a_cut_response_still_applies_after_resume(served, tmp_path):
    """The flipped byte arrives in the first (200) response; the resumed range itself is clean."""
    root, _, _ = served
    dest = tmp_path / "blob.bin"
    with FileServer(
        root, content_md5=True, corrupt={"blob.bin"}, cut_after={"blob.bin": SIZE // 2 + 10}
    ) as server:
        with pytest.raises(DownloadError, match="differs from the server's Content-MD5"):
            download_file([server.url("blob.bin")], dest, retries=1, **FAST)
    assert [s for *_, s in server.requests] == [200, 206]  # caught on the resumed attempt
    assert _leftovers(tmp_path) == ["www"]


def test_size_mismatch_is_a_different_file(served, tmp_path):
    root, _, _ = served
    with FileServer(root) as server:
        with pytest.raises(DownloadError, match=f"server reports {SIZE} bytes, expected 123"):
            download_file([server.url("blob.bin")], tmp_path / "b", expected_size=123, **FAST)
    assert len(server.requests) == 1  # a wrong size is not retried
    assert _leftovers(tmp_path) == ["www"]


def test_404_on_primary_falls_back_to_backup(served, tmp_path):
    root, data, sha = served
    (root / "mirror").mkdir()
    (root / "mirror" / "blob.bin").write_bytes(data)
    with FileServer(root, missing={"blob.bin"}) as server:
        urls = [server.url("blob.bin"), server.url("mirror/blob.bin")]
        result = download_file(urls, tmp_path / "blob.bin", expected_sha256=sha, retries=3, **FAST)
    assert result.url == urls[1] and result.path.read_bytes() == data
    assert [(p, s) for p, _, s in server.requests] == [("blob.bin", 404), ("mirror/blob.bin", 200)]


def test_all_urls_failing_raises_naming_each_and_what_helps(served, tmp_path):
    root, _, _ = served
    dest = tmp_path / "blob.bin"
    with FileServer(root, missing={"blob.bin"}) as server:
        urls = [server.url("blob.bin"), server.url("nowhere/blob.bin"), (tmp_path / "absent").as_uri()]
        with pytest.raises(DownloadError) as info:
            download_file(urls, dest, retries=2, **FAST)
    message = str(info.value)
    for url in urls:
        assert url in message
    assert "HTTP 404" in message and "mirror" in message and str(dest) in message
    assert _leftovers(tmp_path) == ["www"]


def test_unreachable_server_is_retried_then_reported(tmp_path):
    with FileServer(tmp_path) as server:
        url = server.url("x.bin")
    # the server is gone: connection refused, a transient error retried `retries` times
    with pytest.raises(DownloadError, match="x.bin") as info:
        download_file([url], tmp_path / "x.bin", retries=2, **FAST)
    assert url in str(info.value)
    assert not (tmp_path / "x.bin").exists()


def test_existing_verified_file_is_kept_and_bad_one_refetched(served, tmp_path):
    root, data, sha = served
    dest = tmp_path / "blob.bin"
    with FileServer(root) as server:
        download_file([server.url("blob.bin")], dest, expected_sha256=sha, **FAST)
        n = len(server.requests)
        result = download_file([server.url("blob.bin")], dest, expected_sha256=sha, **FAST)
        assert result.url is None and len(server.requests) == n  # verified locally, no request
        dest.write_bytes(b"x" + data[1:])
        download_file([server.url("blob.bin")], dest, expected_sha256=sha, **FAST)
        assert len(server.requests) == n + 1
    assert dest.read_bytes() == data
    assert (tmp_path / "blob.bin.bad").read_bytes()[:1] == b"x"  # moved aside, not silently kept


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="no URL"):
        download_file([], tmp_path / "x")
    with pytest.raises(ValueError, match="retries=-1"):
        download_file(["file:///x"], tmp_path / "x", retries=-1)


def test_verdict_download_checks_the_known_hash(tmp_path, verdict_text):
    """The corpus download, offline: from a file:// copy of the shared Verdict, verified by sha256."""
    result = download_verdict(tmp_path / "the-verdict.txt", urls=[VERDICT.as_uri()], **FAST)
    assert result.sha256 == VERDICT_SHA256
    assert result.path.read_text(encoding="utf-8") == verdict_text
    wrong = tmp_path / "other.txt"
    wrong.write_text("not the verdict", encoding="utf-8")
    with pytest.raises(DownloadError, match="sha256"):
        download_verdict(tmp_path / "v2.txt", urls=[wrong.as_uri()], retries=0, **FAST)
    assert not (tmp_path / "v2.txt").exists()


def test_full_disk_stops_at_once_naming_the_path_and_keeps_what_arrived(served, full_disk):
    from gptlab.io import NoSpaceError

    root, data, sha = served
    disk = full_disk(SIZE // 2)  # tmpfs rounds up to whole pages: still far less than SIZE
    dest = disk / "blob.bin"
    with FileServer(root) as server:
        with pytest.raises(NoSpaceError, match=f"no space left .* {dest}") as err:
            download_file([server.url("blob.bin"), server.url("blob.bin")], dest, retries=3, **FAST)
        assert len(server.requests) == 1  # not retried, no other mirror tried: neither can help
    assert "run again" in str(err.value)
    part = disk / "blob.bin.part"
    assert 0 < part.stat().st_size < SIZE and part.read_bytes() == data[: part.stat().st_size]


def test_callers_add_their_advice_to_a_download_error(tmp_path):
    import pickle

    with pytest.raises(DownloadError) as info:
        download_file([(tmp_path / "absent").as_uri()], tmp_path / "x.bin", retries=0, **FAST)
    err = info.value
    assert err.failure == f"could not download x.bin to {tmp_path / 'x.bin'}."
    assert err.tried == (f"{(tmp_path / 'absent').as_uri()}: {tmp_path / 'absent'} does not exist",)
    generic = err.advice
    assert len(generic) == 1 and "copy a verified file to" in generic[0]
    assert err.advise("set corpus.url") is err and err.advice == ("set corpus.url", *generic)
    assert str(err).endswith(f"\nFix: set corpus.url; or {generic[0]}")
    assert str(err).startswith(f"{err.failure} Tried:\n  {err.tried[0]}\n")
    assert str(pickle.loads(pickle.dumps(err))) == str(err)
    err.advise("only this", replace=True)
    assert err.advice == ("only this",) and str(err).endswith("\nFix: only this")
    assert str(DownloadError("plain")) == "plain"
