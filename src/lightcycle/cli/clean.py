"""lightcycle-clean: a checkpoint's worst-scored images and most similar pairs in a web page, where they
are removed or relabelled on Apply (lightcycle.clean); `undo=<journal>` puts an apply back and exits."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from lightcycle.cli.common import config_dir, log, require_extra, run_entry_point, user_errors_exit
from lightcycle.errors import LightcycleError, printable

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def undo_journal(journal: str) -> None:
    """Put back what one apply did; a file it must leave alone is listed and the exit status is 1."""
    from lightcycle.clean import undo

    undone = undo(journal)
    print(f"restored {len(undone.restored)} file(s) from {printable(journal)}")
    for path, why in undone.left:
        print(f"  left alone: {printable(path)}: {printable(why)}")
    if undone.left:
        raise LightcycleError(f"{len(undone.left)} file(s) of {printable(journal)} were left alone (listed above)")


def check_address(host: str, port: int) -> None:
    if not 1024 <= int(port) <= 65535:
        raise LightcycleError(f"port must be between 1024 and 65535, got {port}")
    if host not in LOOPBACK:
        log.warning("host=%s: the cleaning page moves files under data.root, for anyone who reaches this address", host)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="clean")
@user_errors_exit("lightcycle-clean")
def _main(cfg: DictConfig) -> None:
    if cfg.get("undo"):
        undo_journal(str(cfg.undo))
        return
    if not cfg.get("ckpt"):
        raise LightcycleError("ckpt is not set: pass ckpt=<run dir>/checkpoints/last.ckpt (or undo=<journal>)")
    ckpt = Path(str(cfg.ckpt)).expanduser()
    if not ckpt.is_file():  # before importing torch: a typo answers at once
        raise LightcycleError(f"ckpt={ckpt}: checkpoint not found")
    host, port = str(cfg.host), int(cfg.port)
    check_address(host, port)
    require_extra("lightcycle-clean", "serve", "fastapi", "uvicorn")
    import uvicorn

    from lightcycle.clean.score import scores_path
    from lightcycle.clean.stored import scores_for
    from lightcycle.clean.web import cleaning_app
    from lightcycle.run.record import run_dir_of

    run_dir = Path(str(cfg.run_dir)).expanduser() if cfg.get("run_dir") else run_dir_of(ckpt)
    overrides = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if v is not None}
    scores = scores_for(ckpt, overrides, run_dir=run_dir, pairs=int(cfg.pairs), device=str(cfg.device),
                        batch_size=cfg.get("batch_size"), rescore=bool(cfg.get("rescore")))
    web = cleaning_app(scores, journal_dir=scores_path(run_dir).parent)
    log.info("lightcycle-clean: %d images and %d similar pairs at http://%s:%d/ (Ctrl+C stops; journals go to %s)",
             len(scores.images), len(scores.pairs), host, port, scores_path(run_dir).parent)
    uvicorn.run(web, host=host, port=port, log_level=str(cfg.log_level))


def main() -> None:
    """Console entry point (`lightcycle-clean`)."""
    run_entry_point(_main)


if __name__ == "__main__":
    main()
