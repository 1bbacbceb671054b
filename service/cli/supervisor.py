"""`serve --workers N`: N processes serve one listening socket (PostgreSQL only).

The parent has bound the socket and checked the database (see `main._serve`). It starts N
children with multiprocessing's spawn context: fresh interpreters, so no event loop, thread or
connection pool of the parent leaks into them. Each child builds the app with the factory from
the parent's settings and serves the inherited socket with `service.server.serve`, so each runs
every background worker too (on PostgreSQL their claims are safe across processes); the kernel
spreads new connections over the children accepting on the socket.

The parent serves nothing. On SIGTERM or SIGINT it sends each child SIGTERM (a graceful stop:
in-flight requests drain within SHUTDOWN_TIMEOUT) and waits; a second SIGINT forwards SIGINT,
which makes uvicorn stop at once, as a second Ctrl-C does to one process. A child that dies
while the service runs is logged and replaced: at once if it had been serving, after a backoff
(0.5 s doubling up to 30 s) if it never came up. If no child has come up yet and one fails to
start (exit 3: the app's start-up failed), the service stops with exit 3 instead, as one
process would: restarting an app that cannot start would only fail again. A child whose parent
dies gets SIGTERM (Linux), so none outlives the service.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event
from types import FrameType

from service.logs import configure as configure_logging
from service.logwriter import Writers
from service.server import STARTUP_FAILURE
from service.settings import Settings

log = logging.getLogger("grsai_relay")

EXIT_GRACE = 10.0  # seconds beyond SHUTDOWN_TIMEOUT for a child to close its storage and exit
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0  # restart delays for a child that never came up
_SPAWN = multiprocessing.get_context("spawn")
_PR_SET_PDEATHSIG = 1


def supervise(
    settings: Settings,
    demo: bool,
    sock: socket.socket,
    workers: int,
    on_ready: Callable[[], None] = lambda: None,
) -> int:
    """Serve `sock` from `workers` child processes until SIGTERM/SIGINT; return the exit code.
    `on_ready` is called once, when the first child serves."""
    try:
        return Supervisor(settings, demo, sock, workers, on_ready).run()
    finally:
        sock.close()


def _serve_child(
    settings: Settings, demo: bool, sock: socket.socket, serving: Event, parent: int
) -> None:
    """A child: build the app from the settings and serve the inherited socket."""
    _follow_parent(parent)
    configure_logging(settings.log_level, settings.log_format)
    try:
        from service.app import create_app
        from service.server import serve

        serve(create_app(settings, demo_mode=demo), settings, sock, on_started=serving.set)
    finally:
        Writers.stop()  # a multiprocessing child ends with os._exit: no atexit drains the log


def _follow_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the parent dies (Linux); leave if it already has."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        raise SystemExit(0)


@dataclass
class Child:
    """One serving process and the flag it raises once it serves."""

    slot: int
    process: SpawnProcess
    serving: Event


def describe_exit(code: int | None) -> str:
    """How a process ended, as an operator reads it."""
    if code is None:
        return "is still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    """Starts, watches, replaces and finally stops the serving processes."""

    def __init__(
        self,
        settings: Settings,
        demo: bool,
        sock: socket.socket,
        workers: int,
        on_ready: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings, self.demo, self.sock, self.workers = settings, demo, sock, workers
        self.on_ready = on_ready
        self.children: dict[int, Child] = {}
        self.signals: list[int] = []
        self.came_up = False  # some child has served: a later start failure is not fatal
        self.failed_starts = 0  # children in a row that never came up
        self._wake_r, self._wake_w = -1, -1  # a pipe the signal handler writes to, in `run`

    def run(self) -> int:
        """Start the children, keep them running until a signal, stop them; the exit code."""
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        handlers = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            fatal: int | None = None
            try:
                for slot in range(self.workers):
                    self._start(slot)
                fatal = self._watch()
            finally:  # whatever happened here, no child is left behind
                code = self._stop(fatal)
            return code
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"!")

    def _start(self, slot: int) -> None:
        serving = _SPAWN.Event()
        process = _SPAWN.Process(
            target=_serve_child,
            args=(self.settings, self.demo, self.sock, serving, os.getpid()),
            name=f"grsai-relay-worker-{slot}",
        )
        process.start()
        self.children[slot] = Child(slot, process, serving)
        log.info("worker %d started (pid %s)", slot, process.pid)

    def _wait(self, timeout: float | None) -> None:
        """Until a child ends, a signal comes or `timeout` passes."""
        sentinels = [child.process.sentinel for child in self.children.values()]
        if self._wake_r in wait([self._wake_r, *sentinels], timeout):
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)

    def _watch(self) -> int | None:
        """Replace children that die until a signal comes; STARTUP_FAILURE if the app cannot
        start at all."""
        due: dict[int, float] = {}  # slot -> when to start its replacement
        while not self.signals:
            now = time.monotonic()
            timeout = max(0.0, min(due.values()) - now) if due else None
            if not self.came_up:  # a child raising `serving` does not wake the wait
                timeout = min(timeout, 0.1) if timeout is not None else 0.1
            self._wait(timeout)
            if not self.came_up and any(c.serving.is_set() for c in self.children.values()):
                self.came_up = True
                self.on_ready()
            for child in [c for c in self.children.values() if not c.process.is_alive()]:
                if self.signals:
                    break  # `_stop` collects it
                del self.children[child.slot]
                delay = self._replacement_delay(child)
                if delay is None:
                    return STARTUP_FAILURE
                due[child.slot] = time.monotonic() + delay
            now = time.monotonic()
            for slot in [slot for slot, when in due.items() if when <= now and not self.signals]:
                del due[slot]
                self._start(slot)
        return None

    def _replacement_delay(self, child: Child) -> float | None:
        """Seconds before replacing a dead child, or None when the service must stop."""
        code, pid = child.process.exitcode, child.process.pid
        if child.serving.is_set():
            self.failed_starts = 0
            log.warning(
                "worker %d (pid %s) %s; starting a new one", child.slot, pid, describe_exit(code)
            )
            return 0.0
        if not self.came_up and code == STARTUP_FAILURE:
            log.error("worker %d (pid %s) could not start the app; stopping", child.slot, pid)
            return None
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * float(2**self.failed_starts))
        self.failed_starts += 1
        log.warning(
            "worker %d (pid %s) %s before it served; starting a new one in %g s",
            child.slot, pid, describe_exit(code), delay,
        )  # fmt: skip
        return delay

    def _stop(self, fatal: int | None) -> int:
        """SIGTERM every child and wait for them (SIGKILL past the deadline); the exit code."""
        self._signal_all(signal.SIGTERM)
        handled = len(self.signals)
        deadline = time.monotonic() + self.settings.shutdown_timeout + EXIT_GRACE
        ended: list[Child] = []
        while True:
            if signal.SIGINT in self.signals[handled:]:  # a second Ctrl-C: stop at once
                self._signal_all(signal.SIGINT)
            handled = len(self.signals)
            for child in [c for c in self.children.values() if not c.process.is_alive()]:
                ended.append(self.children.pop(child.slot))
            remaining = deadline - time.monotonic()
            if not self.children or remaining <= 0:
                break
            self._wait(remaining)
        for child in self.children.values():
            pid = child.process.pid
            log.error("worker %d (pid %s) did not stop in time; killing it", child.slot, pid)
            child.process.kill()
            ended.append(child)
        for child in ended:
            child.process.join()
        log.info("%d worker(s) stopped", len(ended))
        if fatal is not None:
            return fatal
        return 0 if all(child.process.exitcode == 0 for child in ended) else 1

    def _signal_all(self, sig: int) -> None:
        for child in self.children.values():
            if child.process.is_alive() and child.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, sig)
