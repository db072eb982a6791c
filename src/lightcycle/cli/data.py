"""lightcycle-data: the course's data chores, before training.

    lightcycle-data verify ROOT [--move-to DIR | --delete]
    lightcycle-data download URLS_FILE DEST [--workers 8 --timeout 10 --file-timeout 120 --retries 3 --max-size-mb 20]

Plain argparse rather than Hydra: these are file utilities with positional paths and flags, nothing to
compose, no experiment to record, and no run directory wanted (Hydra would create one per call).

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

from lightcycle.errors import LightcycleError

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
    return parser


def run_verify(args: argparse.Namespace) -> int:
    from lightcycle.data.checks import verify_images

    checked, bad, handled = verify_images(args.root, move_to=args.move_to, delete=args.delete, workers=args.workers)
    for path, reason in bad:
        print(f"{path}: {reason}")
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
        code = run_verify(args) if args.command == "verify" else run_download(args)
    except LightcycleError as exc:
        print(f"{PROGRAM}: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    sys.exit(code)


if __name__ == "__main__":
    main()
