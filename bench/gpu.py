"""GPU training throughput: lightcycle vs fastai vs a plain loop, the loader ceiling, DDP and torch.compile.

One command on a CUDA machine, unattended, within `--budget` seconds (default 480: 8 minutes on one
H200), writes one JSON (`--out`, default gpu.json):

- `train`: training images/s of resnet50 and efficientnet_lite0 at 224 px, bf16 mixed precision,
  channels_last, batch 256, on synthetic uint8 batches held in pinned memory (compute-bound: no
  decoding), normalised on the GPU: the plain loop (`torch.autocast`, AdamW, OneCycleLR), lightcycle
  (the Trainer lightcycle-train builds, `trainer=bf16`, its logger and callbacks, a DataModule that
  normalises after the transfer) and fastai (`Learner(...).to_channelslast(amp_mode="bf16")`, i.e.
  `to_bf16` plus channels_last, `fit_one_cycle`), all on the same network (lightcycle's timm body + head);
- `loader`: the loader ceiling on real JPEGs (bench/photos.py crops at 480x360): lightcycle's train
  loader (`data.num_workers` default: every core but one, side_on augmentation, uint8 batches) copied to
  the GPU and normalised there, and torchvision v2's uint8 loader with the same workers; then
  lightcycle training resnet50 end to end from those JPEGs (does the loader keep up?);
- `ddp`: lightcycle with `trainer=ddp` on every GPU (`torch.cuda.device_count()`), resnet50, images/s
  over all ranks;
- `compile`: lightcycle with `model.compile=true` for both models: seconds until the first steps are
  done (compilation) and the steady-state images/s afterwards.

Each part runs in a subprocess of its own with a time limit (a hang or a crash costs that part only;
in `--tiny` mode every part but DDP shares one, since there the imports cost more than the steps);
the JSON is rewritten after every part, so a run cut short keeps what finished. Every timing window
starts after warm-up steps and ends with `torch.cuda.synchronize()`.

    python bench/gpu.py                          # on a CUDA machine: every part, ~8 minutes
    python bench/gpu.py --parts train compile    # some parts only
    python bench/gpu.py --tiny                   # CPU smoke mode (32 px, batch 4, a few steps): tests/test_bench_gpu.py
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from gpu_loops import Window, device, lightcycle_fit, make_module, run_fastai, run_lightcycle, run_plain, sync  # noqa: E402

PARTS = ("train", "loader", "ddp", "compile")
LIMITS = {"train": 170, "loader": 100, "ddp": 80, "compile": 170}  # seconds; 520 in all, cut to --budget
MODELS = ("resnet50", "efficientnet_lite0")


def settings(tiny: bool) -> dict[str, Any]:
    """Sizes of every part: the real run, or a CPU smoke test of the same code paths."""
    if tiny:
        return {"size": 32, "batch_size": 4, "warmup": 1, "steps": 2, "classes": 10, "images": 44,
                "compile": {"backend": "eager"}, "loader_passes": 2, "loader_batches": 10, "e2e_steps": 2}
    return {"size": 224, "batch_size": 256, "warmup": 15, "steps": 50, "classes": 1000, "images": 2200,
            "compile": True, "loader_passes": 3, "loader_batches": 40, "e2e_steps": 30}


# --- parts -------------------------------------------------------------------------------------------------------
def part_train(cfg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for backbone in MODELS:
        out[backbone] = {}
        for name, runner in (("plain", run_plain), ("lightcycle", run_lightcycle), ("fastai", run_fastai)):
            out[backbone][name] = attempt(lambda: runner(backbone, cfg))
            print(f"train {backbone} {name}: {out[backbone][name]}", flush=True)
        rates = {k: v.get("images_per_s") for k, v in out[backbone].items()}
        if rates.get("plain"):
            out[backbone]["vs_plain"] = {k: round(v / rates["plain"], 3) for k, v in rates.items() if v}
    return out


def photo_folder(cfg: dict[str, Any]) -> Path:
    import photos

    from lightcycle.cache import cache_root

    per_class = max(4, cfg["images"] // 11)
    out = cache_root() / "bench" / f"photos-480x360-{per_class}"
    return photos.write_folder(out, per_class, 2, 480, 360, seed=0)


def part_loader(cfg: dict[str, Any]) -> dict[str, Any]:
    import data_path
    import torch

    from lightcycle.data import FolderDataModule
    from lightcycle.data.base import default_num_workers

    root = photo_folder(cfg)
    dev = device()
    workers = default_num_workers()
    files = sum(1 for _ in (root / "train").rglob("*.jpg"))
    # a pass of at least 40 batches (the files repeated), so filling the workers' queues once per pass counts little
    repeat = -(-cfg["loader_batches"] * cfg["batch_size"] // files)
    args = argparse.Namespace(size=cfg["size"], batch_size=cfg["batch_size"], workers=workers, repeat=repeat)

    def to_device(prepare: Any) -> Any:
        def moved(x: torch.Tensor) -> torch.Tensor:
            y = prepare(x.to(dev, non_blocking=True))
            sync()
            return y
        return moved

    out: dict[str, Any] = {"workers": workers, "train_files": files, "images_per_pass": files * repeat}
    for name in ("lightcycle", "torchvision_uint8"):
        def measure(name: str = name) -> dict[str, Any]:
            loader, prepare = data_path.CONTENDERS[name](root, args)
            return {"images_per_s": round(data_path.images_per_s(loader, cfg["loader_passes"], to_device(prepare)), 1)}
        out[name] = attempt(measure)
        print(f"loader {name}: {out[name]}", flush=True)

    def end_to_end() -> dict[str, Any]:
        dm = FolderDataModule(root, size=cfg["size"], batch_size=cfg["batch_size"], augment="side_on",
                              backbone="resnet50", device_transforms=True, check_images=False)
        dm.setup("fit")
        window = Window(min(5, cfg["e2e_steps"] - 1), cfg["e2e_steps"] - min(5, cfg["e2e_steps"] - 1), cfg["batch_size"])
        model = make_module("resnet50", len(dm.classes))
        lightcycle_fit(model, dm, window, cfg["e2e_steps"] + 1)
        return window.result()

    out["lightcycle_resnet50_from_jpegs"] = attempt(end_to_end)
    print(f"loader end to end: {out['lightcycle_resnet50_from_jpegs']}", flush=True)
    return out


def part_ddp(cfg: dict[str, Any]) -> dict[str, Any]:
    import torch

    gpus = torch.cuda.device_count()
    overrides = ("trainer.precision=bf16-mixed",) + (() if gpus else ("trainer.accelerator=cpu", "trainer.devices=2"))
    result = run_lightcycle("resnet50", cfg, preset="ddp", overrides=overrides)
    return {"processes": gpus or 2, "resnet50": result}


def part_compile(cfg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for backbone in MODELS:
        out[backbone] = attempt(lambda: run_lightcycle(backbone, cfg, compile=cfg["compile"]))
        print(f"compile {backbone}: {out[backbone]}", flush=True)
    return out


def attempt(fn: Any) -> dict[str, Any]:
    """The contender's result, or its error in one line (an out-of-memory or a missing package skips one row)."""
    import gc

    import torch

    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a benchmark reports what failed and goes on
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# --- orchestration -----------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import common
    import torch

    info = common.machine()
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(), cuda=torch.version.cuda)
    else:
        info["gpu"] = None
    return info


def run_parts(names: list[str], tiny: bool, out: Path) -> None:
    """Inside a part's subprocess (and every DDP rank): run the parts in turn; rank 0 rewrites `out`
    ({part: result}) after each, so a later part's hang keeps the earlier ones."""
    import common

    common.quiet()
    import torch

    torch.backends.cudnn.benchmark = True
    if tiny:
        # the smoke mode's figures mean nothing: one intra-op thread per process keeps DDP's two CPU ranks
        # (and a busy shared machine) from oversubscribing the cores, where waiting threads cost seconds a step
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        common.use_all_cores()
    runners = {"train": part_train, "loader": part_loader, "ddp": part_ddp, "compile": part_compile}
    results: dict[str, Any] = {}
    for name in names:
        t0 = time.perf_counter()
        results[name] = runners[name](settings(tiny))
        results[name]["seconds"] = round(time.perf_counter() - t0, 1)
        if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0:
            out.write_text(json.dumps(results))


def process_groups(parts: list[str], tiny: bool) -> list[list[str]]:
    """The parts each subprocess runs: one part each on a GPU machine (a hang or a crash costs that part
    only); in the CPU smoke mode, where importing the libraries costs more than the steps, every part but
    DDP in one process (DDP relaunches its process's command line for each rank, so it keeps its own)."""
    if not tiny:
        return [[name] for name in parts]
    shared = [name for name in parts if name != "ddp"]
    return [group for group in (shared, ["ddp"] if "ddp" in parts else []) if group]


def run_group(group: list[str], tiny: bool, limit: float) -> dict[str, Any]:
    """{part: result or error} of `group` run in a subprocess killed (with its DDP ranks and loader
    workers: a session of its own) after `limit` seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        part_out = Path(tmp) / "parts.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--part", *group, "--part-out", str(part_out)]
        cmd += ["--tiny"] if tiny else []
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=limit)
            failure = f"exit {proc.returncode}: {' | '.join((stderr or stdout).strip().splitlines()[-3:])[:600]}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            failure = f"timed out after {limit:.0f} s"
        done = json.loads(part_out.read_text()) if part_out.is_file() else {}
    return {name: done.get(name, {"error": failure}) for name in group}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke mode: 32 px, batch 4, a few steps")
    parser.add_argument("--parts", nargs="*", default=list(PARTS), choices=PARTS)
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for every part together")
    parser.add_argument("--out", type=Path, default=Path("gpu.json"))
    parser.add_argument("--part", nargs="+", choices=PARTS, help=argparse.SUPPRESS)  # internal: run parts here
    parser.add_argument("--part-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        run_parts(args.part, args.tiny, args.part_out)
        return
    from lightcycle.atomic import write_json

    start = time.perf_counter()
    report: dict[str, Any] = {"benchmark": "gpu", "tiny": args.tiny, "machine": machine(),
                              "settings": settings(args.tiny), "limits_s": {}, "parts": {}}
    for group in process_groups(args.parts, args.tiny):
        left = args.budget - (time.perf_counter() - start)
        limit = min(sum(LIMITS[name] for name in group), left)
        report["limits_s"]["+".join(group)] = round(limit, 1)
        if limit < 20:
            report["parts"].update({name: {"error": f"skipped: {left:.0f} s of the budget left"} for name in group})
        else:
            report["parts"].update(run_group(group, args.tiny, limit))
        report["elapsed_s"] = round(time.perf_counter() - start, 1)
        write_json(args.out, report)
        for name in group:
            print(f"[gpu.py] {name}: {json.dumps(report['parts'][name])}", flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
