"""`lightcycle.serve.app(ckpt)`: a LitServer answering `POST /predict`, `GET /info`, `GET /health` and a
web page at `/`, and `run(server)`, which serves it until Ctrl+C or SIGTERM.

    from lightcycle.serve import app, run
    server = app("outputs/demo/checkpoints/best.ckpt", max_batch_size=8)
    run(server, port=8000)            # or mount server.app (FastAPI) behind your own LitServer run

LitServe supplies the process layout: one or more web processes (uvicorn, FastAPI) in front of
`workers` inference processes per device, fed through queues with dynamic batching; its `/health`
says 200 once every worker has loaded the model. lightcycle replaces three of its routes: `/` (the
page), `/info` (the model) and `/predict`, whose handler receives and decodes the upload in the web
process (serve/uploads.py) before LitServe's own request handler queues the pixels for a worker.
Every refusal is one JSON line `{"error": ...}` with a 4xx status and one log line; an error
inside a worker is a 500 with no traceback in the response.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import litserve as ls
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from litserve.server import RegularRequestHandler
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from lightcycle.data.checks import pixel_limit
from lightcycle.digest import file_sha256
from lightcycle.errors import LightcycleError
from lightcycle.predict import Predictor, resolve_device
from lightcycle.serve.api import PredictorAPI
from lightcycle.serve.runtime import onnx_model, resolve_runtime
from lightcycle.serve.uploads import MEGABYTE, Refusal, decode_upload, receive_upload

log = logging.getLogger("lightcycle.serve")

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
PREDICT_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def model_info(ckpt: Path, tta: int = 0, ensemble: bool = False) -> dict[str, Any]:
    """What `GET /info` answers: the task, its outputs, the input size and framing, the backbone,
    the checkpoint's sha256 (`app` adds the runtime and the serving settings). Loads the checkpoint once, so a bad file is refused before serving."""
    predictor = Predictor.from_checkpoint(ckpt, ensemble=ensemble, tta=tta, device="cpu")
    task = predictor.task
    info: dict[str, Any] = {
        "task": task.name,
        "outputs": task.output_names,
        "input_size": predictor.inference.size,
        "framing": predictor.inference.framing.resize,
        "backbone": predictor.models[0].hparams.get("backbone"),
        "checkpoint": ckpt.name,
        "sha256": file_sha256(ckpt),
        "tta": predictor.n,
        "ensemble": len(predictor.models) if ensemble else 0,
    }
    return info


def page() -> str:
    """The web page: one HTML file with its script and styles inline (no CDN, no build step)."""
    return resources.files("lightcycle.serve").joinpath("page.html").read_text(encoding="utf-8")


def app(
    ckpt: str | Path,
    *,
    device: str = "auto",
    workers: int = 1,
    max_batch_size: int = 8,
    batch_timeout: float = 0.005,
    tta: int = 0,
    ensemble: bool = False,
    max_upload_mb: float = 20,
    max_pixels: int | None = None,
    threads: int | None = None,
    timeout: float = 30,
    runtime: str = "auto",
) -> ls.LitServer:
    """A LitServer for `ckpt` (not yet running: `run(server)`). Settings as `lightcycle-serve`'s;
    `runtime`: `auto` (ONNX Runtime on the CPU when installed and no TTA or ensemble is asked, else
    torch), `torch` or `onnx` (serve/runtime.py)."""
    ckpt = Path(ckpt).expanduser()
    if not ckpt.is_file():
        raise LightcycleError(f"ckpt={ckpt}: checkpoint not found")
    if int(workers) < 1:
        raise LightcycleError(f"workers must be at least 1, got {workers}")
    if int(max_batch_size) < 1:
        raise LightcycleError(f"max_batch_size must be at least 1, got {max_batch_size}")
    if float(batch_timeout) < 0:
        raise LightcycleError(f"batch_timeout must be >= 0 seconds, got {batch_timeout}")
    if float(max_upload_mb) <= 0:
        raise LightcycleError(f"max_upload_mb must be positive, got {max_upload_mb}")
    if max_pixels is not None:
        pixel_limit(max_pixels)  # validates
    accelerator = resolve_device(device).type
    chosen = resolve_runtime(runtime, accelerator, int(tta), bool(ensemble))
    info = model_info(ckpt, int(tta), bool(ensemble))
    onnx = str(onnx_model(ckpt, info["sha256"])) if chosen == "onnx" else None
    info["runtime"] = chosen
    log.info("runtime=%s%s", chosen, f" ({onnx})" if onnx else "")
    api = PredictorAPI(str(ckpt), tta=int(tta), ensemble=bool(ensemble), max_batch_size=int(max_batch_size),
                       batch_timeout=float(batch_timeout), max_pixels=max_pixels, threads=threads, onnx=onnx)
    server = ls.LitServer(api, accelerator=accelerator, devices=1, workers_per_device=int(workers),
                          timeout=float(timeout), info_path="/server", model_metadata=info)
    info["server"] = {"device": accelerator, "workers": int(workers), "max_batch_size": int(max_batch_size),
                      "batch_timeout": float(batch_timeout), "max_upload_mb": float(max_upload_mb),
                      "max_pixels": pixel_limit(max_pixels)}
    add_routes(server, api, info, int(float(max_upload_mb) * MEGABYTE), max_pixels)
    return server


def add_routes(server: ls.LitServer, api: PredictorAPI, info: dict[str, Any], max_bytes: int, max_pixels: int | None) -> None:
    """Replace LitServe's `/`, `/info` and `/predict` with lightcycle's; errors become `{"error": ...}`."""
    web: FastAPI = server.app
    web.router.routes = [r for r in web.router.routes if getattr(r, "path", None) not in ("/", "/predict")]
    handler = RegularRequestHandler(api, server)
    page_html = page()

    @web.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page_html)

    @web.get("/info")
    async def model() -> JSONResponse:
        """The model behind `/predict`: task, outputs (classes, tags, codes or points), input size,
        framing, backbone, the checkpoint's sha256, and the serving settings."""
        return JSONResponse(info)

    @web.post("/predict", openapi_extra=PREDICT_DOC)
    async def predict(request: Request) -> JSONResponse:
        """One image (a multipart file field or the raw bytes) -> the task's prediction record."""
        try:
            upload = await receive_upload(request, max_bytes)
            image = await run_in_threadpool(decode_upload, upload, max_pixels)
        except Refusal as refusal:
            client = request.client.host if request.client else "?"
            log.warning("refused POST /predict from %s: %d %s", client, refusal.status, refusal.message)
            return JSONResponse({"error": refusal.message}, status_code=refusal.status)
        answer = await handler.handle_request({"name": upload.name, "image": image}, dict)
        return JSONResponse(answer)

    @web.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code < 500:
            log.warning("refused %s %s: %d %s", request.method, request.url.path, exc.status_code, exc.detail)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @web.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        log.warning("refused %s %s: 422 invalid request", request.method, request.url.path)
        return JSONResponse({"error": "invalid request"}, status_code=422)


def run(server: ls.LitServer, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Serve until SIGTERM or Ctrl+C; both shut down gracefully: the web processes stop accepting,
    answer the requests in flight, then the inference workers stop."""
    if host not in ("127.0.0.1", "0.0.0.0", "::"):
        raise LightcycleError(f"host must be 127.0.0.1 (this machine only), 0.0.0.0 or ::, got {host!r}")
    if not 1024 <= int(port) <= 65535:
        raise LightcycleError(f"port must be between 1024 and 65535, got {port}")

    main_process = os.getpid()

    def stop(signum: int, frame: Any) -> None:
        if os.getpid() != main_process:  # a web process that inherited this handler, already drained by uvicorn
            raise SystemExit(0)
        # LitServer.run waits on its shutdown event (a multiprocessing manager's); setting it from another
        # thread (its own connection to the manager) takes LitServe's normal shutdown path: the web
        # processes drain first, then the workers stop, then the manager, after its monitor thread has seen it.
        event = getattr(server, "_shutdown_event", None)
        if event is None:  # still starting: nothing is in flight yet
            raise KeyboardInterrupt
        threading.Thread(target=event.set, name="lightcycle-sigterm", daemon=True).start()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.run(host=host, port=int(port), log_level=log_level, generate_client_file=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
