"""Configuration, read from the environment once, in the app factory or the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.domain.catalog import Catalog
from service.storage.base import StorageOptions
from service.upstream.netguard import parse_networks

_CATALOG_EXAMPLE = '{"my-model": "/v1/draw/nano-banana"}'
_CHOICES = {
    "http_protocol": ("auto", "httptools", "h11"),
    "log_level": ("debug", "info", "warning", "error", "critical"),
    "log_format": ("auto", "json", "text"),
    "sqlite_synchronous": ("OFF", "NORMAL", "FULL", "EXTRA"),
    "task_mode": ("auto", "callback", "poll", "stream"),
}


def _seconds(text: str) -> list[float]:
    """Comma-separated seconds (`5,30,120`) as numbers."""
    try:
        return [float(d) for d in text.split(",") if d.strip()]
    except ValueError as exc:
        raise ValueError("must be comma-separated seconds, e.g. 5,30,120") from exc


class Settings(BaseSettings):
    """Every setting grsai-relay reads; `.env.example` documents each with its default."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    grsai_api_key: str | None = None
    grsai_base_url: str = "https://grsaiapi.com"
    public_base_url: str | None = None
    public_url_check: bool = True
    # `serve --tunnel`: a public URL from ngrok (its SDK) or a cloudflared quick tunnel
    tunnel: Literal["none", "ngrok", "cloudflared"] = "none"
    tunnel_fallback: Literal["exit", "poll"] = "exit"
    tunnel_start_timeout: float = Field(default=30.0, gt=0)
    ngrok_authtoken: str | None = None
    ngrok_domain: str | None = None
    # how GrsAI reports tasks: auto = callback with PUBLIC_BASE_URL, else poll; stream mode
    # keeps one GrsAI connection per task open, at most STREAM_MAX (then poll mode)
    task_mode: str = "auto"
    stream_max: int = Field(default=16, ge=0)
    database_url: str = "sqlite:///./data/grsai-relay.db"

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    model_catalog: str | None = None
    verify_callbacks: bool = True
    webhook_max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    api_max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    metadata_max_bytes: int = Field(default=16 * 1024, gt=0)

    upstream_connect_timeout: float = Field(default=5.0, gt=0)
    upstream_timeout: float = Field(default=30.0, gt=0)
    upstream_verify_timeout: float = Field(default=10.0, gt=0)
    upstream_connect_retries: int = Field(default=2, ge=0, le=10)
    upstream_retry_delay: float = Field(default=0.25, ge=0)
    upstream_max_connections: int = Field(default=64, gt=0)
    asset_max_connections: int = Field(default=16, gt=0)
    asset_stall_timeout: float = Field(default=30.0, gt=0)
    delivery_max_connections: int = Field(default=32, gt=0)
    http_pool_timeout: float = Field(default=10.0, gt=0)

    poll_first_delay: float = Field(default=3.0, ge=0)
    poll_max_interval: float = Field(default=60.0, gt=0)
    poll_backoff: float = Field(default=1.5, ge=1)
    callback_silence: float = Field(default=60.0, gt=0)
    not_found_grace: float = Field(default=60.0, ge=0)
    submit_recovery_grace: float = Field(default=300.0, gt=0)
    task_max_age: float = Field(default=6 * 3600.0, gt=0)
    poller_tick: float = Field(default=1.0, gt=0)
    poller_batch: int = Field(default=50, gt=0)
    poller_concurrency: int = Field(default=8, gt=0)
    poller_lease: float = Field(default=60.0, gt=0)

    mirror_results: bool = True
    asset_dir: str = "./data/assets"
    asset_store: str = ""
    asset_presign_seconds: int = Field(default=0, ge=0, le=7 * 86400)
    # GrsAI-compatible paths: how long a signed link to a stored result file stays valid
    result_link_seconds: int = Field(default=604800, gt=0, le=10 * 365 * 86400)
    asset_max_bytes: int = Field(default=1024 * 1024 * 1024, gt=0)
    asset_concurrency: int = Field(default=4, gt=0)
    asset_timeout: float = Field(default=600.0, gt=0)
    asset_retry_delays: str = "5,30,120,600,1800"
    asset_tick: float = Field(default=1.0, gt=0)
    asset_retention_days: float = Field(default=30.0, gt=0)
    fetch_allow_networks: str = ""

    delivery_schedule: str = "0,5,300,1800,7200,18000,36000,36000"
    delivery_timeout: float = Field(default=15.0, gt=0)
    delivery_retry_after_max: float = Field(default=86400.0, ge=0)
    delivery_concurrency: int = Field(default=16, gt=0)
    delivery_per_host: int = Field(default=4, gt=0)
    delivery_tick: float = Field(default=1.0, gt=0)
    delivery_allow_networks: str = ""
    secret_rotation_grace_hours: float = Field(default=24.0, ge=0)

    sqlite_synchronous: str = "NORMAL"
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)
    write_batch_max: int = Field(default=256, gt=0)
    database_pool_size: int = Field(default=10, gt=0)
    shutdown_timeout: float = Field(default=10.0, gt=0)
    header_timeout: float = Field(default=10.0, gt=0)
    http_protocol: str = "auto"
    body_timeout: float = Field(default=30.0, gt=0)
    log_level: str = "info"
    log_format: str = "auto"
    metrics_token: str | None = None
    submit_rate_per_minute: float = Field(default=600.0, ge=0)
    submit_max_in_flight: int = Field(default=32, gt=0)
    submit_queue_wait: float = Field(default=10.0, gt=0)
    ready_check_upstream: bool = False
    # live status (GET /v1/tasks/{id}/events): open event streams per API key, and the seconds
    # between two heartbeat comments on an idle stream
    streams_per_key: int = Field(default=20, gt=0)
    stream_heartbeat: float = Field(default=15.0, gt=0)
    # the dashboard (/dashboard): seconds a sign-in lasts (the session cookie's lifetime)
    dashboard_session_seconds: int = Field(default=43200, ge=60, le=30 * 86400)

    @field_validator("grsai_base_url", "public_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("grsai_base_url", mode="after")
    @classmethod
    def _base_url_required(cls, value: str | None) -> str:
        if value is None:
            raise ValueError("GRSAI_BASE_URL must not be empty")
        return value

    @field_validator("grsai_api_key")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("log_level", "log_format", "sqlite_synchronous", "http_protocol", "task_mode")
    @classmethod
    def _choice(cls, value: str, info: ValidationInfo) -> str:
        """One of a few words, in any case (the error keeps the value as it was written)."""
        choices = _CHOICES[str(info.field_name)]
        for choice in choices:
            if value.strip().lower() == choice.lower():
                return choice
        raise ValueError(f"should be one of {', '.join(choices)}")

    @field_validator("model_catalog")
    @classmethod
    def _catalog_parses(cls, value: str | None) -> str | None:
        try:
            Catalog.from_override(value)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"must be a JSON object of model name -> path, e.g. {_CATALOG_EXAMPLE} ({exc})"
            ) from exc
        return value

    @field_validator("asset_store")
    @classmethod
    def _asset_store(cls, value: str) -> str:
        value = value.strip()
        if value and (not value.startswith("s3://") or value == "s3://" or value[5] == "/"):
            raise ValueError("must be empty (the folder ASSET_DIR) or s3://bucket/prefix")
        return value

    @field_validator("asset_retry_delays")
    @classmethod
    def _delays(cls, value: str) -> str:
        if any(d < 0 for d in _seconds(value)):
            raise ValueError("delays must be >= 0 seconds")
        return value

    @field_validator("delivery_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        steps = _seconds(value)
        if not steps or any(d < 0 for d in steps):
            raise ValueError("needs at least one delay, all >= 0 seconds")
        return value

    @field_validator("fetch_allow_networks", "delivery_allow_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    def retry_delays(self) -> list[float]:
        """ASSET_RETRY_DELAYS as numbers."""
        return _seconds(self.asset_retry_delays)

    @property
    def demo_mode(self) -> bool:
        """True when no GrsAI key is set: run against the built-in simulator."""
        return self.grsai_api_key is None

    def catalog(self) -> Catalog:
        """The model catalog with overrides applied."""
        return Catalog.from_override(self.model_catalog)

    def storage_options(
        self,
        on_commit: Callable[[float, int], None] | None = None,
        on_work: Callable[[str], None] | None = None,
        on_task_change: Callable[[str | None], None] | None = None,
    ) -> StorageOptions:
        """How to run the storage backend of `DATABASE_URL`."""
        return StorageOptions(
            synchronous=self.sqlite_synchronous,
            busy_timeout_ms=self.sqlite_busy_timeout_ms,
            batch_max=self.write_batch_max,
            on_commit=on_commit,
            pool_size=self.database_pool_size,
            on_work=on_work,
            on_task_change=on_task_change,
        )


def settings_problems(error: ValidationError) -> list[str]:
    """One line per bad setting: its environment variable, the value given, what is allowed."""
    lines = []
    for problem in error.errors(include_url=False):
        field = str(problem["loc"][0]) if problem["loc"] else ""
        message = problem["msg"].removeprefix("Value error, ").removeprefix("Input ")
        lines.append(f"bad setting {field.upper()}={problem.get('input')!r}: {message}")
    return lines
