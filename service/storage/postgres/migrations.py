"""Versioned PostgreSQL schema. Append a new entry to change the schema; never edit an old one.

The tables and columns are those of the SQLite schema (`service.storage.sqlite.migrations`) in
PostgreSQL's types: times are seconds since the epoch as DOUBLE PRECISION, hashes and raw
bodies BYTEA, the JSON columns compact JSON text (written and read the same way everywhere).
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the schema of SQLite version 4 (keys, tasks, events, copies, client callbacks), and the
    # rate-limit buckets that SQLite keeps in memory
    (
        """CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            prefix TEXT NOT NULL,
            key_hash BYTEA NOT NULL UNIQUE,
            created_at DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION,
            demo INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE tasks (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            api_key_id TEXT NOT NULL REFERENCES api_keys(id),
            model TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            mode TEXT NOT NULL CHECK (mode IN ('callback', 'poll')),
            status TEXT NOT NULL
                CHECK (status IN ('pending', 'running', 'succeeded', 'failed')),
            progress INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
            upstream_id TEXT,
            input TEXT NOT NULL,
            results TEXT NOT NULL DEFAULT '[]',
            failure_reason TEXT,
            error TEXT,
            metadata TEXT,
            callback_url TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            completed_at DOUBLE PRECISION,
            submit_state TEXT NOT NULL
                CHECK (submit_state IN ('submitting', 'submitted', 'failed')),
            idempotency_key TEXT,
            request_hash TEXT,
            token_hash BYTEA UNIQUE,
            last_event_at DOUBLE PRECISION,
            next_poll_at DOUBLE PRECISION,
            poll_attempts INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE UNIQUE INDEX tasks_idempotency ON tasks(api_key_id, idempotency_key)"
        " WHERE idempotency_key IS NOT NULL",
        "CREATE INDEX tasks_owner ON tasks(api_key_id, seq)",
        "CREATE INDEX tasks_owner_status ON tasks(api_key_id, status, seq)",
        "CREATE INDEX tasks_owner_model ON tasks(api_key_id, model, seq)",
        "CREATE INDEX tasks_due ON tasks(next_poll_at) WHERE next_poll_at IS NOT NULL",
        "CREATE INDEX tasks_completed ON tasks(completed_at) WHERE completed_at IS NOT NULL",
        """CREATE TABLE events (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            task_id TEXT NOT NULL,
            source TEXT NOT NULL,
            received_at DOUBLE PRECISION NOT NULL,
            outcome TEXT,
            detail TEXT,
            body BYTEA NOT NULL
        )""",
        "CREATE INDEX events_task ON events(task_id, id)",
        """CREATE TABLE assets (
            task_id TEXT NOT NULL,
            n INTEGER NOT NULL,
            upstream_url TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'stored', 'failed', 'pruned')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at DOUBLE PRECISION,
            error TEXT,
            sha256 TEXT,
            content_type TEXT,
            bytes BIGINT,
            width INTEGER,
            height INTEGER,
            stored_at DOUBLE PRECISION,
            PRIMARY KEY (task_id, n)
        )""",
        "CREATE INDEX assets_due ON assets(next_attempt_at) WHERE next_attempt_at IS NOT NULL",
        "CREATE INDEX assets_sha ON assets(sha256) WHERE sha256 IS NOT NULL",
        """CREATE TABLE signing_secrets (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            api_key_id TEXT NOT NULL REFERENCES api_keys(id),
            secret TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION
        )""",
        "CREATE INDEX signing_secrets_key ON signing_secrets(api_key_id)",
        """CREATE TABLE deliveries (
            id TEXT PRIMARY KEY,
            task_id TEXT NOT NULL,
            api_key_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            url TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at DOUBLE PRECISION,
            event_at DOUBLE PRECISION NOT NULL,
            delivered_at DOUBLE PRECISION,
            dead_at DOUBLE PRECISION,
            last_error TEXT,
            UNIQUE (task_id, event_type)
        )""",
        "CREATE INDEX deliveries_due ON deliveries(next_attempt_at)"
        " WHERE next_attempt_at IS NOT NULL",
        "CREATE INDEX deliveries_dead ON deliveries(api_key_id, status, dead_at)",
        "CREATE INDEX deliveries_url ON deliveries(url, status)",
        "CREATE INDEX deliveries_task ON deliveries(task_id)",
        """CREATE TABLE delivery_attempts (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            delivery_id TEXT NOT NULL,
            attempted_at DOUBLE PRECISION NOT NULL,
            status_code INTEGER,
            latency_ms DOUBLE PRECISION,
            error TEXT
        )""",
        "CREATE INDEX delivery_attempts_delivery ON delivery_attempts(delivery_id, id)",
        "CREATE TABLE gone_urls (url TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL)",
        # rate-limit token buckets shared by every replica (`domain.limits`)
        """CREATE TABLE rate_buckets (
            bucket TEXT PRIMARY KEY,
            tokens DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
    ),
    # 3: stream mode (GrsAI's streamed submit answer) is a third task mode. The constraint is
    # the one PostgreSQL named for migration 1's inline CHECK.
    (
        "ALTER TABLE tasks DROP CONSTRAINT tasks_mode_check",
        "ALTER TABLE tasks ADD CONSTRAINT tasks_mode_check"
        " CHECK (mode IN ('callback', 'poll', 'stream'))",
    ),
    # 4: GrsAI-shaped callbacks (SQLite's 6): a task's callback body, and a progress event per
    # progress value in the outbox, so deliveries are unique by id alone. The constraint is
    # the one PostgreSQL named for migration 1's inline UNIQUE.
    (
        "ALTER TABLE tasks ADD COLUMN callback_format TEXT NOT NULL DEFAULT 'relay'"
        " CHECK (callback_format IN ('relay', 'grsai'))",
        "ALTER TABLE deliveries DROP CONSTRAINT deliveries_task_id_event_type_key",
        "ALTER TABLE deliveries ADD COLUMN progress INTEGER CHECK (progress BETWEEN 0 AND 100)",
    ),
)

LATEST = len(MIGRATIONS)
