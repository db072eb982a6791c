"""Does ONNX Runtime pay on CPU for serving? The model's forward pass in torch (what lightcycle-serve
runs) against the same checkpoint exported by `lightcycle-export format=onnx` in onnxruntime, at the
batch sizes a server sees (1 without dynamic batching, up to 8 with it), same threads, interleaved.

The checkpoint is bench/serve.py's (efficientnet_lite0, bundled weights, demo classes, `--size`).

    flock /tmp/lightcycle-bench.lock python bench/serve_onnx.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import serve  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=30, help="forward calls per repeat")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of both runtimes")
    args = parser.parse_args()
    common.quiet()
    threads = int(args.threads)
    import torch

    torch.set_num_threads(threads)

    import onnxruntime as ort

    from lightcycle.export import INPUT_NAME, OUTPUT_NAME, export
    from lightcycle.module import VisionModule

    work = Path(tempfile.mkdtemp(prefix="lightcycle-bench-onnx-"))
    ckpt = serve.lightcycle_checkpoint(work, args.size)
    exported = export(ckpt, "onnx", work / "model.onnx")
    model = VisionModule.load(ckpt).eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(exported.model), options, providers=["CPUExecutionProvider"])
    results = {}
    for batch in args.batches:
        x = torch.randn(batch, 3, args.size, args.size)
        feed = {INPUT_NAME: x.numpy()}

        def torch_forward() -> float:
            began = time.perf_counter()
            with torch.inference_mode():
                for _ in range(args.calls):
                    model(x)
            return round(1000 * (time.perf_counter() - began) / args.calls, 2)

        def onnx_forward() -> float:
            began = time.perf_counter()
            for _ in range(args.calls):
                session.run([OUTPUT_NAME], feed)
            return round(1000 * (time.perf_counter() - began) / args.calls, 2)

        torch_forward(), onnx_forward()  # warm-up
        runs = common.interleaved({"torch": torch_forward, "onnxruntime": onnx_forward}, args.repeats)
        results[f"batch {batch}"] = {
            "torch_ms": common.median(runs["torch"]), "onnxruntime_ms": common.median(runs["onnxruntime"]),
            "torch_over_onnxruntime": round(common.paired_ratio(runs["torch"], runs["onnxruntime"]), 2),
        }
    common.report("serve_onnx", {"size": args.size, "threads": threads, "parity_max_abs_diff": exported.max_abs_diff,
                                 "onnxruntime": ort.__version__, "results": results})


if __name__ == "__main__":
    main()
