"""Task lifecycle: create tasks, step them to a final state, feed streams and callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import httpx

from service.clock import Clock
from service.simulator.catalog import Media, ModelSpec
from service.simulator.config import SimulatorConfig
from service.simulator.delivery import CallbackSender
from service.simulator.errors import TaskNotFound
from service.simulator.faults import (
    Faults,
    PollFaultDice,
    PollFaultKind,
    parse_directives,
    roll_faults,
)
from service.simulator.media import (
    big_mp4,
    colour_for,
    corrupted,
    image_size,
    mp4_bytes,
    png_bytes,
)
from service.simulator.render import task_object
from service.simulator.state import JSONObject, Mode, ResultFile, SimTask, Stats

logger = logging.getLogger(__name__)

FAILURE_TEXT = {
    "output_moderation": "The generated output was blocked by content moderation.",
    "input_moderation": "The prompt or input images were rejected by content moderation.",
    "error": "Generation failed because of an internal error. Please try again.",
}
VIOLATION_TEXT = "The request violates the content policy."


@dataclass(frozen=True)
class FileAnswer:
    """What one download of a result file gets: bytes (or a stream of `size` bytes)."""

    content: bytes
    media_type: str
    truncate: bool = False  # promise the full length, send half, drop the connection
    size: int | None = None
    stream: AsyncIterator[bytes] | None = None


@dataclass(frozen=True)
class SubmitRequest:
    """A validated submit call."""

    model: ModelSpec
    prompt: str
    mode: Mode
    webhook: str | None
    shut_progress: bool
    variants: int
    aspect: str | None
    base_url: str


class Simulator:
    """The simulated GrsAI backend: every task, its lifecycle, and the counters."""

    def __init__(
        self,
        config: SimulatorConfig,
        clock: Clock,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        seed: int | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.tasks: dict[str, SimTask] = {}
        self.stats = Stats()
        seed = seed if seed is not None else config.seed
        self._rng = random.Random(seed)
        self._poll_dice = PollFaultDice(config, seed)
        self._sender = CallbackSender(config, clock, self.stats, self._rng, transport)
        self._background: set[asyncio.Task[None]] = set()

    def faults_for(self, prompt: str) -> Faults:
        """The faults for a new submit: its prompt's directives plus the global dice."""
        return roll_faults(parse_directives(prompt), self.config, self._rng)

    def start(self, req: SubmitRequest, faults: Faults) -> SimTask:
        """Create a task and start its lifecycle (and callback sender) in the background."""
        task_id = (
            f"{self._rng.randint(1, 32)}-{uuid.UUID(int=self._rng.getrandbits(128), version=4)}"
        )
        task = SimTask(
            id=task_id,
            model=req.model,
            mode=req.mode,
            webhook=req.webhook,
            shut_progress=req.shut_progress,
            faults=faults,
            submitted_at=self.clock.now(),
            files=self._files(task_id, req),
        )
        if req.mode == "stream":
            task.stream = asyncio.Queue()
        if req.mode == "callback" and faults.drop != "all":
            task.outbox = asyncio.Queue()
            self._spawn(self._sender.run(task), f"callbacks {task_id}")
        self.tasks[task_id] = task
        self.stats.tasks += 1
        self._spawn(self._lifecycle(task), f"task {task_id}")
        return task

    def _files(self, task_id: str, req: SubmitRequest) -> tuple[ResultFile, ...]:
        ext = req.model.media.value
        width, height = image_size(req.aspect) if req.model.media is Media.PNG else (0, 0)
        base = req.base_url.rstrip("/")
        return tuple(
            ResultFile(
                url=f"{base}/files/{task_id}/{i}.{ext}",
                width=width,
                height=height,
                pid="s_" + hashlib.sha256(f"{task_id}/{i}".encode()).hexdigest()[:24],
            )
            for i in range(req.variants)
        )

    async def _lifecycle(self, task: SimTask) -> None:
        steps = self.config.progress_steps
        try:
            await self._pause(task, task.faults.delay)
            for i in range(1, steps + 1):
                await self._pause(task, self.config.step_interval)
                task.progress = round(100 * i / (steps + 1))
                self._publish(task, final=False)
            await self._pause(task, self.config.step_interval)
            self._finish(task)
            self._publish(task, final=True)
        finally:
            for queue in (task.stream, task.outbox):
                if queue is not None:
                    queue.put_nowait(None)

    async def _pause(self, task: SimTask, seconds: float) -> None:
        """Sleep, unless the admin endpoint asked the task to finish now."""
        if seconds <= 0 or task.hurry.is_set():
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task.hurry.wait(), seconds)

    def _finish(self, task: SimTask) -> None:
        faults = task.faults
        task.ended_at = self.clock.now()
        if faults.violation:
            task.status, task.failure_reason = "violation", "output_moderation"
            task.error = VIOLATION_TEXT
        elif faults.fail is not None:
            task.status, task.failure_reason = "failed", faults.fail
            task.error = FAILURE_TEXT[faults.fail]
        else:
            task.status, task.progress = "succeeded", 100

    def _publish(self, task: SimTask, *, final: bool) -> None:
        if task.shut_progress and not final:
            return
        body = task_object(task)
        if task.stream is not None:
            self._stream(task, body, final=final)
        if task.outbox is not None and not (final and task.faults.drop == "final"):
            task.outbox.put_nowait(body)

    @staticmethod
    def _stream(task: SimTask, body: JSONObject, *, final: bool) -> None:
        """Send a frame down the task's stream, or end the stream early as `drop` asks."""
        assert task.stream is not None
        drop = task.faults.drop
        if (drop == "final" and final) or (drop == "all" and task.streamed >= 1):
            task.stream.put_nowait(None)  # the stream ends here, without its final frame
            task.stream = None
            return
        task.stream.put_nowait(body)
        task.streamed += 1

    def poll_fault(self, task_id: str) -> PollFaultKind | None:
        """Count a poll request for `task_id` and decide whether its answer breaks (and how)."""
        self.stats.polls += 1
        task = self.tasks.get(task_id)
        kind = self._poll_dice.roll(task.faults if task else None, task.polls if task else 0)
        if task is not None:
            task.polls += 1
            if kind is not None:
                task.poll_faults.append(kind)
        if kind is not None:
            self.stats.poll_faults += 1
        return kind

    def poll(self, task_id: str) -> SimTask:
        """The task a poll may see, or `TaskNotFound` (unknown, or inside its poll-miss window)."""
        task = self.tasks.get(task_id)
        if task is None or self.clock.now() < task.submitted_at + task.faults.pollmiss:
            raise TaskNotFound
        return task

    def file(self, task_id: str, name: str) -> FileAnswer | None:
        """A result file as this fetch should get it (faults applied), or None if absent/expired."""
        task = self.tasks.get(task_id)
        index, _, ext = name.partition(".")
        if task is None or task.status != "succeeded" or task.ended_at is None:
            return None
        if not index.isdigit() or int(index) >= len(task.files) or ext != task.model.media.value:
            return None
        if self.clock.now() >= task.ended_at + self.config.url_ttl:
            return None
        n = int(index)
        fetch = task.downloads.get(n, 0)
        task.downloads[n] = fetch + 1
        media, f, label = task.model.media, task.files[n], f"{task_id}/{index}"
        if media is not Media.PNG and task.faults.videomb > 0:
            size, stream = big_mp4(label, int(task.faults.videomb * 1024 * 1024))
            return FileAnswer(b"", media.content_type, size=size, stream=stream)
        if media is Media.PNG:
            data = png_bytes(f.width, f.height, colour_for(label))
        else:
            data = mp4_bytes(label)
        if fetch < task.faults.corrupt:
            data = corrupted(data)
        return FileAnswer(data, media.content_type, truncate=fetch < task.faults.truncate)

    def hurry(self, task_id: str) -> SimTask:
        """Make a task skip its remaining waits and finish now."""
        task = self.tasks.get(task_id)
        if task is None:
            raise TaskNotFound
        task.hurry.set()
        return task

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        job = asyncio.get_running_loop().create_task(coro, name=f"grsai-simulator {name}")
        self._background.add(job)
        job.add_done_callback(self._forget)

    def _forget(self, job: asyncio.Task[None]) -> None:
        self._background.discard(job)
        if not job.cancelled() and (exc := job.exception()) is not None:
            logger.error("simulator background job %s failed", job.get_name(), exc_info=exc)

    @property
    def idle(self) -> bool:
        """Whether no task is running and no callback is pending."""
        return not self._background

    @property
    def busy(self) -> int:
        """How many task lifecycles and callback senders are still at work."""
        return len(self._background)

    async def wait_idle(self) -> None:
        """Wait until every task has finished and every callback has been sent."""
        while self._background:
            await asyncio.wait(set(self._background))

    async def aclose(self) -> None:
        """Cancel the background work and close the HTTP client (app shutdown)."""
        jobs = set(self._background)
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        await self._sender.aclose()
