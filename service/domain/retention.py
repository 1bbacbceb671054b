"""What may be forgotten, and when: pruning result copies and purging old tasks (pure rules that
a backend turns into statements)."""

from __future__ import annotations

import dataclasses

from service.domain.records import TERMINAL, Asset

PURGEABLE_STATUSES = TERMINAL  # only a final task may be purged
# A task is purged only once nothing still works on it: no copy waiting to be made and no
# callback still being retried (deleting those would lose a client's final event).
BUSY_COPY = "pending"
BUSY_DELIVERY = "pending"
PRUNED = "removed after the retention period"


def pruned(asset: Asset) -> Asset:
    """A stored copy retired after the retention period (its file may then be deleted)."""
    return dataclasses.replace(asset, status="pruned", error=PRUNED)
