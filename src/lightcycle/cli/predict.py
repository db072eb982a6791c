"""lightcycle-predict: checkpoint + images -> a CSV or JSON of predictions (with TTA, snapshot ensembles)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from lightcycle.cli.common import config_dir, log, run_entry_point, user_errors_exit
from lightcycle.errors import LightcycleError
from lightcycle.outputs import check_output, check_writable

TTA_KEYS = ("n", "beta", "merge", "views", "seed")


def required(cfg: DictConfig, key: str, example: str) -> Any:
    if OmegaConf.is_missing(cfg, key) or cfg.get(key) in (None, ""):
        raise LightcycleError(f"{key}= is required ({example})")
    return cfg.get(key)


def tta_settings(node: Any) -> dict[str, Any]:
    """`tta.n=4` or DESIGN's shorthand `tta=true` (= 4 views) / `tta=false` / `tta=N`."""
    defaults = {"n": 0, "beta": 0.25, "merge": "beta", "views": "auto", "seed": 42}
    if node is None or isinstance(node, bool):
        return {**defaults, "n": 4 if node else 0}
    if isinstance(node, int):
        return {**defaults, "n": node}
    if isinstance(node, str) and node.lower() in ("true", "false"):
        return {**defaults, "n": 4 if node.lower() == "true" else 0}
    if isinstance(node, DictConfig):
        settings = {**defaults, **OmegaConf.to_container(node, resolve=True)}  # type: ignore[dict-item]
        unknown = sorted(set(settings) - set(TTA_KEYS))
        if unknown:
            raise LightcycleError(f"tta: unknown setting(s) {unknown}; known: {list(TTA_KEYS)}")
        return settings
    raise LightcycleError(f"tta must be true, false, a number of views or tta.n=N, got {node!r}")


def predict(cfg: DictConfig) -> Path:
    """Run one prediction job from a composed config; returns the output file."""
    from lightcycle.predict import Predictor, list_inputs, vet_inputs, write_predictions

    ckpt = Path(str(required(cfg, "ckpt", "the checkpoint, e.g. ckpt=outputs/demo/checkpoints/last.ckpt"))).expanduser()
    if not ckpt.is_file():  # before decoding every input image
        raise LightcycleError(f"checkpoint {ckpt} not found")
    inputs_arg = str(required(cfg, "inputs", "an image, a folder of images or a CSV of file names"))
    output = Path(str(cfg.output)).expanduser()
    if output.suffix.lower() not in (".csv", ".json"):
        raise LightcycleError(f"output={output}: the extension must be .csv or .json")
    check_output(output, reads=[("ckpt", ckpt), ("inputs", Path(inputs_arg).expanduser())])  # replaced, never what it reads
    tta = tta_settings(cfg.get("tta"))
    check_writable(output)  # before any image is decoded or predicted
    if cfg.get("masks"):
        check_writable(Path(str(cfg.masks)).expanduser() / "probe.png", "masks")
    inputs = vet_inputs(list_inputs(inputs_arg, cfg.get("folder"), cfg.get("column")), str(cfg.on_bad), inputs_arg,
                        output.with_name(f"{output.stem}_bad_items.csv"))
    predictor = Predictor.from_checkpoint(
        ckpt,
        ensemble=bool(cfg.ensemble),
        size=cfg.get("size"),
        resize=cfg.get("resize"),
        tta=int(tta["n"]),
        tta_beta=float(tta["beta"]),
        tta_merge=str(tta["merge"]),
        tta_views=str(tta["views"]),
        tta_seed=int(tta["seed"]),
        batch_size=int(cfg.batch_size),
        num_workers=int(cfg.num_workers),
        device=str(cfg.device),
    )
    rows = write_predictions(
        predictor.task, predictor.iter_predictions(inputs.paths), inputs.names, output, cfg.get("masks")
    )
    skipped = f", skipped {len(inputs.problems)} bad image(s)" if inputs.problems else ""
    extras = [f"tta.n={tta['n']}"] if tta["n"] else []
    extras += [f"ensemble of {len(predictor.models)}"] if cfg.ensemble else []
    log.info("wrote %d prediction(s) to %s%s%s", rows, output, skipped, f" ({', '.join(extras)})" if extras else "")
    return output


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="predict")
@user_errors_exit("lightcycle-predict")
def _main(cfg: DictConfig) -> None:
    predict(cfg)


def main() -> None:
    """Console entry point (`lightcycle-predict`)."""
    run_entry_point(_main)


if __name__ == "__main__":
    main()
