"""A GrsAI API simulator for tests, demos and users' integration tests.

`create_simulator_app()` builds a Starlette app with GrsAI's submit, poll, file and account
endpoints, fault injection by `[sim:...]` prompt directives (see `faults`) or global rates, and
`/_sim` admin endpoints that show what really happened.
"""

from service.simulator.app import create_simulator_app, run_simulator, simulator_server
from service.simulator.config import SimulatorConfig
from service.simulator.engine import Simulator

__all__ = [
    "Simulator",
    "SimulatorConfig",
    "create_simulator_app",
    "run_simulator",
    "simulator_server",
]
