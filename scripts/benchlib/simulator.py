"""The GrsAI simulator for the benchmark: `grsai-relay simulator` without the access log.

    python -m benchlib.simulator --port 8001 --api-key sk-...

Tasks progress once an hour, so the simulator sends no callbacks during a run (the benchmark
sends its own, measured ones), and it logs warnings only, so that logging every submit does
not take CPU from the relay on the same machine.
"""

from __future__ import annotations

import argparse

from service.simulator import SimulatorConfig, simulator_server


def main() -> None:
    """Serve the simulator on 127.0.0.1 until interrupted."""
    top = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    top.add_argument("--port", type=int, required=True)
    top.add_argument("--api-key", required=True)
    ns = top.parse_args()
    config = SimulatorConfig(api_key=ns.api_key, step_interval=3600.0)
    simulator_server("127.0.0.1", ns.port, config, log_level="warning").run()


if __name__ == "__main__":
    main()
