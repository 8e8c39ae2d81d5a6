"""The Model Garden simulator: a deterministic, lazily generated registry behind a
contract-faithful ``/model-garden/sync/all``, with injectable faults and an event pusher."""

from garden_pipeline.simulator.change_events import change_event
from garden_pipeline.simulator.dataset import ModelGardenState
from garden_pipeline.simulator.extract_stream import extract_chunks
from garden_pipeline.simulator.faults import FAULT_KINDS, INVALID_ROW_KINDS, Fault, FaultPlan, make_fault
from garden_pipeline.simulator.layout import Layout
from garden_pipeline.simulator.push import EventPusher, PeriodicPusher, push_events
from garden_pipeline.simulator.server import SYNC_PATH, SimulatorServer, create_app, run_simulator
from garden_pipeline.simulator.view import StateView

__all__ = [
    "FAULT_KINDS",
    "INVALID_ROW_KINDS",
    "SYNC_PATH",
    "EventPusher",
    "Fault",
    "FaultPlan",
    "Layout",
    "ModelGardenState",
    "PeriodicPusher",
    "SimulatorServer",
    "StateView",
    "change_event",
    "create_app",
    "extract_chunks",
    "make_fault",
    "push_events",
    "run_simulator",
]
