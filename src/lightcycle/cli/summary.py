"""One table of a multirun's results: every job's overrides beside its metrics.json.

Written automatically at the end of `lightcycle-train -m ...` (a Hydra callback, conf/hydra/default.yaml)
as `summary.csv` and `summary.md` in the sweep dir, and on demand with `lightcycle-summary DIR`, e.g.
for a sweep that was killed before it ended.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lightcycle.atomic import atomic_write
from lightcycle.atomic import write_text as atomic_text
from lightcycle.errors import LightcycleError, for_console
from lightcycle.run.record import overrides_in

log = logging.getLogger("lightcycle")


def collect_runs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder holding a metrics.json: `job`, `overrides`, then the metrics.

    Jobs without metrics.json (still running, failed, killed) get `status` so the table shows them.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise LightcycleError(f"{sweep_dir}: not a folder")
    rows = []
    for overrides_file in sorted(sweep_dir.rglob(".hydra/overrides.yaml"), key=_job_order):
        job_dir = overrides_file.parent.parent
        row: dict[str, Any] = {"job": str(job_dir.relative_to(sweep_dir)) or ".", "overrides": ""}
        problems = []
        try:
            row["overrides"] = " ".join(overrides_in(overrides_file))  # data, never built
        except ValueError as exc:
            problems.append(f"unreadable .hydra/overrides.yaml ({exc})")
        metrics_file = job_dir / "metrics.json"
        if metrics_file.is_file():
            try:
                row.update({k: v for k, v in _read_metrics(metrics_file).items() if k not in ("job", "overrides", "status")})
            except ValueError as exc:
                problems.append(f"unreadable metrics.json ({exc})")
        else:
            problems.append("no metrics.json (failed or unfinished)")
        if problems:
            row["status"] = "; ".join(problems)
        rows.append(row)
    return rows


def _read_metrics(path: Path) -> dict[str, Any]:
    """A job's metrics.json: a JSON object; ValueError (one line) otherwise."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ValueError(exc.msg) from None
    if not isinstance(metrics, dict):
        raise ValueError(f"a JSON {type(metrics).__name__}, not an object of metrics")
    return metrics


def _job_order(path: Path) -> tuple:
    # job folders are numbers (0, 1, ..., 10): sort numerically, not as text
    return tuple(int(p) if p.isdigit() else p for p in path.parent.parent.parts)


def sweep_ranking(sweep_dir: Path) -> tuple[str | None, bool]:
    """The sweep's own `optimized_metric` and whether larger is better (`hydra.sweeper.direction`), read
    from the config Hydra saved (`multirun.yaml`, else a job's `.hydra/`); (None, False) when absent."""
    sweep_dir = Path(sweep_dir)
    saved = sweep_dir / "multirun.yaml"
    jobs = sorted(sweep_dir.rglob(".hydra/config.yaml"), key=_job_order)
    try:
        if saved.is_file():
            config = yaml.safe_load(saved.read_text()) or {}
            hydra = config.get("hydra") or {}
        elif jobs:
            config = yaml.safe_load(jobs[0].read_text()) or {}
            hydra_file = jobs[0].with_name("hydra.yaml")
            hydra = (yaml.safe_load(hydra_file.read_text()) or {}).get("hydra", {}) if hydra_file.is_file() else {}
        else:
            return None, False
    except (OSError, yaml.YAMLError) as exc:
        log.warning("%s: cannot read the sweep's config to rank its jobs (%s); job order kept", sweep_dir, exc)
        return None, False
    metric = config.get("optimized_metric") if isinstance(config, dict) else None
    direction = ((hydra.get("sweeper") or {}).get("direction") if isinstance(hydra, dict) else None) or "minimize"
    return (str(metric) if metric else None), str(direction).lower() == "maximize"


def write_summary(sweep_dir: Path, sort_by: str | None = None, descending: bool = False) -> list[dict[str, Any]]:
    """Write summary.csv and summary.md into `sweep_dir`; returns the rows (best first when sorted)."""
    rows = collect_runs(sweep_dir)
    if not rows:
        raise LightcycleError(f"{sweep_dir}: no Hydra job folders (.hydra/overrides.yaml) found")
    if sort_by:
        scored = [r for r in rows if isinstance(r.get(sort_by), (int, float))]
        rest = [r for r in rows if not isinstance(r.get(sort_by), (int, float))]
        rows = sorted(scored, key=lambda r: r[sort_by], reverse=descending) + rest
    columns = ["job", "overrides"]
    columns += sorted({k for r in rows for k in r} - {"job", "overrides", "status"})
    if any("status" in r for r in rows):
        columns.append("status")
    try:
        with atomic_write(Path(sweep_dir) / "summary.csv", "w", newline="", errors="surrogateescape") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        atomic_text(Path(sweep_dir) / "summary.md", markdown_table(rows, columns))
    except OSError as exc:
        raise LightcycleError(f"{sweep_dir}: cannot write the summary ({exc.strerror or exc})") from None
    return rows


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else for_console(value).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


class MultirunSummary(Callback):
    """Hydra callback: after `-m`, tabulate every job's metrics.json in the sweep dir."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        metric = config.get("optimized_metric")
        direction = config.hydra.sweeper.get("direction", "minimize")
        try:
            rows = write_summary(sweep_dir, sort_by=metric, descending=str(direction).lower() == "maximize")
        except LightcycleError as exc:
            log.warning("multirun summary: %s", exc)
            return
        columns = ["job", "overrides", *([metric] if metric else [])]
        print(f"\nmultirun summary ({sweep_dir / 'summary.csv'}):\n" + markdown_table(rows, columns), flush=True)


def main(argv: list[str] | None = None) -> None:
    """`lightcycle-summary DIR [--sort METRIC] [--max]`: (re)write and print a multirun's summary, ranked
    like the one the sweep wrote (its `optimized_metric` and direction) unless --sort says otherwise."""
    parser = argparse.ArgumentParser(prog="lightcycle-summary", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="the multirun folder, e.g. multirun/2026-11-23/10-00-00")
    parser.add_argument("--sort", metavar="METRIC",
                        help="sort by this metrics.json key (ascending) instead of the sweep's optimized_metric")
    parser.add_argument("--max", action="store_true", help="with --sort: sort descending (for accuracy-like metrics)")
    args = parser.parse_args(argv)
    sort_by, descending = (args.sort, args.max) if args.sort else sweep_ranking(args.sweep_dir)
    try:
        rows = write_summary(args.sweep_dir, sort_by=sort_by, descending=descending)
    except LightcycleError as exc:
        print(f"lightcycle-summary: error: {exc}", file=sys.stderr)
        sys.exit(1)
    columns = ["job", "overrides"] + sorted({k for r in rows for k in r} - {"job", "overrides"})
    print(markdown_table(rows, columns), end="")


if __name__ == "__main__":
    main()
