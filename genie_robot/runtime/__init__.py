"""The runtime: `WorldModel` (world_model.py) over model bundles (bundle.py) made by `genie-robot export`.

    from genie_robot.runtime import WorldModel
    wm = WorldModel.load("default")

The names below are imported on first use (module `__getattr__`), so importing the package, or any
of its modules, costs no more than that module: `import genie_robot.runtime` does not import torch.
"""

from __future__ import annotations

__all__ = ["BundleError", "WorldModel", "WorldState"]


def __getattr__(name: str):
    if name in ("WorldModel", "WorldState"):
        from genie_robot.runtime import world_model

        return getattr(world_model, name)
    if name == "BundleError":
        from genie_robot.runtime.bundle import BundleError

        return BundleError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
