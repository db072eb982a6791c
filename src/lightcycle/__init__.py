"""lightcycle: the fast.ai image-model workflow as Lightning modules and callbacks around timm."""

from typing import Any

from lightcycle.errors import LightcycleError

__version__ = "0.1.0"
__all__ = ["LightcycleError", "Prediction", "Predictor", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `import lightcycle` stays light (no torch) for the CLIs' error paths.
    if name in ("Predictor", "Prediction"):
        # deferred: torch and the model stack load on first use of Predictor
        from lightcycle import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'lightcycle' has no attribute {name!r}")
