"""Build the simulator app, and serve it with uvicorn."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect

from service.clock import Clock, SystemClock
from service.simulator.admin import AdminEndpoints
from service.simulator.config import SimulatorConfig
from service.simulator.engine import Simulator
from service.simulator.errors import SimulatorError, handle_client_gone, handle_simulator_error
from service.simulator.routes import GrsaiEndpoints
from service.simulator.wire import QuietDrops


def create_simulator_app(
    config: SimulatorConfig | None = None,
    *,
    clock: Clock | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    seed: int | None = None,
) -> Starlette:
    """A Starlette app that behaves like GrsAI's API (see docs/grsai-api.md).

    `transport` carries the callback POSTs (tests pass an `httpx.MockTransport`); `seed` makes
    task ids and the global fault dice reproducible. The `Simulator` is at `app.state.simulator`;
    an app that mounts this one must run its lifespan, or call `simulator.aclose()` at shutdown.
    """
    sim = Simulator(
        config or SimulatorConfig(), clock or SystemClock(), transport=transport, seed=seed
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await sim.aclose()

    app = Starlette(
        routes=[*GrsaiEndpoints(sim).routes(), *AdminEndpoints(sim).routes()],
        exception_handlers={
            SimulatorError: handle_simulator_error,
            ClientDisconnect: handle_client_gone,
        },
        lifespan=lifespan,
    )
    app.state.simulator = sim
    return app


KEEP_ALIVE = 75  # seconds an idle client connection is kept open


def simulator_server(
    host: str,
    port: int,
    config: SimulatorConfig,
    *,
    log_level: str = "info",
    embedded: bool = False,
) -> uvicorn.Server:
    """A uvicorn server for the simulator (port 0 picks a free one).

    `embedded`: inside another process (demo mode), whose logging set-up is kept as it is and
    whose log already has a line per request: no logging config of its own, no access lines.
    """
    app = create_simulator_app(config)
    extra: dict[str, Any] = {"log_config": None, "access_log": False} if embedded else {}
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="on",
            log_level=log_level,
            # Idle connections stay open as long as GrsAI's front end keeps them (like nginx's
            # 75 s), not uvicorn's 5 s: that equals httpx's own keep-alive expiry, so a client
            # reusing a connection just as the server drops it saw a reset on a busy machine.
            timeout_keep_alive=KEEP_ALIVE,
            **extra,
        )
    )
    QuietDrops.install(logging.getLogger("uvicorn.error"))  # after Config set logging up
    return server


def run_simulator(host: str, port: int, config: SimulatorConfig) -> None:
    """Serve the simulator until interrupted (blocking)."""
    simulator_server(host, port, config).run()
