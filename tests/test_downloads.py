"""framework.downloads against a real HTTP server on 127.0.0.1 (http.server in a thread).

The server counts the requests per path and can serve damaged bytes a given number of
times, so the retry-once policy is observed, not assumed.
"""
from __future__ import annotations

import hashlib
import http.server
import io
import logging
import socket
import threading
import time
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from framework import downloads
from framework.downloads import RemoteFile, downloads_dir, fetch, fetch_members
from framework.errors import ConfigError, DataError


class FileServer:
    """Serve ``files`` (URL path -> bytes) on 127.0.0.1.

    ``corrupt[path] = k`` flips a byte of the first k responses; ``upstream[path]`` is a list of
    bodies served in turn before ``files[path]`` (an upstream copy that gets fixed).
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.upstream: dict[str, list[bytes]] = {}
        self.corrupt: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?")[0]
                owner.requests[path] += 1
                queued = owner.upstream.get(path)
                body = queued.pop(0) if queued else owner.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                if owner.corrupt[path] > 0:
                    owner.corrupt[path] -= 1
                    body = body[:-1] + bytes([body[-1] ^ 0xFF])  # same length, one flipped byte
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def add(self, path: str, body: bytes) -> str:
        """Serve ``body`` at ``path``; returns its URL."""
        self.files[path] = body
        return self.url + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def no_proxy(monkeypatch):
    """Requests to 127.0.0.1 go straight to the test server, whatever proxy the machine uses."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def server(no_proxy):
    srv = FileServer()
    try:
        yield srv
    finally:
        srv.close()


def closed_port_url(path: str = "/x.bin") -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


PAYLOAD = bytes(range(256)) * 64  # 16 KiB


def test_fetch_checks_hash_and_reuses_the_cache(server):
    url = server.add("/data/a.bin", PAYLOAD)
    path = fetch(RemoteFile(url, "sub/a.bin", sha(PAYLOAD)), dataset="dl-test")
    assert path == downloads_dir("dl-test") / "sub" / "a.bin"
    assert path.read_bytes() == PAYLOAD
    again = fetch(RemoteFile(url, "sub/a.bin", sha(PAYLOAD)), dataset="dl-test")
    assert again == path and server.requests["/data/a.bin"] == 1  # the cached copy is used, no new request


def test_corrupted_download_is_refused_and_retried_once(server, caplog):
    url = server.add("/a.bin", PAYLOAD)
    server.corrupt["/a.bin"] = 1
    with caplog.at_level(logging.WARNING, logger="framework.downloads"):
        path = fetch(RemoteFile(url, "a.bin", sha(PAYLOAD)), dataset="dl-test")
    assert path.read_bytes() == PAYLOAD
    assert server.requests["/a.bin"] == 2
    assert "attempt 1 of 2" in caplog.text and "pinned SHA-256" in caplog.text


def test_corrupted_twice_gives_one_clear_error_and_no_file(server):
    url = server.add("/a.bin", PAYLOAD)
    server.corrupt["/a.bin"] = 5
    remote = RemoteFile(url, "a.bin", sha(PAYLOAD))
    with pytest.raises(DataError) as info:
        fetch(remote, dataset="dl-test", hint="Use FRAMEWORK_DATA_DIR=DIR instead.")
    message = str(info.value)
    assert server.requests["/a.bin"] == 2  # the first download and exactly one retry
    assert "\n" not in message
    assert url in message and str(downloads_dir("dl-test") / "a.bin") in message
    assert "pinned SHA-256" in message and message.endswith("Use FRAMEWORK_DATA_DIR=DIR instead.")
    folder = downloads_dir("dl-test")
    assert not any(folder.iterdir())  # neither the damaged file nor a temporary file is left


def test_damaged_cached_file_is_downloaded_again(server):
    url = server.add("/a.bin", PAYLOAD)
    target = downloads_dir("dl-test") / "a.bin"
    target.parent.mkdir(parents=True)
    target.write_bytes(PAYLOAD[:-10])  # a truncated copy from an interrupted older download
    assert fetch(RemoteFile(url, "a.bin", sha(PAYLOAD)), dataset="dl-test").read_bytes() == PAYLOAD
    assert server.requests["/a.bin"] == 1


def test_missing_remote_file_fails_after_one_retry(server):
    with pytest.raises(DataError, match=r"2 attempts; last: .*404") as info:
        fetch(RemoteFile(server.url + "/gone.bin", "gone.bin", sha(PAYLOAD)), dataset="dl-test")
    assert server.requests["/gone.bin"] == 2 and "\n" not in str(info.value)


def test_offline_is_one_line_fast_and_names_url_cache_and_hint(no_proxy):
    url = closed_port_url("/file.npz")
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        fetch(RemoteFile(url, "file.npz", sha(PAYLOAD)), dataset="dl-test",
              hint="Set FRAMEWORK_DATA_DIR=DIR or pass --dataset-param x.data_dir=DIR.")
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "\n" not in message and url in message and "unreachable" in message
    assert str(downloads_dir("dl-test") / "file.npz") in message
    assert "FRAMEWORK_DATA_DIR" in message and "data_dir" in message


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_fetch_members_checks_each_member_and_retries_a_bad_archive(server):
    good = {"pack/brain/a.bin": PAYLOAD, "pack/stim/b.bin": PAYLOAD[::-1], "pack/extra.txt": b"ignored"}
    bad = dict(good, **{"pack/stim/b.bin": PAYLOAD[::-1][:-1] + b"\x07"})  # a valid ZIP with one wrong member
    server.add("/pack.zip", make_zip(good))
    server.upstream["/pack.zip"] = [make_zip(bad)]
    pinned = {"brain/a.bin": sha(PAYLOAD), "stim/b.bin": sha(PAYLOAD[::-1])}
    remote = RemoteFile(server.url + "/pack.zip", "pack.zip", None)  # the archive's own digest is not known
    out = fetch_members(remote, pinned, dataset="dl-test")
    assert server.requests["/pack.zip"] == 2
    assert out["brain/a.bin"].read_bytes() == PAYLOAD and out["stim/b.bin"].read_bytes() == PAYLOAD[::-1]
    assert out["brain/a.bin"] == downloads_dir("dl-test") / "pack" / "brain" / "a.bin"
    assert not (downloads_dir("dl-test") / "pack.zip").exists()  # the archive is removed once extracted
    fetch_members(remote, pinned, dataset="dl-test")
    assert server.requests["/pack.zip"] == 2  # members already checked in the cache: no download


def test_fetch_members_gives_one_error_after_two_bad_archives(server):
    server.add("/pack.zip", make_zip({"pack/a.bin": PAYLOAD[:-1] + b"\0"}))
    with pytest.raises(DataError, match=r"member 'a.bin' has SHA-256 .*expected the pinned") as info:
        fetch_members(RemoteFile(server.url + "/pack.zip", "pack.zip", None), {"a.bin": sha(PAYLOAD)},
                      dataset="dl-test")
    assert server.requests["/pack.zip"] == 2 and "\n" not in str(info.value)
    assert not (downloads_dir("dl-test") / "pack" / "a.bin").exists()


def test_fetch_members_refuses_an_archive_without_a_member(server):
    server.add("/pack.zip", make_zip({"pack/a.bin": PAYLOAD}))
    with pytest.raises(DataError, match="has no member 'b.bin'"):
        fetch_members(RemoteFile(server.url + "/pack.zip", "pack.zip", None), {"b.bin": sha(PAYLOAD)},
                      dataset="dl-test")
    assert server.requests["/pack.zip"] == 2


def test_bad_timeout_variable_is_a_config_error(monkeypatch, server):
    monkeypatch.setenv("FRAMEWORK_DOWNLOAD_TIMEOUT", "soon")
    url = server.add("/a.bin", PAYLOAD)
    with pytest.raises(ConfigError, match="FRAMEWORK_DOWNLOAD_TIMEOUT"):
        fetch(RemoteFile(url, "a.bin", sha(PAYLOAD)), dataset="dl-test")


def test_sha256_of_matches_hashlib(tmp_path: Path):
    p = tmp_path / "f.bin"
    p.write_bytes(PAYLOAD)
    assert downloads.sha256_of(p) == sha(PAYLOAD)
