"""lightcycle: the fast.ai image-model workflow as Lightning modules and callbacks around timm."""

from lightcycle.errors import LightcycleError

__version__ = "0.1.0"
__all__ = ["LightcycleError", "__version__"]
