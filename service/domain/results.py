"""A task's `results` as clients see them: made when it succeeds, rewritten as each copy of a
result file settles (pure)."""

from __future__ import annotations

from typing import Any

from service.domain.observation import Observation
from service.domain.records import Asset


def result_path(task_id: str, n: int) -> str:
    """Where our copy of result `n` is served."""
    return f"/v1/tasks/{task_id}/results/{n}"


def result_entries(obs: Observation, copy_results: bool) -> list[dict[str, Any]]:
    """The stored `results` of a task that just succeeded.

    With copying, `url` stays null until our copy is stored (it is never shown as stored
    before it is); without, `url` is GrsAI's own (expiring) URL.
    """
    return [
        {
            "url": None if copy_results else r.url,
            "upstream_url": r.url,
            "content_type": None,
            "bytes": None,
            "sha256": None,
            "width": r.width,
            "height": r.height,
            "stored_at": None,
            "asset": {"status": "pending" if copy_results else "not_copied", "error": None},
        }
        for r in obs.results
    ]


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


def with_copy(results: list[dict[str, Any]], asset: Asset) -> list[dict[str, Any]] | None:
    """`results` with entry `asset.n` rewritten for the copy's state; None if there is none."""
    if not 0 <= asset.n < len(results):
        return None
    return [
        updated_entry(entry, asset) if n == asset.n else entry for n, entry in enumerate(results)
    ]
