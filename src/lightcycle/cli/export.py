"""lightcycle-export: checkpoint -> ONNX / TorchScript model + preprocessing JSON, parity-checked."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from lightcycle.cli.common import config_dir, run_entry_point, user_errors_exit
from lightcycle.cli.predict import required
from lightcycle.errors import LightcycleError


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="export")
@user_errors_exit("lightcycle-export")
def _main(cfg: DictConfig) -> None:
    ckpt = required(cfg, "ckpt", "the checkpoint, e.g. ckpt=outputs/demo/checkpoints/last.ckpt")
    if not Path(str(ckpt)).expanduser().is_file():  # before importing torch: a typo answers at once
        raise LightcycleError(f"checkpoint {ckpt} not found")
    overwrite = cfg.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise LightcycleError(f"overwrite must be true or false, got {overwrite!r}")
    from lightcycle.export import export

    export(  # logs what it wrote and the parity, once
        ckpt, str(cfg.format), cfg.get("output"), cfg.get("size"), float(cfg.tolerance), int(cfg.opset), bool(cfg.dynamo),
        overwrite=overwrite,
    )


def main() -> None:
    """Console entry point (`lightcycle-export`)."""
    run_entry_point(_main)


if __name__ == "__main__":
    main()
