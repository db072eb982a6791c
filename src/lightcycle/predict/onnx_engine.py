"""A model's forward pass in ONNX Runtime on the CPU, for `Predictor(engine=...)`.

The session runs a file written by `lightcycle-export format=onnx` (parity-checked against the
Lightning model there): a normalised NCHW float batch in, the raw outputs (logits) out. Everything
around it (framing, normalisation, activation, decoding) stays the Predictor's, so the answers are
those of the torch model up to float rounding.
"""

from __future__ import annotations

import os

import torch

from lightcycle.errors import LightcycleError
from lightcycle.export import INPUT_NAME, OUTPUT_NAME


class OnnxEngine:
    """Callable `normalised batch [B, 3, S, S] -> logits` running `path` in onnxruntime's CPU provider.

    Args:
        path: the exported `.onnx` file.
        threads: onnxruntime's intra-op threads (None: its default, one per core).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        try:
            # deferred: onnxruntime is optional (the serve and export extras)
            import onnxruntime as ort
        except ImportError as exc:
            raise LightcycleError("runtime=onnx needs onnxruntime: pip install 'lightcycle[serve]'") from exc
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self.path = str(path)
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        feed = {INPUT_NAME: x.detach().to("cpu", torch.float32).contiguous().numpy()}
        return torch.from_numpy(self.session.run([OUTPUT_NAME], feed)[0])
