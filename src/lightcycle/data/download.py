"""Download images from a list of URLs (the course's `download_images`), safely and resumably.

- Parallel threads, a socket timeout per request and a wall-clock limit per file (retries
  included), retries with exponential backoff for what may pass (timeouts, dropped connections,
  truncated bodies, HTTP 5xx, 408, 429); no retry for what will not (404, wrong content type, too
  large, not an image). The per-file limit holds whatever the server does: a server that sends a
  byte a second never lets a socket timeout fire, so a watchdog shuts the connection down when the
  file's time is up (`lightcycle.data.deadline`).
- Only `http(s)` URLs; the response must say `image/*` and stay under `max_bytes`; the file must
  decode as an image (`check_image`) before it is kept.
- Resumable: a file's name is a hash of its URL, so a second run finds the files of the first and
  keeps them; bytes go to a hidden `.part` file that is renamed only when complete. The `.part`
  name is random and created exclusively, so a symlink planted in a shared folder is never followed.
- Redirects are followed only to http(s) URLs (`lightcycle.data.deadline`).
- Duplicates: a URL listed twice is fetched once; content identical to a file already kept (in
  this run or in `dest`) is not kept again.

The URL file is a text file (one URL per line, `#` comments) or a CSV with a `url` column and an
optional `label` (or `folder`) column, which puts each image in `dest/<label>/`, an ImageFolder
ready for `data=folder`.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import logging
import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Sequence

from lightcycle.data.checks import IMAGE_EXTENSIONS, check_image, list_images
from lightcycle.data.deadline import Deadline, RedirectRefused
from lightcycle.digest import file_sha256
from lightcycle.errors import LightcycleError, for_console

log = logging.getLogger(__name__)

CONTENT_EXTENSIONS = {
    "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/pjpeg": ".jpg", "image/png": ".png", "image/gif": ".gif",
    "image/webp": ".webp", "image/bmp": ".bmp", "image/x-ms-bmp": ".bmp", "image/tiff": ".tif",
}
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
USER_AGENT = "lightcycle-data/0.1 (+image downloader)"
CHUNK = 64 * 1024


@dataclass(frozen=True)
class UrlEntry:
    url: str
    label: str | None = None
    line: int = 0


@dataclass
class DownloadResult:
    """What happened to one URL: `ok` (downloaded), `exists` (kept from an earlier run), `duplicate`, `failed`."""

    url: str
    status: str
    path: Path | None = None
    reason: str = ""


class _Retry(Exception):
    """A failure that may pass: try again after a pause."""


class _Fail(Exception):
    """A failure that will not pass: give up on this URL."""


def read_urls(path: str | os.PathLike) -> list[UrlEntry]:
    """URLs from a text file (one per line) or a CSV with a `url` column (and optional `label`/`folder`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise LightcycleError(f"{path}: URL file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LightcycleError(f"{path}: not UTF-8 text ({exc})") from exc
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
    entries: list[UrlEntry] = []
    if "," in first and "://" not in first.split(",")[0]:  # a CSV with a header
        reader = csv.DictReader(lines)
        fields = {(f or "").strip().lower(): f for f in reader.fieldnames or []}
        if "url" not in fields:
            raise LightcycleError(f"{path}: CSV needs a 'url' column; the header has {reader.fieldnames}")
        label_col = fields.get("label") or fields.get("folder")
        for i, row in enumerate(reader):
            url = (row.get(fields["url"]) or "").strip()
            if url:
                label = (row.get(label_col) or "").strip() if label_col else ""
                entries.append(UrlEntry(url, label or None, i + 2))
    else:
        for i, line in enumerate(lines):  # the whole line: a URL may hold commas (w_100,h_100)
            url = line.strip()
            if url and not url.startswith("#"):
                entries.append(UrlEntry(url, None, i + 1))
    if not entries:
        raise LightcycleError(f"{path}: no URLs found")
    return entries


def url_stem(url: str) -> str:
    """The file name (without extension) a URL is saved under: stable across runs, so runs resume."""
    return hashlib.sha1(url.encode("utf-8")).hexdigest()[:16]


def _safe_label(label: str | None, where: str) -> str | None:
    if label is None:
        return None
    parts = Path(label).parts
    if Path(label).is_absolute() or ".." in parts or not parts:
        raise LightcycleError(f"{where}: label {label!r} is not a plain folder name")
    return label


def _extension(content_type: str, url: str) -> str:
    if content_type in CONTENT_EXTENSIONS:
        return CONTENT_EXTENSIONS[content_type]
    suffix = Path(urllib.parse.urlparse(url).path).suffix.lower()
    return suffix if suffix in IMAGE_EXTENSIONS else ".img"


class _Downloader:
    def __init__(self, dest: Path, timeout: float, retries: int, backoff: float, max_bytes: int,
                 file_timeout: float) -> None:
        self.dest, self.timeout, self.retries, self.backoff = dest, timeout, retries, backoff
        self.max_bytes, self.file_timeout = max_bytes, file_timeout
        self.lock = threading.Lock()
        self.hashes: dict[str, Path] = {}  # content hash -> the kept file
        for path in list_images(dest):
            try:
                self.hashes.setdefault(file_sha256(path), path)
            except OSError:
                pass

    def existing(self, folder: Path, stem: str) -> Path | None:
        if not folder.is_dir():
            return None
        return next((p for p in sorted(folder.glob(f"{stem}.*")) if p.suffix != ".part" and p.stat().st_size > 0), None)

    def fetch(self, entry: UrlEntry) -> DownloadResult:
        """Download one URL; a folder that cannot be written (a label too long for a file name, a
        full disk) fails this URL with the reason, and the others go on."""
        folder = self.dest / entry.label if entry.label else self.dest
        try:
            return self._fetch(entry, folder)
        except OSError as exc:
            return DownloadResult(entry.url, "failed", None, f"cannot write into {folder}: {exc.strerror or exc}")

    def _fetch(self, entry: UrlEntry, folder: Path) -> DownloadResult:
        stem = url_stem(entry.url)
        found = self.existing(folder, stem)
        if found is not None:
            return DownloadResult(entry.url, "exists", found)
        folder.mkdir(parents=True, exist_ok=True)
        self.remove_stale_parts(folder, stem)
        reason, attempts = "", 0
        with Deadline(self.file_timeout) as deadline:
            for attempt in range(self.retries + 1):
                pause = self.backoff * 2 ** (attempt - 1) if attempt else 0.0
                if attempt and pause >= deadline.remaining():
                    reason = f"{reason}; no time left for another attempt (--file-timeout {self.file_timeout:g} s)"
                    break
                time.sleep(pause)
                attempts += 1
                try:
                    ext, digest, part = self._get(entry.url, folder, stem, deadline)
                    return self._keep(entry.url, part, folder / f"{stem}{ext}", digest)
                except _Retry as exc:
                    reason = str(exc)
                except _Fail as exc:
                    return DownloadResult(entry.url, "failed", None, str(exc))
                if deadline.expired:
                    break
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        return DownloadResult(entry.url, "failed", None, f"{reason} (after {tries})")

    def remove_stale_parts(self, folder: Path, stem: str) -> None:
        """Delete `.part` files of this URL that a killed run left (older than a whole file's time
        limit, so never one a live download is writing). Unlinking a planted symlink removes the link only."""
        for old in folder.glob(f".{stem}*.part"):
            try:
                if time.time() - old.lstat().st_mtime > self.file_timeout + 60:
                    old.unlink()
            except OSError:
                pass

    def _get(self, url: str, folder: Path, stem: str, deadline: Deadline) -> tuple[str, str, Path]:
        """Stream `url` into a new temp file; returns (extension, sha256, temp path) or raises _Retry / _Fail
        (and leaves no temp file)."""
        too_slow = f"timed out: took longer than {self.file_timeout:g} s (--file-timeout)"
        # A fresh, unpredictable name, created exclusively (O_EXCL | O_NOFOLLOW): a file or symlink
        # planted in a shared download folder is never opened, let alone written through.
        fd, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".part", dir=folder)
        part = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                ext, digest = self._stream(url, f, deadline, too_slow)
            return ext, digest, part
        except BaseException as exc:
            part.unlink(missing_ok=True)
            if isinstance(exc, (_Retry, _Fail)) or not isinstance(exc, Exception):
                raise
            if isinstance(exc, RedirectRefused):
                raise _Fail(str(exc.reason)) from None
            if deadline.expired:  # the watchdog shut the connection: whatever broke, the time is up
                raise _Retry(too_slow) from None
            if isinstance(exc, urllib.error.HTTPError):
                message = f"HTTP {exc.code} {exc.reason}"
                raise (_Retry if exc.code in RETRY_STATUS else _Fail)(message) from None
            if isinstance(exc, urllib.error.URLError):
                if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                    raise _Retry(f"timed out after {self.timeout:g} s") from None
                raise _Retry(f"cannot connect ({exc.reason})") from None
            if isinstance(exc, (TimeoutError, socket.timeout)):
                raise _Retry(f"timed out after {self.timeout:g} s") from None
            if isinstance(exc, (http.client.HTTPException, ConnectionError, OSError)):
                raise _Retry(f"connection failed ({type(exc).__name__}: {exc})") from None
            raise
        finally:
            deadline.release()

    def _stream(self, url: str, f: IO[bytes], deadline: Deadline, too_slow: str) -> tuple[str, str]:
        """One attempt: the response checked (an image, not too large), its body written to `f`."""
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
        with deadline.opener().open(request, timeout=self.timeout) as response:
            content_type = response.headers.get_content_type()
            if not content_type.startswith("image/"):
                raise _Fail(f"content-type {content_type} is not an image")
            declared = response.headers.get("Content-Length")
            declared_n = int(declared) if declared and declared.isdigit() else None
            if declared_n is not None and declared_n > self.max_bytes:
                raise _Fail(f"too large: {declared_n} bytes > max {self.max_bytes}")
            digest, size = hashlib.sha256(), 0
            while True:
                chunk = response.read1(CHUNK)  # what has arrived, not a full 64 KB
                if deadline.expired:
                    raise _Retry(too_slow)
                if not chunk:
                    break
                size += len(chunk)
                if size > self.max_bytes:
                    raise _Fail(f"too large: more than max {self.max_bytes} bytes")
                digest.update(chunk)
                f.write(chunk)
            if declared_n is not None and size < declared_n:
                raise _Retry(f"truncated: got {size} of {declared_n} bytes")
            if size == 0:
                raise _Retry("empty response")
            return _extension(content_type, url), digest.hexdigest()

    def _keep(self, url: str, part: Path, final: Path, digest: str) -> DownloadResult:
        why = check_image(part)
        if why is not None:
            part.unlink(missing_ok=True)
            return DownloadResult(url, "failed", None, f"not a readable image ({why})")
        with self.lock:
            same = self.hashes.get(digest)
            if same is not None:
                part.unlink(missing_ok=True)
                return DownloadResult(url, "duplicate", same, f"same content as {same.name}")
            os.replace(part, final)
            self.hashes[digest] = final
        return DownloadResult(url, "ok", final)


def download_images(
    urls: Sequence[str | UrlEntry] | str | os.PathLike,
    dest: str | os.PathLike,
    workers: int = 8,
    timeout: float = 10.0,
    retries: int = 3,
    backoff: float = 0.5,
    max_bytes: int = 20 * 1024 * 1024,
    file_timeout: float = 120.0,
) -> list[DownloadResult]:
    """Download every URL into `dest` (see the module docstring); one result per input URL, in order.

    `urls`: a URL file (text or CSV) or a list of URLs / `UrlEntry`s. `timeout`: seconds per socket
    operation (connect, each read); `file_timeout`: wall-clock seconds for one whole file, retries
    included, whatever the server does; `retries`: extra attempts after a failure that may pass,
    `backoff * 2**k` seconds apart.
    """
    if isinstance(urls, (str, os.PathLike)):
        entries = read_urls(urls)
    else:
        entries = [u if isinstance(u, UrlEntry) else UrlEntry(str(u).strip(), None, i + 1) for i, u in enumerate(urls)]
    if int(workers) < 1 or int(retries) < 0 or float(timeout) <= 0 or float(file_timeout) <= 0 or int(max_bytes) < 1:
        raise LightcycleError(
            "download: workers >= 1, retries >= 0, timeout > 0, file_timeout > 0 and max_bytes >= 1 are required"
        )
    dest = Path(dest).expanduser()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LightcycleError(f"{dest}: cannot create the download folder ({exc})") from exc
    results: list[DownloadResult | None] = [None] * len(entries)
    first_line: dict[tuple[str, str | None], int] = {}
    todo: list[tuple[int, UrlEntry]] = []
    for i, entry in enumerate(entries):
        _safe_label(entry.label, f"line {entry.line}")
        scheme = urllib.parse.urlparse(entry.url).scheme.lower()
        if scheme not in ("http", "https"):
            results[i] = DownloadResult(entry.url, "failed", None, "not an http(s) URL")
        elif (entry.url, entry.label) in first_line:
            results[i] = DownloadResult(entry.url, "duplicate", None, f"same URL as line {first_line[(entry.url, entry.label)]}")
        else:
            first_line[(entry.url, entry.label)] = entry.line
            todo.append((i, entry))
    downloader = _Downloader(dest, float(timeout), int(retries), float(backoff), int(max_bytes), float(file_timeout))
    with ThreadPoolExecutor(max_workers=int(workers)) as pool:
        for (i, _), result in zip(todo, pool.map(lambda item: downloader.fetch(item[1]), todo)):
            results[i] = result
    return [r for r in results if r is not None]


def summarize(results: Iterable[DownloadResult]) -> list[str]:
    """A count per status, then one line per failed URL with its reason."""
    results = list(results)
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "exists", "duplicate", "failed")}
    lines = [
        f"{len(results)} URLs: {counts['ok']} downloaded, {counts['exists']} already there, "
        f"{counts['duplicate']} duplicates skipped, {counts['failed']} failed"
    ]
    lines += [f"  failed: {for_console(r.url)}: {for_console(r.reason)}" for r in results if r.status == "failed"]
    lines += [f"  duplicate: {for_console(r.url)}: {for_console(r.reason)}" for r in results if r.status == "duplicate"]
    return lines
