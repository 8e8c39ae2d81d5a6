"""garden_pipeline: keeps GatewayDB in step with Model Garden.

``dagster ... -m garden_pipeline`` finds ``defs`` here.
"""

from garden_pipeline.definitions import defs

__all__ = ["defs"]
