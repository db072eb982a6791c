"""Reporting bad items (unreadable files, bad rows): the `on_bad` policy, a bounded message, a full list.

A folder with 100,000 bad rows must not print 100,000 lines: the message names the first
`SHOWN` problems and how many more there are, and every problem goes to a CSV file (`bad_items.csv`,
columns path, problem) whose location the message gives, to filter, fix or script against.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Iterable

from lightcycle.atomic import atomic_write
from lightcycle.data.checks import BAD_POLICIES
from lightcycle.errors import LightcycleError, for_console, printable

log = logging.getLogger(__name__)

SHOWN = 20  # problems named in the message; the rest are counted
REPORT_NAME = "bad_items.csv"


def write_bad_items(path: Path, problems: list[tuple[Path, str]]) -> str | None:
    """Write every problem to `path` as CSV (path, problem), atomically; returns why it failed, or None."""
    try:
        with atomic_write(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "problem"])
            writer.writerows((printable(p), printable(why)) for p, why in problems)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def clear_bad_items(path: Path | None) -> None:
    """Remove a list left by an earlier run over the same data, now that nothing is wrong."""
    if path is not None:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def _listing(problems: list[tuple[Path, str]], where: str) -> str:
    lines = [f"  {for_console(path)}: {for_console(reason)}" for path, reason in problems[:SHOWN]]
    if len(problems) > SHOWN:
        lines.append(f"  ... and {len(problems) - SHOWN:,} more; the full list is in {where}")
    return "\n".join(lines)


def report_bad(
    problems: Iterable[tuple[Path, str]], on_bad: str, what: str, report_file: Path | None = None, *,
    noun: str = "item", setting: str = "data.on_bad", action: str = "train",
) -> None:
    """Apply the `on_bad` policy: raise naming the problems, or log how many items were skipped.

    Either way at most `SHOWN` problems are named, and all of them are written to `report_file`
    (when given) and the message says where; with no problems a stale `report_file` is removed.
    `noun`, `setting` and `action` word the message for the caller (prediction: "image", "on_bad", "predict").
    """
    problems = list(problems)
    if on_bad not in BAD_POLICIES:
        raise LightcycleError(f"{setting} must be one of {', '.join(BAD_POLICIES)}, got {on_bad!r}")
    if not problems:
        clear_bad_items(report_file)
        return
    where = "(not written)"
    if report_file is not None:
        failed = write_bad_items(report_file, problems)
        where = printable(report_file) if failed is None else f"(not written: {printable(report_file)}: {failed})"
    listing = _listing(problems, where)
    if on_bad == "error":
        raise LightcycleError(
            f"{len(problems)} bad {noun}(s) in {printable(what)}:\n{listing}\n"
            f"Fix or remove them, or pass {setting}=skip to {action} without them; all {len(problems)} are listed "
            f"in {where}."
        )
    log.warning("skipped %d bad %s(s) in %s (%s=skip; all listed in %s):\n%s",
                len(problems), noun, printable(what), setting, where, listing)
