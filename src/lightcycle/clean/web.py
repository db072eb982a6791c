"""The cleaner's web page and its JSON API: a FastAPI app over one `Scores` table (run by uvicorn, the
web stack lightcycle-serve's LitServe runs on; there is no model to batch here).

    GET  /                 the page (clean/page.html: inline script and styles, no CDN, no build step)
    GET  /info             task, classes, data root, how the layout can be edited, counts
    GET  /images           a page of images, worst loss first: ?split=&label=&prediction=&offset=&limit=
    GET  /pairs            a page of similar pairs, most similar first: ?leak=&labels_differ=&offset=&limit=
    GET  /file/{key}       a scored image's file (only files inside data.root)
    GET  /overlay/{key}    segmentation: the image with its mask drawn over it (PNG)
    POST /apply            {"changes": [{"key": K, "action": "remove" | "relabel", "label": ...}]} -> what was
                           done, what was left alone and why, and the journal to undo it with

Nothing on disk changes until `/apply`; files are addressed by their row key, never by a path from the
request, and a row whose file resolves outside data.root is refused, so no request can read anything else.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Body, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from lightcycle.clean.apply import apply, layout_of
from lightcycle.clean.changes import ACTIONS, Change
from lightcycle.clean.table import FileState
from lightcycle.data.segmentation import load_mask
from lightcycle.errors import LightcycleError
from lightcycle.interpretation.figures import overlay, palette

log = logging.getLogger("lightcycle.clean")

MAX_PAGE = 500  # rows per request at most
MAX_CHANGES = 100_000  # changes per apply at most


def page() -> str:
    """The page: one HTML file with its script and styles inline."""
    return resources.files("lightcycle.clean").joinpath("page.html").read_text(encoding="utf-8")


def _row(image: Any, applied: dict[int, dict[str, Any]]) -> dict[str, Any]:
    row = image.to_json()
    row.pop("size", None)
    row.pop("mtime_ns", None)
    row["applied"] = applied.get(image.key)
    return row


def _flag(value: str | None, name: str) -> bool | None:
    if value in (None, "", "any"):
        return None
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise HTTPException(422, f"{name} must be true or false, got {value!r}")


class Cleaner:
    """The state behind the page: the table, what has been applied from it, and where journals go."""

    def __init__(self, scores: Any, journal_dir: Path, relabel_kind: str | None) -> None:
        self.scores, self.journal_dir, self.relabel_kind = scores, Path(journal_dir), relabel_kind
        self.applied: dict[int, dict[str, Any]] = {}  # key -> what apply did to it
        self._lock = threading.Lock()

    def file(self, key: int) -> Path:
        """The file of row `key`, refused (404) when there is no such row or (403) it is not inside data.root."""
        try:
            image = self.scores.image(int(key))
        except LightcycleError:
            raise HTTPException(404, f"no scored image with key {key}") from None
        return self.inside_root(image.path)

    def inside_root(self, rel: str) -> Path:
        root = os.path.realpath(self.scores.root)
        path = os.path.realpath(os.path.join(root, rel))
        if not path.startswith(root.rstrip(os.sep) + os.sep):
            raise HTTPException(403, "not a file inside data.root")
        if not os.path.isfile(path):
            raise HTTPException(404, "file not found (moved or deleted since it was scored)")
        return Path(path)

    def apply(self, requested: list[dict[str, Any]]) -> dict[str, Any]:
        """Turn the page's decisions (by row key) into `Change`s as scored, apply them, note the results."""
        changes, keys = [], {}
        for item in requested:
            try:
                image = self.scores.image(int(item["key"]))
            except (KeyError, TypeError, ValueError, LightcycleError):
                raise HTTPException(422, f"not a scored image key: {item.get('key')!r}") from None
            action = item.get("action")
            if action not in ACTIONS:
                raise HTTPException(422, f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
            changes.append(Change(image.path, action, item.get("label"), image.state))
            keys[image.path] = image.key
        labels = {c.path: c.label for c in changes}
        with self._lock:
            result = apply(changes, self.scores, journal_dir=self.journal_dir)
            for outcome in result.done:
                self._note(keys[outcome.path], outcome, labels[outcome.path])
        answer = result.to_json()
        for entry in answer["done"] + answer["left"]:
            entry["key"] = keys.get(entry["path"])
        return answer

    def _note(self, key: int, outcome: Any, label: Any) -> None:
        """Show an applied change in the table: a relabel's new label, a moved file's new place."""
        image = self.scores.image(key)
        path = outcome.moved_to or image.path
        try:
            state = FileState.of(Path(self.scores.root) / path)
        except OSError:
            state = image.state
        if outcome.action == "relabel":
            label = sorted(label) if isinstance(label, list) else label
        else:
            label = image.label
        self.scores.images[key] = dataclasses.replace(image, path=path, label=label, state=state)
        self.applied[key] = {"action": outcome.action, "detail": outcome.detail}


def cleaning_app(scores: Any, *, journal_dir: str | os.PathLike) -> FastAPI:
    """The page and API over `scores` (see the module docstring); applies journal into `journal_dir`."""
    relabel_kind = layout_of(scores).relabel_kind  # "class", "tags" or None (remove only)
    cleaner = Cleaner(scores, Path(journal_dir), relabel_kind)
    web = FastAPI(title="lightcycle-clean", docs_url="/docs", redoc_url=None)
    web.state.cleaner = cleaner
    html = page()

    @web.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(html)

    @web.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)  # no icon, and no warning line per page load

    @web.get("/info")
    def info() -> dict[str, Any]:
        """What the page needs to draw its filters and buttons."""
        counts = {split: scores.count(split=split) for split in ("train", "valid")}
        return {"task": scores.task, "classes": list(scores.classes), "root": str(scores.root), "counts": counts,
                "relabel": relabel_kind, "pairs": len(scores.pairs), "journal_dir": str(journal_dir)}

    @web.get("/images")
    def images(split: str | None = None, label: str | None = None, prediction: str | None = None,
               offset: int = 0, limit: int = 24) -> dict[str, Any]:
        """A page of images, worst loss first; `label` / `prediction`: a class (or a tag the image has)."""
        split = split or None
        if split not in (None, "train", "valid"):
            raise HTTPException(422, f"split must be train or valid, got {split!r}")
        limit = max(1, min(int(limit), MAX_PAGE))
        label, prediction = label or None, prediction or None
        rows = scores.worst(split=split, label=label, prediction=prediction, offset=max(0, offset), limit=limit)
        total = scores.count(split=split, label=label, prediction=prediction)
        return {"total": total, "offset": max(0, offset), "rows": [_row(r, cleaner.applied) for r in rows]}

    @web.get("/pairs")
    def pairs(leak: str | None = None, labels_differ: str | None = None, offset: int = 0,
              limit: int = 12) -> dict[str, Any]:
        """A page of the most similar pairs, each with both images' rows."""
        wanted_leak, wanted_differ = _flag(leak, "leak"), _flag(labels_differ, "labels_differ")
        limit = max(1, min(int(limit), MAX_PAGE))
        found = scores.similar(leak=wanted_leak, labels_differ=wanted_differ, offset=max(0, offset), limit=limit)
        total = len(scores.similar(leak=wanted_leak, labels_differ=wanted_differ, limit=None))
        rows = [{**p.to_json(), "a": _row(scores.image(p.a), cleaner.applied),
                 "b": _row(scores.image(p.b), cleaner.applied)} for p in found]
        return {"total": total, "offset": max(0, offset), "rows": rows}

    @web.get("/file/{key}")
    def file(key: int) -> FileResponse:
        """The picture of row `key`."""
        return FileResponse(cleaner.file(key), headers={"Cache-Control": "no-store"})

    @web.get("/overlay/{key}")
    def overlay(key: int) -> Response:
        """Segmentation: the picture with its mask (the row's companion file) drawn over it."""
        picture = cleaner.file(key)
        companions = scores.image(key).companions
        if not companions:
            raise HTTPException(404, "this image has no mask")
        return Response(_overlay_png(picture, cleaner.inside_root(companions[0]), len(scores.classes)),
                        media_type="image/png", headers={"Cache-Control": "no-store"})

    @web.post("/apply")
    def apply_changes(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008  (FastAPI's way)
        """Apply the decisions; returns what was done, what was left alone (and why), and the journal."""
        requested = body.get("changes")
        if not isinstance(requested, list) or not all(isinstance(c, dict) for c in requested):
            raise HTTPException(422, "expected {\"changes\": [{\"key\": ..., \"action\": ..., \"label\": ...}]}")
        if len(requested) > MAX_CHANGES:
            raise HTTPException(413, f"at most {MAX_CHANGES} changes per apply")
        try:
            return cleaner.apply(requested)
        except LightcycleError as exc:
            raise HTTPException(409, str(exc)) from None

    @web.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code < 500:
            log.warning("refused %s %s: %d %s", request.method, request.url.path, exc.status_code, exc.detail)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @web.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "invalid request"}, status_code=422)

    return web


def _overlay_png(picture: Path, mask_file: Path, n_codes: int) -> bytes:

    try:
        with Image.open(picture) as img:
            rgb = np.asarray(img.convert("RGB"))
        mask = load_mask(mask_file)
    except (OSError, LightcycleError) as exc:
        raise HTTPException(422, f"cannot draw the mask: {exc}") from None
    if mask.shape[:2] != rgb.shape[:2]:
        raise HTTPException(422, "the mask and the image differ in size")
    drawn = overlay(rgb, mask, palette(max(2, n_codes, int(mask.max()) + 1)), void=None, alpha=0.45)
    out = io.BytesIO()
    Image.fromarray(drawn).save(out, format="PNG")
    return out.getvalue()
