"""The end-of-training report beside the epoch time: what `interpret` costs after a run.

A resnet18 (random init: the cost of drawing does not depend on the weights) trains on a real-photo
folder (bench/photos.py: 11 classes, 320x240 JPEGs framed to 128 px, 48 training and 12 validation
images a class by default) for a few epochs in a plain Lightning Trainer; then, on the trained model,
interleaved:

- `valid pass`: one validation pass of the report (`lightcycle.interpretation.collect`);
- `report`: the `Interpretation` callback as lightcycle-train runs it (collect, tables, each figure
  drawn once for TensorBoard and the PNG, views with more than `max_view_panels` pictures deferred to
  lightcycle-interpret);
- `report, every view drawn twice`: what it did before: every view drawn, each figure rendered once
  for TensorBoard (`add_figure`) and once more for its PNG (`savefig`).

    python bench/interpretation.py            # 11 classes x 48/12 images, 5 epochs, 3 repeats
    python bench/interpretation.py --quick    # 11 x 16/8 images, 1 epoch, 1 repeat (a smoke test)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def main() -> None:
    parser = common.image_parser(__doc__, "11 x 16/8 images, 1 epoch, 1 repeat")
    parser.set_defaults(size=128, batch_size=32)
    args = parser.parse_args()
    common.prepare(args)
    import lightning as L
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from lightcycle.atomic import save_figure
    from lightcycle.callbacks.interpretation import Interpretation
    from lightcycle.data import FolderDataModule
    from lightcycle.interpretation import collect, inspection_views, make_figures, write_tables
    from lightcycle.module import VisionModule
    from photos import write_folder

    n_train, n_valid, epochs, repeats = (16, 8, 1, 1) if args.quick else (48, 12, 5, 3)
    work = Path(tempfile.mkdtemp(prefix="bench-interpret-"))
    root = write_folder(work / "photos", n_train, n_valid, 320, 240, seed=0)
    dm = FolderDataModule(root, size=args.size, batch_size=args.batch_size, num_workers=args.workers, backbone="resnet18",
                          check_images=False)
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="resnet18", pretrained=False, lr=3e-3)

    class EpochTimer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.start = time.perf_counter()

        def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if not trainer.sanity_checking:
                self.times.append(time.perf_counter() - self.start)

    timer = EpochTimer()
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[timer])
    trainer.fit(model, datamodule=dm)
    model.eval()

    def fake_trainer(writer: SummaryWriter) -> SimpleNamespace:
        return SimpleNamespace(datamodule=dm, precision_plugin=None, interrupted=False, is_global_zero=True,
                               global_step=trainer.global_step, loggers=[SimpleNamespace(experiment=writer)])

    def valid_pass() -> float:
        start = time.perf_counter()
        collect(model, dm)
        return round(time.perf_counter() - start, 3)

    def report() -> float:
        out = Path(tempfile.mkdtemp(dir=work))
        writer = SummaryWriter(str(out / "tb"))
        start = time.perf_counter()
        Interpretation(9, out / "interpret", views=True)._run(fake_trainer(writer), model)
        writer.close()
        return round(time.perf_counter() - start, 3)

    def every_view_twice() -> float:
        out = Path(tempfile.mkdtemp(dir=work))
        writer = SummaryWriter(str(out / "tb"))
        start = time.perf_counter()
        result = collect(model, dm, keep_masks=9)
        views = inspection_views(result, 4, 0)
        figures = make_figures(result, 9, views)
        for name, fig in figures.items():
            writer.add_figure(f"interpret/{name}", fig, global_step=trainer.global_step, close=False)
        write_tables(result, out / "interpret", views)
        for name, fig in figures.items():
            save_figure(out / "interpret" / f"{name}.png", fig)
        writer.close()
        return round(time.perf_counter() - start, 3)

    runs = common.interleaved({"valid pass": valid_pass, "report": report,
                               "report, every view drawn twice": every_view_twice}, repeats)
    medians = {name: common.median(values) for name, values in runs.items()}
    common.report("interpretation", {
        "setup": {"images": {"train": len(dm.train_samples), "valid": len(dm.valid_samples)},
                  "classes": len(dm.make_task().class_names), "size": args.size, "epochs": epochs,
                  "workers": args.workers, "threads": torch.get_num_threads()},
        "epoch_s": timer.times, "epoch_median_s": common.median(timer.times),
        "runs": runs, "median_s": medians,
        "report_minus_valid_pass_s": round(medians["report"] - medians["valid pass"], 3),
        "report_over_epoch": round(medians["report"] / common.median(timer.times), 3),
        "before_over_epoch": round(medians["report, every view drawn twice"] / common.median(timer.times), 3),
    })


if __name__ == "__main__":
    main()
