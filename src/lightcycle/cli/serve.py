"""lightcycle-serve: a checkpoint behind a web page and a JSON API on LitServe (lightcycle.serve)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from lightcycle.cli.common import config_dir, log, require_extra, run_entry_point, user_errors_exit
from lightcycle.cli.predict import required, tta_settings
from lightcycle.errors import LightcycleError


def settings(cfg: DictConfig) -> dict:
    """`lightcycle.serve.app`'s keyword arguments from the composed config."""
    tta = tta_settings(cfg.get("tta"))
    data = cfg.get("data") or {}
    return dict(
        device=str(cfg.device), workers=int(cfg.workers), max_batch_size=int(cfg.max_batch_size),
        batch_timeout=float(cfg.batch_timeout), tta=int(tta["n"]), ensemble=bool(cfg.ensemble),
        max_upload_mb=float(cfg.max_upload_mb), max_pixels=data.get("max_pixels"),
        threads=cfg.get("threads"), timeout=float(cfg.timeout), runtime=str(cfg.get("runtime") or "auto"),
    )


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="serve")
@user_errors_exit("lightcycle-serve")
def _main(cfg: DictConfig) -> None:
    ckpt = str(required(cfg, "ckpt", "the checkpoint, e.g. ckpt=outputs/demo/checkpoints/best.ckpt"))
    if not Path(ckpt).expanduser().is_file():  # before importing torch and LitServe: a typo answers at once
        raise LightcycleError(f"ckpt={ckpt}: checkpoint not found")
    require_extra("lightcycle-serve", "serve", "litserve", "multipart")
    from lightcycle.serve import app, run

    server = app(ckpt, **settings(cfg))
    host, port = str(cfg.host), int(cfg.port)
    log.info("serving %s at http://%s:%d/ (API: POST /predict, GET /info, GET /health, docs at /docs)", ckpt, host, port)
    run(server, host=host, port=port, log_level=str(cfg.log_level))


def main() -> None:
    """Console entry point (`lightcycle-serve`)."""
    run_entry_point(_main)


if __name__ == "__main__":
    main()
