"""lightcycle-data download in a shared folder and against hostile servers: planted symlinks,
redirects to other schemes, labels no file system accepts, URLs with commas."""

from __future__ import annotations

import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lightcycle.data.download import download_images, read_urls, url_stem
from tests.test_data_tools import cli, png_bytes, server  # noqa: F401  (server is a fixture)


def test_a_symlink_planted_at_the_part_name_is_never_written_through(server, tmp_path):  # noqa: F811
    dest = tmp_path / "shared"
    dest.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    url = f"{server.base}/img/2.png"
    stem = url_stem(url)
    (dest / f".{stem}.part").symlink_to(victim)  # the name an attacker can predict from the URL
    (dest / f".{stem}.0.part").symlink_to(victim)
    results = download_images([url], dest, retries=0)
    assert results[0].status == "ok", results[0].reason
    assert victim.read_text() == "precious"
    assert results[0].path.read_bytes() == png_bytes(2) and not results[0].path.is_symlink()
    assert not [p for p in dest.glob(".*.part") if not p.is_symlink()]  # our own temp files are gone
    # a failed download does not write through them either
    bad = download_images([f"{server.base}/garbage.png"], dest, retries=0)
    assert bad[0].status == "failed" and victim.read_text() == "precious"


class Redirects(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, target: str) -> None:
        super().__init__(("127.0.0.1", 0), RedirectHandler)
        self.target = target


class RedirectHandler(BaseHTTPRequestHandler):
    server: Redirects

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.server.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.mark.parametrize("scheme", ["ftp", "file"])
def test_a_redirect_to_another_scheme_is_refused(tmp_path, scheme):
    # A listening socket stands in for an FTP server that would drip its greeting: no connection may reach it.
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(4)
    trap.setblocking(False)
    port = trap.getsockname()[1]
    target = f"ftp://127.0.0.1:{port}" if scheme == "ftp" else f"file://{tmp_path}"
    srv = Redirects(target)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        start = time.monotonic()
        results = download_images([f"http://127.0.0.1:{srv.server_address[1]}/x.png"], tmp_path / "out",
                                  timeout=2.0, retries=2, backoff=0.05, file_timeout=5.0)
        took = time.monotonic() - start
    finally:
        srv.shutdown()
        srv.server_close()
    assert results[0].status == "failed"
    assert results[0].reason == f"HTTP 302 redirect to '{target}/x.png' refused: only http(s) URLs are followed"
    assert took < 1.5, f"{took:.1f} s"  # refused at once, not retried
    with pytest.raises(BlockingIOError):
        trap.accept()  # nobody connected
    trap.close()


def test_a_label_too_long_for_a_file_name_fails_that_url_in_the_summary(server, tmp_path, capsys):  # noqa: F811
    urls = tmp_path / "urls.csv"
    urls.write_text(f"url,label\n{server.base}/img/2.png,cat\n{server.base}/img/3.png,{'x' * 300}\n")
    code, out, err = cli(["download", str(urls), str(tmp_path / "pets"), "--retries", "0"], capsys)
    assert code == 1
    assert "Traceback" not in err and "Traceback" not in out
    lines = out.splitlines()
    assert lines[0] == "2 URLs: 1 downloaded, 0 already there, 0 duplicates skipped, 1 failed"
    assert lines[1].startswith(f"  failed: {server.base}/img/3.png: cannot write into ")
    assert lines[1].endswith("File name too long")


def test_a_url_with_commas_in_a_text_list_is_kept_whole(tmp_path):
    urls = tmp_path / "urls.txt"
    urls.write_text("https://cdn.example.com/image/upload/w_100,h_100,c_fill/cat.jpg\n# a comment\nhttp://x/a.png\n")
    assert [e.url for e in read_urls(urls)] == [
        "https://cdn.example.com/image/upload/w_100,h_100,c_fill/cat.jpg", "http://x/a.png"]


def test_a_part_file_left_by_a_killed_run_is_cleaned_but_a_fresh_one_is_kept(server, tmp_path):  # noqa: F811
    dest = tmp_path / "out"
    dest.mkdir()
    url = f"{server.base}/img/1.png"
    old, young = dest / f".{url_stem(url)}.abc.part", dest / f".{url_stem(url)}.def.part"
    old.write_bytes(b"half")
    young.write_bytes(b"being written")  # another download into this folder, still running
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert download_images([url], dest, retries=0, file_timeout=30)[0].status == "ok"
    assert not old.exists() and young.exists()
