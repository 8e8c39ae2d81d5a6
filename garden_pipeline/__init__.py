"""garden_pipeline: keeps GatewayDB in step with Model Garden.

``dagster ... -m garden_pipeline`` finds the code location's Definitions here
as ``location_defs`` (not ``defs``: that name is the ``defs/`` sub-package).
It is built on first access, so the CLI and the simulator can import the
package, and report a bad setting with a clear message, without building it.
"""

__all__ = ["location_defs"]


def __getattr__(name: str):
    if name == "location_defs":
        from garden_pipeline.definitions import defs

        return defs
    raise AttributeError(f"module 'garden_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + ["location_defs"])
