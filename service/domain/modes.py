"""Which mode a new task gets: how GrsAI will tell us about it (records.TaskMode)."""

from __future__ import annotations

from service.domain.errors import ValidationFailed
from service.domain.records import TaskMode


def default_mode(setting: str, public_base_url: str | None) -> TaskMode:
    """The mode of a task that does not ask for one, from TASK_MODE.

    `auto` is callback mode when the relay has a public URL, else poll mode; so is `callback`
    without one (a webhook nobody can reach would leave every task to the silence poll).
    """
    if setting == "poll":
        return "poll"
    if setting == "stream":
        return "stream"
    return "callback" if public_base_url else "poll"


def task_mode(asked: TaskMode | None, setting: str, public_base_url: str | None) -> TaskMode:
    """The mode of a new task: the one it asked for (checked), else the default."""
    if asked is None:
        return default_mode(setting, public_base_url)
    if asked == "callback" and not public_base_url:
        raise ValidationFailed(
            "mode callback needs the relay's PUBLIC_BASE_URL (GrsAI must reach its webhook); "
            "use poll or stream",
            fields=[{"field": "mode", "message": "callback mode needs PUBLIC_BASE_URL"}],
        )
    return asked
