"""Following one task live through its event stream, resuming with `Last-Event-ID` when the
stream drops, until the task is settled (final, no result file still being copied)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from service.cli.client import RelayClient, RelayUnreachable, StreamEnd, decode_task
from service.cli.progress import Progress, settled
from service.cli.sse import SseParser

# Pauses before each reconnect of a stream that dropped; the last failure gives up. About ten
# seconds in all: a relay restarting is back by then, a dead one is reported.
RECONNECT_DELAYS = (0.25, 0.5, 1.0, 2.0, 3.0, 4.0)
Sleep = Callable[[float], Awaitable[None]]


async def follow(
    client: RelayClient,
    task_id: str,
    progress: Progress,
    *,
    sleep: Sleep = asyncio.sleep,
    delays: Sequence[float] = RECONNECT_DELAYS,
) -> dict[str, Any]:
    """Show each state of the task until it is settled; return its last state.

    A stream that drops (or that the relay ends early, e.g. on its shutdown) is reconnected with
    the last event's id, so no state is shown twice; any answer resets the retry budget. When
    the retries run out, `RelayUnreachable` says what happened.
    """
    parser = SseParser()
    task: dict[str, Any] | None = None
    failures = 0
    while True:
        problem: RelayUnreachable | None = None
        try:
            async for item in client.events(task_id, parser.last_id, parser):
                if isinstance(item, StreamEnd):
                    if item.settled:  # 204: settled, and we hold its last state
                        return task if task is not None else await client.task(task_id)
                    break
                failures = 0
                task = decode_task(item)
                progress.show(task)
                if settled(task):
                    return task
        except RelayUnreachable as exc:
            problem = exc
        if failures >= len(delays):
            progress.end()
            raise RelayUnreachable(
                f"{problem.message if problem else 'the relay keeps ending the stream'}"
                f" (gave up following {task_id} after {failures + 1} attempts)"
            )
        if problem is not None and failures == 0:  # once per outage, not once per attempt
            progress.say(f"lost the stream ({problem.message}); reconnecting")
        await sleep(delays[failures])
        failures += 1
