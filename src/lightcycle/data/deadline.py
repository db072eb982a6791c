"""A wall-clock limit on an HTTP(S) transfer, whatever the server does.

A socket timeout only bounds each wait for data: a server that sends a byte a second (in the TLS
handshake, the headers or the body) resets it forever, and a plain read of 64 KB waits for all of
it. `Deadline` opens urllib's connections so that each socket is watched, and when the time is up a
timer thread shuts those sockets down, which makes any blocked read return at once. Only the name
lookup before connecting cannot be cut short; the system resolver bounds it.

The watchdog covers HTTP(S) sockets only, so the opener follows only redirects to http(s) URLs:
a redirect to `ftp://` (which urllib would follow with its own, unwatched FTP client) or to any
other scheme is refused with `RedirectRefused`.

    with Deadline(120) as deadline:
        with deadline.opener().open(request, timeout=10) as response:
            chunk = response.read1(65536)
            if deadline.expired: ...
"""

from __future__ import annotations

import functools
import http.client
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HTTP_SCHEMES: tuple[str, ...] = ("http", "https")


class RedirectRefused(urllib.error.URLError):
    """A redirect to a URL that is not http(s): the transfer stops; nothing is fetched from it."""


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirect handling, minus every target that is not http(s)."""

    def http_error_302(self, req: urllib.request.Request, fp: object, code: int, msg: str, headers: object) -> object:
        location = headers.get("location") or headers.get("uri")  # type: ignore[attr-defined]
        if location:
            target = urllib.parse.urljoin(req.full_url, location)
            if urllib.parse.urlparse(target).scheme.lower() not in HTTP_SCHEMES:
                raise RedirectRefused(f"HTTP {code} redirect to {target!r} refused: only http(s) URLs are followed")
        return super().http_error_302(req, fp, code, msg, headers)  # type: ignore[arg-type]

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class Deadline:
    """`seconds` from now, every connection opened through `opener()` is shut down.

    Sockets are held as duplicated descriptors, because the TLS layer takes over the original socket
    object; `release` closes them (after each attempt; leaving the `with` block does too).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires = time.monotonic() + seconds
        self.expired = False
        self._fds: list[int] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        self.release()

    def remaining(self) -> float:
        return self.expires - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down when the time is up (at once if it is up already)."""
        with self._lock:
            self._fds.append(os.dup(sock.fileno()))
            if self.expired:
                _shut(self._fds[-1])

    def release(self) -> None:
        """Close the duplicated descriptors of the connections watched so far."""
        with self._lock:
            for fd in self._fds:
                os.close(fd)
            self._fds.clear()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for fd in self._fds:
                _shut(fd)

    def connection(self, http_class: type, host: str, **options: object) -> http.client.HTTPConnection:
        """An `http_class` connection whose sockets connect within the limit and are watched."""
        conn = http_class(host, **options)
        create = conn._create_connection  # what HTTPConnection.connect calls to open its socket

        def create_watched(address: tuple[str, int], timeout: float, *args: object) -> socket.socket:
            left = self.remaining()
            if left <= 0:
                raise TimeoutError("no time left for this file")
            sock = create(address, min(timeout, left) if timeout is not None else left, *args)
            self.watch(sock)
            return sock

        conn._create_connection = create_watched
        return conn

    def opener(self) -> urllib.request.OpenerDirector:
        """urllib's opener (http(s) redirects, proxies, HTTPS) with every connection it opens watched."""
        handlers = [_WatchedHTTPHandler(), _WatchedHTTPSHandler(), _HttpOnlyRedirects()]
        for handler in handlers:
            handler.deadline = self
        return urllib.request.build_opener(*handlers)


def _shut(fd: int) -> None:
    """Shut down the connection behind `fd` (a blocked read on it returns); `fd` stays open."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.detach()


class _Watched:
    """Mixin for urllib's HTTP(S) handlers: open connections through the handler's `Deadline`."""

    deadline: Deadline

    def do_open(self, http_class: type, req: urllib.request.Request, **kwargs: object) -> object:
        opener = functools.partial(self.deadline.connection, http_class)
        return super().do_open(opener, req, **kwargs)  # type: ignore[misc]


class _WatchedHTTPHandler(_Watched, urllib.request.HTTPHandler):
    pass


class _WatchedHTTPSHandler(_Watched, urllib.request.HTTPSHandler):
    pass
