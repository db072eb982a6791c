"""Running `lightcycle-serve` in a subprocess for the tests: start it on a free loopback port, wait
until `/health` says every worker is ready, talk to it, stop it with SIGTERM."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def multipart(name: str, data: bytes, field: str = "file") -> tuple[bytes, str]:
    """A multipart/form-data body holding one file field; returns (body, content type)."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Served:
    """One `lightcycle-serve` process; its console output goes to `log`."""

    def __init__(self, ckpt: Path, log: Path, *overrides: str) -> None:
        self.ckpt, self.log, self.port = Path(ckpt), Path(log), free_port()
        env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1")
        cmd = [sys.executable, "-m", "lightcycle.cli.serve", f"ckpt={ckpt}", f"port={self.port}", "threads=1", *overrides]
        self._out = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def wait_ready(self, timeout: float = 240) -> "Served":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lightcycle-serve exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if self.request("GET", "/health", timeout=5)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"lightcycle-serve not ready after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float = 60) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def predict_file(self, path: Path, raw: bool = False) -> tuple[int, Any]:
        """POST one image file (multipart, or the raw bytes); returns (status, parsed JSON)."""
        data = Path(path).read_bytes()
        if raw:
            status, body = self.request("POST", "/predict", data, {"Content-Type": "application/octet-stream"})
        else:
            form, ctype = multipart(Path(path).name, data)
            status, body = self.request("POST", "/predict", form, {"Content-Type": ctype})
        return status, json.loads(body)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        try:  # the process group: anything a hard kill left behind
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._out.close()
        return self.proc.returncode


class ServerPool:
    """One server per demo checkpoint, all started together on first use (their start-up overlaps)."""

    def __init__(self, checkpoints: dict[str, Path], folder: Path, overrides: dict[str, list[str]],
                 common: tuple[str, ...] = ()) -> None:
        self.checkpoints, self.folder, self.overrides, self.common = checkpoints, folder, overrides, common
        self.servers: dict[str, Served] = {}

    def get(self, task: str) -> Served:
        if not self.servers:
            for name, ckpt in self.checkpoints.items():
                self.servers[name] = Served(ckpt, self.folder / f"{name}.log", *self.common, *self.overrides.get(name, []))
            for served in self.servers.values():
                served.wait_ready()
        return self.servers[task]

    def close(self) -> None:
        for served in self.servers.values():  # all at once: each takes seconds to drain and stop
            if served.proc.poll() is None:
                served.proc.send_signal(signal.SIGTERM)
        for served in self.servers.values():
            served.stop()
