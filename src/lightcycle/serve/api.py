"""The model side of `lightcycle-serve`: a LitServe `LitAPI` around `Predictor`.

Each inference worker process loads the checkpoint once (`setup`) and answers batches that LitServe's
dynamic batching collects (`max_batch_size` requests, or what arrived within `batch_timeout`
seconds). Prediction is `Predictor.iter_predictions` (the same framing, normalisation, TTA and
decoding as `lightcycle-predict`) and each answer is the task's `served_record` (predict/per_task/): the record
`lightcycle-predict` writes, with a segmentation mask inline as a base64 PNG instead of a file.

Requests arrive already decoded (`{"name": ..., "image": HxWx3 uint8}`, see serve/uploads.py): bad
uploads are refused in the web process, so one can never fail the batch it would have joined. Raw
image bytes (`{"name": ..., "data": bytes}`) are accepted too, for a LitServer of one's own.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import litserve as ls
import numpy as np
import torch
from fastapi import HTTPException

from lightcycle.predict import Predictor
from lightcycle.predict.onnx_engine import OnnxEngine
from lightcycle.predict.per_task import task_predictions
from lightcycle.predict.side_files import mask_image
from lightcycle.quiet import quiet_known_noise
from lightcycle.serve.uploads import Refusal, Upload, decode_upload


class InlineFiles:
    """The side-file writer of a served answer: a mask comes back as base64 PNG text, not a file."""

    def mask(self, name: str, mask: torch.Tensor, num_classes: int) -> str:
        buffer = io.BytesIO()
        mask_image(mask, num_classes).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")


class PredictorAPI(ls.LitAPI):
    """Serve one checkpoint (or its snapshot ensemble) through LitServe.

    Args:
        ckpt: the checkpoint; everything inference needs is read from it.
        tta: augmented views besides the original (0 = off), as `lightcycle-predict tta.n=N`.
        ensemble: average the `snapshot-cycle*.ckpt` files beside `ckpt`.
        max_batch_size, batch_timeout: LitServe's dynamic batching (1 = every request alone).
        max_pixels: the decompression-bomb limit for raw bytes given to this API directly.
        threads: torch's (and onnxruntime's) intra-op threads per worker (None: their default).
        onnx: an exported `.onnx` file of `ckpt` to run in ONNX Runtime in place of the model's
            forward pass (serve/runtime.py); None = torch.
    """

    def __init__(
        self,
        ckpt: str,
        *,
        tta: int = 0,
        ensemble: bool = False,
        max_batch_size: int = 8,
        batch_timeout: float = 0.005,
        max_pixels: int | None = None,
        threads: int | None = None,
        onnx: str | None = None,
    ) -> None:
        super().__init__(max_batch_size=int(max_batch_size), batch_timeout=float(batch_timeout), api_path="/predict")
        self.ckpt, self.tta, self.ensemble = str(ckpt), int(tta), bool(ensemble)
        self.max_pixels, self.threads, self.onnx = max_pixels, threads, onnx

    def setup(self, device: Any) -> None:
        quiet_known_noise()
        if self.threads:
            torch.set_num_threads(int(self.threads))
        engine = None
        if self.onnx:
            engine = OnnxEngine(self.onnx, self.threads)
        self.predictor = Predictor.from_checkpoint(
            self.ckpt, ensemble=self.ensemble, tta=self.tta, batch_size=self.max_batch_size, device=str(device),
            engine=engine,
        )
        self.files = InlineFiles()

    def decode_request(self, request: Any) -> dict[str, Any]:
        if isinstance(request, dict) and isinstance(request.get("image"), np.ndarray):
            return request
        if isinstance(request, dict) and isinstance(request.get("data"), (bytes, bytearray)):
            upload = Upload(str(request.get("name") or "upload"), bytes(request["data"]))
            try:
                return {"name": upload.name, "image": decode_upload(upload, self.max_pixels)}
            except Refusal as refusal:
                raise HTTPException(refusal.status, refusal.message) from None
        raise HTTPException(400, "expected an image (a multipart file field or the raw bytes)")

    def batch(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(inputs)

    def predict(self, x: Any) -> Any:
        requests = x if isinstance(x, list) else [x]
        predictions = self.predictor.iter_predictions([r["image"] for r in requests], num_workers=0)
        answers = [(r["name"], p) for r, p in zip(requests, predictions)]
        return answers if isinstance(x, list) else answers[0]

    def unbatch(self, output: list[Any]) -> list[Any]:
        return list(output)

    def encode_response(self, output: Any) -> dict[str, Any]:
        name, prediction = output
        return task_predictions(self.predictor.task).served_record(prediction, name, self.files)
