"""What every entry point shares: where the configs live and how user errors are shown."""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from lightcycle.errors import LightcycleError

log = logging.getLogger("lightcycle")
F = TypeVar("F", bound=Callable[..., Any])


def config_dir() -> str:
    """conf/ inside an installed wheel, or the repository's conf/ for an editable install."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "conf", package.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise RuntimeError(f"lightcycle's conf/ folder was not found next to {package}")


def build(node: DictConfig, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, but a LightcycleError raised inside the target surfaces as itself."""
    try:
        return instantiate(node, **kwargs, _convert_="all")
    except InstantiationException as exc:
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, LightcycleError):
                raise cause from None
            cause = cause.__cause__
        raise


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


def run_entry_point(hydra_main: Callable[[], Any], level: int = logging.INFO) -> None:
    """What every console script does before Hydra takes over: albumentations never phones home,
    and lightcycle's own messages show at `level`."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    logging.getLogger("lightcycle").setLevel(level)
    hydra_main()
