"""Serve a trained checkpoint: a JSON API (`POST /predict`) and a web page on LitServe (`lightcycle-serve`).

`server` builds the LitServer and its routes (`app`, `run`), `api` is the LitAPI around `Predictor`,
`uploads` receives and checks the image of a request, `runtime` picks torch or ONNX Runtime for the
forward pass, `page.html` is the page (no CDN, no build step).
"""

from lightcycle.serve.api import InlineFiles, PredictorAPI
from lightcycle.serve.runtime import RUNTIMES, resolve_runtime
from lightcycle.serve.server import app, model_info, run
from lightcycle.serve.uploads import Refusal, Upload, decode_upload, receive_upload

__all__ = ["RUNTIMES", "InlineFiles", "PredictorAPI", "Refusal", "Upload", "app", "decode_upload", "model_info", "receive_upload", "resolve_runtime", "run"]
