"""How a copy job's outcome shows in the task's `results` (pure)."""

from __future__ import annotations

from typing import Any

from service.domain.records import Asset


def result_path(task_id: str, n: int) -> str:
    """Where our copy of result `n` is served."""
    return f"/v1/tasks/{task_id}/results/{n}"


def updated_entry(entry: dict[str, Any], asset: Asset) -> dict[str, Any]:
    """Result entry `asset.n` of its task, rewritten for the asset's current state."""
    stored = asset.status == "stored"
    return {
        **entry,
        "url": result_path(asset.task_id, asset.n) if stored else None,
        "upstream_url": asset.upstream_url,
        "content_type": asset.content_type if stored else None,
        "bytes": asset.bytes if stored else None,
        "sha256": asset.sha256 if stored else None,
        "width": asset.width if stored and asset.width else entry.get("width"),
        "height": asset.height if stored and asset.height else entry.get("height"),
        "stored_at": asset.stored_at if stored else None,
        "asset": {"status": asset.status, "error": asset.error, "attempts": asset.attempts},
    }
