"""lightcycle-interpret: checkpoint + its run's data config -> confusion matrix, most confused, top losses,
the course's inspection views (the same report code as the end of training), and, with `heatmaps=true`,
`heatmaps.png`: where the model looks in the top-loss images.

The checkpoint holds the weights and the task (class names, thresholds); the data settings come from
the run that wrote it: `<run dir>/.hydra/config.yaml`, where the checkpoint is
`<run dir>/checkpoints/<name>.ckpt`, read as data (lightcycle.run.record: only lightcycle's own
DataModules, with their own settings, are built from it). `data.root=...` (and any `data.*`)
overrides them, e.g. to look at the same model on a copy of the data somewhere else.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from lightcycle.cli.common import config_dir, log, run_entry_point, user_errors_exit
from lightcycle.errors import LightcycleError
from lightcycle.outputs import same_file
from lightcycle.run.record import checkpoint_datamodule, run_dir_of, run_setting

REPORT_SUFFIXES = (".png", ".csv", ".json")  # what the report writes into output_dir


def pick_device(device: str) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise LightcycleError(f"device={device!r} is not a device ({exc})") from None


def interpret(cfg: DictConfig) -> dict[str, Path]:
    """Run the interpretation of `cfg.ckpt`; returns name -> written file."""
    from lightcycle.interpretation import (
        collect,
        inspection_views,
        summary_lines,
        write_report,
    )
    from lightcycle.module import VisionModule

    if not cfg.get("ckpt"):
        raise LightcycleError("ckpt is not set: pass ckpt=<run dir>/checkpoints/last.ckpt")
    ckpt = Path(str(cfg.ckpt)).expanduser()
    if not ckpt.is_file():
        raise LightcycleError(f"checkpoint {ckpt} not found")
    run_dir = Path(str(cfg.run_dir)).expanduser() if cfg.get("run_dir") else run_dir_of(ckpt)
    output_dir = Path(str(cfg.output_dir)).expanduser() if cfg.get("output_dir") else run_dir / "interpret"
    if same_file(output_dir, ckpt) or same_file(output_dir, ckpt.parent) and ckpt.suffix.lower() in REPORT_SUFFIXES:
        raise LightcycleError(f"output_dir={output_dir} would write over the checkpoint {ckpt}; choose another output_dir=")
    overrides = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if v is not None}
    device = pick_device(str(cfg.get("device", "auto")))

    model = VisionModule.load(ckpt, map_location=device)
    if cfg.get("heatmaps"):
        from lightcycle.interpretation.heatmaps import check_heatmaps

        check_heatmaps(model)  # segmentation and points refuse before the pass over the data
    datamodule = checkpoint_datamodule(ckpt, overrides, run_dir)  # at the size the checkpoint ended at
    datamodule.prepare_data()
    datamodule.setup("validate")
    model.task.check_compatible(datamodule.make_task(), str(ckpt))  # same classes, same order

    log.info("interpreting %s on %d validation images (%s)", ckpt, len(datamodule.valid_samples), device)
    result = collect(model, datamodule, device=device, keep_masks=int(cfg.top_k))
    views = inspection_views(result, cfg.get("view_size", 4), view_seed(cfg, run_dir)) if _views_on(cfg) else None
    written = write_report(result, output_dir, int(cfg.top_k), views=views)
    if cfg.get("heatmaps"):  # Grad-CAM of the predicted output over the top losses
        from lightcycle.atomic import save_figure
        from lightcycle.interpretation.heatmaps import plot_heatmaps

        written["heatmaps_png"] = save_figure(output_dir / "heatmaps.png", plot_heatmaps(model, result, max(1, int(cfg.top_k))))
    for line in summary_lines(result):
        print(line)
    print(f"wrote {', '.join(sorted(p.name for p in written.values()))} to {output_dir}")
    return written


def view_seed(cfg: DictConfig, run_dir: Path) -> int:
    """`seed`, else the training run's `interpret.seed` (its `seed`), so the random views match the run's report."""
    if cfg.get("seed") is not None:
        return int(cfg.seed)
    seed = run_setting(run_dir, "interpret.seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else 0


def _views_on(cfg: DictConfig) -> bool:
    value = cfg.get("views", True)
    if not isinstance(value, bool):
        raise LightcycleError(f"views must be true or false, got {value!r}")
    return value


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="interpret")
@user_errors_exit("lightcycle-interpret")
def _main(cfg: DictConfig) -> None:
    interpret(cfg)


def main() -> None:
    """Console entry point (`lightcycle-interpret`)."""
    run_entry_point(_main)


if __name__ == "__main__":
    main()
