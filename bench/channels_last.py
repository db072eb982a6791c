"""Training-step and inference time of VisionModule with `channels_last` on and off (model.channels_last).

Same module, same random batch, same optimizer (AdamW over VisionModule's parameter groups, its betas and eps),
all layers trainable; steps timed after warm-up, interleaved over repeats. Reported per backbone: median
ms per training step and per eval forward, and the speed-up of channels_last (NHWC) over contiguous (NCHW).

    python bench/channels_last.py --quick   # efficientnet_lite0 and resnet18 at 64 px, 1 repeat
    python bench/channels_last.py           # + convnext_atto, 64 and 128 px, 3 repeats
"""

from __future__ import annotations

import time
from typing import Any

import common
import torch

from lightcycle.module import VisionModule
from lightcycle.tasks import ClassificationTask


def time_steps(backbone: str, size: int, batch_size: int, channels_last: bool, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = VisionModule(ClassificationTask([str(i) for i in range(6)]), backbone=backbone,
                         pretrained=False, channels_last=channels_last)
    model.configure_model()
    optimizer = torch.optim.AdamW(model.param_groups(), lr=1e-3, betas=tuple(model.hparams.betas), eps=model.hparams.eps)
    x, y = torch.randn(batch_size, 3, size, size), torch.randint(0, 6, (batch_size,))
    model.train()

    def train_step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def eval_step() -> None:
        with torch.no_grad():
            model(x)

    out = {}
    for name, step, mode in (("train_ms", train_step, model.train), ("eval_ms", eval_step, model.eval)):
        mode()
        for _ in range(2):  # warm-up: oneDNN picks its kernels on the first calls
            step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        out[name] = (time.perf_counter() - start) / steps * 1000
    return out


def main() -> None:
    parser = common.image_parser(__doc__, "efficientnet_lite0 and resnet18 at 64 px, 1 repeat")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    common.prepare(args)
    backbones = ["efficientnet_lite0", "resnet18"] if args.quick else ["efficientnet_lite0", "resnet18", "convnext_atto"]
    sizes = [args.size] if args.quick else sorted({args.size, 128})
    repeats = args.repeats or (1 if args.quick else 3)
    results: dict[str, Any] = {}
    for backbone in backbones:
        for size in sizes:
            runs = common.interleaved({
                "contiguous": lambda: time_steps(backbone, size, args.batch_size, False, args.steps),
                "channels_last": lambda: time_steps(backbone, size, args.batch_size, True, args.steps),
            }, repeats)
            med = {k: {m: round(common.median([r[m] for r in v]), 1) for m in ("train_ms", "eval_ms")} for k, v in runs.items()}
            results[f"{backbone}@{size}"] = {
                **med,
                "train_speedup": round(med["contiguous"]["train_ms"] / med["channels_last"]["train_ms"], 2),
                "eval_speedup": round(med["contiguous"]["eval_ms"] / med["channels_last"]["eval_ms"], 2),
            }
    common.report("channels_last", {"batch_size": args.batch_size, "repeats": repeats, "steps": args.steps,
                                     "results": results})


if __name__ == "__main__":
    main()
