"""The flat task object, in the shape the task's model family uses.

The same object is a stream line, a callback body and the `data` of a poll answer.
"""

from __future__ import annotations

from typing import Any

from service.simulator.catalog import Media, Shape
from service.simulator.state import JSONObject, ResultFile, SimTask

NANO_BANANA_CONTENT = "Here is the generated image."


def _item(shape: Shape, media: Media, f: ResultFile) -> JSONObject:
    if shape is Shape.RESULTS_CONTENT:
        return {"url": f.url, "content": NANO_BANANA_CONTENT}
    if shape is Shape.RESULTS_PID:
        return {"url": f.url, "pid": f.pid}
    if shape is Shape.RESULTS_URL or media is Media.MP4:
        return {"url": f.url}
    return {"url": f.url, "width": f.width, "height": f.height}


def task_object(task: SimTask) -> JSONObject:
    """Render the task as GrsAI would show it right now."""
    spec = task.model
    succeeded = task.status == "succeeded"
    items: list[JSONObject] | None = (
        [_item(spec.shape, spec.media, f) for f in task.files] if succeeded else None
    )
    obj: JSONObject = {"id": task.id, "task_id": task.id, "status": task.status}
    obj["progress"] = task.progress
    if spec.shape is Shape.TOP_LEVEL:
        # The first result is also at the top level: GrsAI's own stream example reads `url`,
        # `width`, `height` there, while its poll example reads `results[i].url`.
        first: ResultFile | None = task.files[0] if succeeded and task.files else None
        obj["url"] = first.url if first else ""
        if spec.media is Media.PNG:
            obj["width"] = first.width if first else 0
            obj["height"] = first.height if first else 0
    if spec.results_key or items is not None:
        obj["results"] = items
    obj[spec.failure_key] = task.failure_reason
    obj["error"] = task.error
    obj["start_time"] = int(task.submitted_at)
    obj["end_time"] = int(task.ended_at) if task.ended_at is not None else 0
    obj["callback_url"] = task.webhook or ""
    return obj


def envelope(data: Any) -> JSONObject:
    """GrsAI's success envelope."""
    return {"code": 0, "msg": "success", "data": data}
