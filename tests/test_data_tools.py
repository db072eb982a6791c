"""lightcycle-data: verify (report / move / delete unreadable images) and download (against a local server)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightcycle.cli.data import main
from lightcycle.data.checks import verify_images
from lightcycle.data.download import download_images, read_urls, summarize, url_stem
from lightcycle.errors import LightcycleError

ENV = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")


def run_data(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lightcycle.cli.data", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=ENV)


def png_bytes(seed: int, size: int = 24) -> bytes:
    arr = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# --- verify -------------------------------------------------------------------------------------------------
@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    root = tmp_path / "messy"
    for i, cls in enumerate(("cat", "dog")):
        (root / cls).mkdir(parents=True)
        for j in range(3):
            (root / cls / f"{j}.png").write_bytes(png_bytes(10 * i + j))
    (root / "cat" / "truncated.png").write_bytes(png_bytes(99)[:200])
    (root / "dog" / "empty.jpg").write_bytes(b"")
    (root / "dog" / "html.jpg").write_text("<html>not found</html>")
    (root / "dog" / "notes.txt").write_text("not an image, not checked")
    return root


def test_verify_reports_moves_or_deletes_bad_images(messy_folder, tmp_path):
    checked, bad, handled = verify_images(messy_folder)
    assert checked == 9 and handled == []
    reasons = {p.relative_to(messy_folder).as_posix(): r for p, r in bad}
    assert set(reasons) == {"cat/truncated.png", "dog/empty.jpg", "dog/html.jpg"}
    assert reasons["dog/empty.jpg"] == "empty file"

    rejects = messy_folder / "rejects"  # inside the checked folder: never re-checked
    checked, bad, handled = verify_images(messy_folder, move_to=rejects)
    assert len(bad) == 3 and sorted(p.relative_to(rejects).as_posix() for p in handled) == [
        "cat/truncated.png", "dog/empty.jpg", "dog/html.jpg"]
    assert verify_images(messy_folder, move_to=rejects)[:2] == (6, [])  # the rest is clean; rejects/ is skipped
    (messy_folder / "dog" / "bad.png").write_bytes(b"garbage")
    _, bad, handled = verify_images(messy_folder / "dog", delete=True)
    assert [p.name for p in handled] == ["bad.png"] and not (messy_folder / "dog" / "bad.png").exists()
    with pytest.raises(LightcycleError, match="folder not found"):
        verify_images(tmp_path / "nope")


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    """lightcycle-data in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


@pytest.mark.slow
def test_verify_cli_exit_codes(messy_folder, tmp_path, capsys):
    code, out, _ = cli(["verify", str(messy_folder)], capsys)
    assert code == 1  # bad files left in place: `verify ROOT && lightcycle-train` stops
    assert "9 images checked, 3 unreadable (left in place" in out
    assert f"{messy_folder / 'dog' / 'empty.jpg'}: empty file" in out
    code, out, _ = cli(["verify", str(messy_folder), "--move-to", str(tmp_path / "rejects")], capsys)
    assert code == 0 and "3 unreadable (3 moved to" in out
    assert (tmp_path / "rejects" / "cat" / "truncated.png").is_file()
    assert cli(["verify", str(messy_folder)], capsys)[:2] == (0, "6 images checked, 0 unreadable\n")
    result = run_data(["verify", str(tmp_path / "missing")])  # the console module, as a user runs it
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"lightcycle-data: error: {tmp_path / 'missing'}: folder not found"]


# --- download against a local server --------------------------------------------------------------------------
class ImageServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits: Counter[str] = Counter()
        self.images = {f"/img/{i}.png": png_bytes(i) for i in range(4)}
        self.images["/copy.png"] = self.images["/img/0.png"]  # same bytes, another URL
        self.lock = threading.Lock()

    def handle_error(self, request, client_address) -> None:  # a client that timed out: not our problem
        pass

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: ImageServer

    def log_message(self, *args) -> None:
        pass

    def send_body(self, body: bytes, content_type: str = "image/png", length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.hits[self.path] += 1
            hits = self.server.hits[self.path]
        image = png_bytes(7)
        if self.path in self.server.images:
            self.send_body(self.server.images[self.path])
        elif self.path == "/truncated.png":  # promises the whole file, sends half, hangs up
            self.send_body(image[: len(image) // 2], length=len(image))
            self.close_connection = True
        elif self.path == "/page.html":
            self.send_body(b"<html>an image search page</html>", content_type="text/html")
        elif self.path == "/flaky.png":  # 500 first, then the image
            if hits == 1:
                self.send_error(500, "flaky")
            else:
                self.send_body(png_bytes(42))
        elif self.path == "/slow.png":  # answers after the client's timeout
            time.sleep(2.5)
            self.send_body(image)
        elif self.path == "/big.png":
            self.send_body(b"x" * 5000)
        elif self.path == "/garbage.png":  # says image, is not one
            self.send_body(b"\x89PNG but not really" * 10)
        else:
            self.send_error(404, "no such image")


@pytest.fixture
def server():
    srv = ImageServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def write_urls(path: Path, base: str) -> Path:
    lines = [
        "# images for the demo",
        f"{base}/img/0.png", f"{base}/img/1.png", f"{base}/img/1.png",  # the same URL twice
        f"{base}/copy.png",  # the same bytes as img/0
        f"{base}/truncated.png", f"{base}/page.html", f"{base}/missing.png", f"{base}/flaky.png",
        f"{base}/slow.png", f"{base}/big.png", f"{base}/garbage.png", "ftp://example.com/x.png", "",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_download_keeps_good_images_and_says_why_the_rest_failed(server, tmp_path):
    urls = write_urls(tmp_path / "urls.txt", server.base)
    dest = tmp_path / "images"
    options = dict(workers=4, timeout=1.0, retries=2, backoff=0.05, max_bytes=4000)
    results = download_images(urls, dest, **options)
    assert [r.url.replace(server.base, "") for r in results] == [
        "/img/0.png", "/img/1.png", "/img/1.png", "/copy.png", "/truncated.png", "/page.html", "/missing.png",
        "/flaky.png", "/slow.png", "/big.png", "/garbage.png", "ftp://example.com/x.png"]  # input order
    assert [r.status for r in results[1:3]] == ["ok", "duplicate"]  # the first img/1 is kept, the second skipped
    assert results[2].reason == "same URL as line 3"
    # img/0 and copy.png have the same bytes: whichever finished first is kept, the other is a duplicate
    first, copy = sorted([results[0], results[3]], key=lambda r: r.status != "ok")
    assert (first.status, copy.status) == ("ok", "duplicate") and copy.reason == f"same content as {first.path.name}"
    assert results[7].status == "ok"  # flaky: 500, then OK on the retry
    by_url = {r.url.replace(server.base, ""): r for r in results}
    reasons = {u: r.reason for u, r in by_url.items() if r.status == "failed"}
    assert reasons["/truncated.png"].startswith("truncated: got") and "(after 3 attempts)" in reasons["/truncated.png"]
    assert reasons["/page.html"] == "content-type text/html is not an image"
    assert reasons["/missing.png"] == "HTTP 404 no such image"
    assert reasons["/slow.png"].startswith("timed out after 1 s")
    assert reasons["/big.png"] == "too large: 5000 bytes > max 4000"
    assert reasons["/garbage.png"].startswith("not a readable image")
    assert reasons["ftp://example.com/x.png"] == "not an http(s) URL"
    assert server.hits["/flaky.png"] == 2 and server.hits["/missing.png"] == 1 and server.hits["/truncated.png"] == 3
    kept = sorted(p.name for p in dest.iterdir())
    assert len(kept) == 3 and all(p.endswith(".png") for p in kept)  # img/0 (or its copy), img/1, flaky
    assert not list(dest.glob(".*.part"))  # failed downloads leave no partial files
    assert f"{url_stem(server.base + '/img/1.png')}.png" in kept
    assert summarize(results)[0] == "12 URLs: 3 downloaded, 0 already there, 2 duplicates skipped, 7 failed"

    # resume: complete files are kept without a request; a partial file from a killed run is replaced
    (dest / f"{url_stem(server.base + '/img/1.png')}.png").unlink()
    stale = dest / f".{url_stem(server.base + '/img/1.png')}.part"
    stale.write_bytes(b"half an ima")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))  # left by a run killed an hour ago
    before = Counter(server.hits)
    again = download_images(urls, dest, **options)
    kept_path = first.url.replace(server.base, "")  # img/0 or copy.png, whichever was kept
    assert server.hits[kept_path] == before[kept_path] and server.hits["/img/1.png"] == before["/img/1.png"] + 1
    assert {r.status for r in again if r.url in (first.url, server.base + "/flaky.png")} == {"exists"}
    assert again[2].status == "duplicate" and {again[0].status, again[3].status} == {"exists", "duplicate"}
    assert Image.open(dest / f"{url_stem(server.base + '/img/1.png')}.png").size == (24, 24)
    assert not list(dest.glob(".*.part"))


def test_download_csv_with_labels_and_cli(server, tmp_path, capsys):
    urls = tmp_path / "urls.csv"
    urls.write_text(f"url,label\n{server.base}/img/2.png,cat\n{server.base}/img/3.png,dog\n{server.base}/page.html,dog\n")
    assert [(e.label, e.line) for e in read_urls(urls)] == [("cat", 2), ("dog", 3), ("dog", 4)]
    code, out, err = cli(["download", str(urls), str(tmp_path / "pets"), "--retries", "0", "--timeout", "2"], capsys)
    assert code == 1, err  # page.html failed: the summary below says so, and the exit code tells a script
    assert "3 URLs: 2 downloaded, 0 already there, 0 duplicates skipped, 1 failed" in out
    assert f"failed: {server.base}/page.html: content-type text/html is not an image" in out
    assert len(list((tmp_path / "pets" / "cat").iterdir())) == 1 and len(list((tmp_path / "pets" / "dog").iterdir())) == 1
    code, _, err = cli(["download", str(tmp_path / "nope.txt"), str(tmp_path / "x")], capsys)
    assert code == 1
    assert err.strip().splitlines() == [f"lightcycle-data: error: {tmp_path / 'nope.txt'}: URL file not found"]
    bad = tmp_path / "bad.csv"
    bad.write_text("link,label\nhttp://x/y.png,a\n")
    with pytest.raises(LightcycleError, match="needs a 'url' column"):
        read_urls(bad)


# --- a server that drips: the per-file limit is wall-clock time ----------------------------------------------
class DripServer(ThreadingHTTPServer):
    """Sends a byte every `interval` seconds: after the headers (`/body`), or through the headers (`/headers`).

    Every byte arrives well within the client's socket timeout, so only a wall-clock limit stops it.
    """

    daemon_threads = True
    interval = 0.2

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), DripHandler)

    def handle_error(self, request, client_address) -> None:  # the client hung up on us: the point
        pass

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class DripHandler(BaseHTTPRequestHandler):
    server: DripServer

    def log_message(self, *args) -> None:
        pass

    def drip(self, data: bytes) -> None:
        for i in range(len(data)):
            self.wfile.write(data[i:i + 1])
            self.wfile.flush()
            time.sleep(self.server.interval)

    def do_GET(self) -> None:
        body = png_bytes(3)
        if self.path == "/headers":
            self.drip(f"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        else:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.flush()
        self.drip(body[:60])  # at most ~12 s of dripping, then it hangs up
        self.close_connection = True


@pytest.fixture
def drip_server():
    srv = DripServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_dripping_server_cannot_outlast_the_file_timeout(drip_server, tmp_path, where):
    start = time.monotonic()
    results = download_images([f"{drip_server.base}/{where}"], tmp_path / "out", timeout=5.0, retries=3,
                              backoff=0.1, file_timeout=1.0)
    took = time.monotonic() - start
    assert took < 2.5, f"{took:.1f} s: the per-file limit of 1 s (retries included) did not hold"
    assert results[0].status == "failed"
    assert results[0].reason.startswith("timed out: took longer than 1 s (--file-timeout)"), results[0].reason
    assert not list((tmp_path / "out").glob(".*.part"))


def test_download_cli_exits_1_after_the_summary_when_a_url_failed(drip_server, server, tmp_path, capsys):
    urls = tmp_path / "urls.txt"
    urls.write_text(f"{server.base}/img/0.png\n{drip_server.base}/body\n")
    start = time.monotonic()
    code, out, err = cli(["download", str(urls), str(tmp_path / "out"), "--file-timeout", "1", "--timeout", "5",
                          "--retries", "0"], capsys)
    assert time.monotonic() - start < 5
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0] == "2 URLs: 1 downloaded, 0 already there, 0 duplicates skipped, 1 failed"
    assert lines[1].startswith(f"  failed: {drip_server.base}/body: timed out: took longer than 1 s")
    urls.write_text(f"{server.base}/img/0.png\n")  # nothing failed: exit 0
    code, out, _ = cli(["download", str(urls), str(tmp_path / "out")], capsys)
    assert code == 0 and "1 already there" in out
