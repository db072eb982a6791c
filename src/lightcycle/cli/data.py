"""lightcycle-data: the course's data chores, before training.

    lightcycle-data verify ROOT [--move-to DIR | --delete]
    lightcycle-data download URLS_FILE DEST [--workers 8 --timeout 10 --file-timeout 120 --retries 3 --max-size-mb 20]
    lightcycle-data show [data=demo_segmentation data.size=96 ...] [output=train_batch.png] [n=9]

Plain argparse rather than Hydra's entry point: verify and download are file utilities with positional
paths and flags, nothing to compose, no experiment to record, and no run directory wanted (Hydra would
create one per call). `show` draws the augmented training samples that `lightcycle-train` with the
same overrides would train on: its `key=value` arguments are composed with Hydra's compose API into
the train config (conf/train.yaml, so `data=...`, `data.*`, `model.backbone=...` and `experiment=...`
mean what they mean for lightcycle-train), and only its data group is built; `output=` (default
`train_batch.png`) and `n=` (default `show_batch.n`, 9) are show's own. No run directory is made.

`verify` decodes every image under ROOT and lists the unreadable ones; it exits 0 when none are left
in place (none found, or all moved/deleted) and 1 when bad files remain, so `lightcycle-data verify
ROOT && lightcycle-train ...` stops on bad data. `download` prints its summary (each failure and why)
and exits 0 when every URL gave an image (downloaded, already there or a duplicate), 1 when any
failed, so a script notices; no file takes longer than `--file-timeout`, whatever the server does.
User errors (a missing URL file, a bad option) print one line and exit 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from lightcycle.errors import LightcycleError, for_console

PROGRAM = "lightcycle-data"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description="Check and fetch image data before training.")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="find images that cannot be decoded; report, move or delete them")
    verify.add_argument("root", help="folder to check (recursively)")
    what = verify.add_mutually_exclusive_group()
    what.add_argument("--move-to", metavar="DIR", help="move bad files here, keeping their relative paths")
    what.add_argument("--delete", action="store_true", help="delete bad files")
    verify.add_argument("--workers", type=int, default=None, help="decoding threads (default: one per core)")

    download = commands.add_parser("download", help="download images listed in a text or CSV file of URLs")
    download.add_argument("urls_file", help="one URL per line, or a CSV with a url column (and optional label)")
    download.add_argument("dest", help="folder to download into (dest/<label>/ with a label column)")
    download.add_argument("--workers", type=int, default=8, help="parallel downloads (default 8)")
    download.add_argument("--timeout", type=float, default=10.0, help="seconds per connect/read (default 10)")
    download.add_argument("--file-timeout", type=float, default=120.0,
                          help="wall-clock seconds per file, retries included (default 120)")
    download.add_argument("--retries", type=int, default=3, help="retries of failures that may pass (default 3)")
    download.add_argument("--backoff", type=float, default=0.5, help="first retry pause in seconds, doubling (0.5)")
    download.add_argument("--max-size-mb", type=float, default=20.0, help="largest file kept, in MB (default 20)")

    show = commands.add_parser("show", help="draw augmented training samples (as lightcycle-train would train on)")
    show.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                      help="lightcycle-train overrides (data=..., data.size=...), plus output=PATH and n=N")
    return parser


def show_config(overrides: list[str]) -> tuple[Any, str, int | None]:
    """(composed train config, output path, n) from `lightcycle-data show` arguments."""
    from hydra import compose, initialize_config_dir

    from lightcycle.run import config_dir

    output, n, rest = "train_batch.png", None, []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise LightcycleError(f"show: expected KEY=VALUE arguments (e.g. data=demo_segmentation), got {item!r}")
        if key == "output":
            output = value
        elif key == "n":
            if not value.isdigit() or int(value) < 1:
                raise LightcycleError(f"show: n must be a whole number >= 1, got n={value}")
            n = int(value)
        else:
            rest.append(item)
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose("train", overrides=rest)
    except Exception as exc:  # unknown group option, key or malformed override: Hydra's own words, one line
        message = " ".join(str(exc).split()).split(" Config search path")[0]
        raise LightcycleError(f"show: {message}") from None
    return cfg, output, n


def run_show(args: argparse.Namespace) -> int:
    from lightcycle.atomic import save_figure
    from lightcycle.data.show import show_batch
    from lightcycle.run import build

    cfg, output, n = show_config(args.overrides)
    datamodule = build(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    count = n or int(cfg.get("show_batch", {}).get("n") or 9)
    path = save_figure(Path(output).expanduser(), show_batch(datamodule, count, int(cfg.get("seed", 0))))
    print(f"{path}: {min(count, len(datamodule.train_samples))} augmented training samples "
          f"({datamodule.task_name}, {datamodule.size} px, augment={datamodule.augment})")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from lightcycle.data.checks import verify_images

    checked, bad, handled = verify_images(args.root, move_to=args.move_to, delete=args.delete, workers=args.workers)
    for path, reason in bad:
        print(f"{for_console(path)}: {for_console(reason)}")
    if args.move_to or args.delete:
        action = f" ({len(handled)} moved to {args.move_to})" if args.move_to else f" ({len(handled)} deleted)"
    else:
        action = " (left in place: --move-to DIR or --delete to remove them)"
    print(f"{checked} images checked, {len(bad)} unreadable" + (action if bad else ""))
    return 1 if bad and not handled else 0


def run_download(args: argparse.Namespace) -> int:
    from lightcycle.data.download import download_images, summarize

    results = download_images(
        args.urls_file, args.dest, workers=args.workers, timeout=args.timeout, retries=args.retries,
        backoff=args.backoff, max_bytes=int(args.max_size_mb * 1024 * 1024), file_timeout=args.file_timeout,
    )
    for line in summarize(results):
        print(line)
    return 1 if any(r.status == "failed" for r in results) else 0


def main(argv: list[str] | None = None) -> None:
    """Console entry point (`lightcycle-data`)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = _parser().parse_args(argv)
    try:
        code = {"verify": run_verify, "download": run_download, "show": run_show}[args.command](args)
    except LightcycleError as exc:
        print(f"{PROGRAM}: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    sys.exit(code)


if __name__ == "__main__":
    main()
