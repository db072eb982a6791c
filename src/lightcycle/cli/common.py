"""What every entry point shares: how user errors are shown and what runs before Hydra.

`build` and `config_dir` live in lightcycle.run (the library); they are re-exported here for the entry points.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
from typing import Any, Callable, TypeVar

from lightcycle.errors import LightcycleError
from lightcycle.quiet import quiet_known_noise
from lightcycle.run.config import build, config_dir

__all__ = ["build", "config_dir", "log", "require_extra", "run_entry_point", "user_errors_exit"]

log = logging.getLogger("lightcycle")
F = TypeVar("F", bound=Callable[..., Any])


def log_to_files(level: int, message: str) -> None:
    """Record `message` in the log files only (Hydra's `<run dir>/<job>.log`), not on the console.

    A user error is printed once on stderr; logging it through Hydra's console handler as well
    would show every line of it twice.
    """
    record = log.makeRecord(log.name, level, __file__, 0, "%s", (message,), None)
    for handler in logging.getLogger().handlers + log.handlers:
        if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
            handler.handle(record)


def user_errors_exit(program: str) -> Callable[[F], F]:
    """Print a LightcycleError as one line on stderr and exit 1 instead of a traceback."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except LightcycleError as exc:
                log_to_files(logging.ERROR, f"{program}: error: {exc}")
                print(f"{program}: error: {exc}", file=sys.stderr, flush=True)
                sys.exit(1)

        return wrapper  # type: ignore[return-value]

    return decorate


def require_extra(program: str, extra: str, *modules: str) -> None:
    """Refuse in one line, naming the pip extra, when a command's optional dependencies are not installed
    (the web pages need the `serve` extra; `pip install -e .` alone does not bring it)."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise LightcycleError(f"{program} needs {', '.join(missing)}, which are not installed: "
                              f"pip install 'lightcycle[{extra}]' (or, in a checkout, pip install -e \".[{extra}]\")")


def run_entry_point(hydra_main: Callable[[], Any], level: int = logging.INFO) -> None:
    """What every console script does before Hydra takes over: albumentations never phones home,
    lightcycle's own messages show at `level`, and the libraries' known noise is filtered (lightcycle/quiet.py)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    quiet_known_noise()
    logging.getLogger("lightcycle").setLevel(level)
    hydra_main()
