"""What a `POST /predict` carries: one image, as the raw request body or a multipart file field,
checked in the web process before any model worker sees it.

A bad request is refused with a status and one line (`Refusal`): a body over `max_upload_mb` (413,
counted while it streams in, so an endless body is cut off), an empty body or form without a file
(400), bytes that are not an image or are truncated (400), a picture with more pixels than
`data.max_pixels` (413, from its header, never decoded). Everything else is decoded exactly as
training decodes files (data/checks.py: EXIF rotation, CMYK, 16-bit and palette scans to RGB), so the
model workers only ever receive pixels, and one bad upload can never fail the batch it would share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request

from lightcycle.data.checks import ImageTooLarge, load_image_bytes
from lightcycle.errors import LightcycleError

MEGABYTE = 1 << 20


class Refusal(Exception):
    """A request answered with `status` and the one-line `message` instead of a prediction."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = int(status), message


@dataclass(frozen=True)
class Upload:
    """One received image: the name it was sent under and its bytes."""

    name: str
    data: bytes


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused (413) as soon as it is longer than `max_bytes`."""
    too_large = Refusal(413, f"upload larger than max_upload_mb={max_bytes / MEGABYTE:g}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def receive_upload(request: Request, max_bytes: int) -> Upload:
    """The one image of a request: a multipart form's file field, or else the whole body."""
    body = await read_body(request, max_bytes)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        request._body = body  # starlette parses the form from the body already read (and size-checked)
        try:
            form = await request.form()
        except Exception as exc:
            raise Refusal(400, f"malformed multipart form ({type(exc).__name__})") from None
        files = [value for value in form.values() if isinstance(value, UploadFile)]
        if len(files) != 1:
            await form.close()
            found = "no file field" if not files else f"{len(files)} files"
            raise Refusal(400, f"send one image per request as a file field (e.g. -F file=@cat.jpg); the form has {found}")
        data = await files[0].read()
        upload = Upload(clean_name(files[0].filename), data)
        await form.close()
    else:
        upload = Upload("upload", body)
    if not upload.data:
        raise Refusal(400, "empty upload: send the image as the request body or as a multipart file field")
    return upload


def clean_name(name: str | None) -> str:
    """A sent file name fit for one log line and a JSON answer: its last path part, printable, short."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch if ch.isprintable() else "?" for ch in name)[:200]
    return name or "upload"


def decode_upload(upload: Upload, max_pixels: int | None) -> np.ndarray:
    """The upload's pixels, HxWx3 uint8 RGB, upright (training's decoding); refusals say why not."""
    try:
        return load_image_bytes(upload.data, upload.name, max_pixels)
    except ImageTooLarge as exc:
        raise Refusal(413, str(exc)) from None
    except LightcycleError as exc:
        raise Refusal(400, str(exc)) from None
