"""Versioned SQLite schema. Append a new entry to change the schema; never edit an old one."""

from __future__ import annotations

# The columns of `tasks` as migration 1 made them (migration 5 copies them by name).
_TASK_COLUMNS = (
    "seq, id, api_key_id, model, endpoint, mode, status, progress, upstream_id, input, results,"
    " failure_reason, error, metadata, callback_url, created_at, updated_at, completed_at,"
    " submit_state, idempotency_key, request_hash, token_hash, last_event_at, next_poll_at,"
    " poll_attempts"
)

# The columns of `deliveries` as migration 3 made them (migration 6 copies them by name).
_DELIVERY_COLUMNS = (
    "id, task_id, api_key_id, event_type, url, status, attempts, next_attempt_at, event_at,"
    " delivered_at, dead_at, last_error"
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: keys, tasks, raw events
    (
        """CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            prefix TEXT NOT NULL,
            key_hash BLOB NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            revoked_at REAL
        )""",
        """CREATE TABLE tasks (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
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
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            completed_at REAL,
            submit_state TEXT NOT NULL
                CHECK (submit_state IN ('submitting', 'submitted', 'failed')),
            idempotency_key TEXT,
            request_hash TEXT,
            token_hash BLOB UNIQUE,
            last_event_at REAL,
            next_poll_at REAL,
            poll_attempts INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE UNIQUE INDEX tasks_idempotency ON tasks(api_key_id, idempotency_key)"
        " WHERE idempotency_key IS NOT NULL",
        "CREATE INDEX tasks_owner ON tasks(api_key_id, seq)",
        "CREATE INDEX tasks_owner_status ON tasks(api_key_id, status, seq)",
        "CREATE INDEX tasks_owner_model ON tasks(api_key_id, model, seq)",
        "CREATE INDEX tasks_due ON tasks(next_poll_at) WHERE next_poll_at IS NOT NULL",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id TEXT NOT NULL,
            source TEXT NOT NULL,
            received_at REAL NOT NULL,
            outcome TEXT,
            detail TEXT,
            body BLOB NOT NULL
        )""",
        "CREATE INDEX events_task ON events(task_id, id)",
    ),
    # 2: result files copied to our own storage (the queue and the record of each copy)
    (
        """CREATE TABLE assets (
            task_id TEXT NOT NULL,
            n INTEGER NOT NULL,
            upstream_url TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'stored', 'failed', 'pruned')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL,
            error TEXT,
            sha256 TEXT,
            content_type TEXT,
            bytes INTEGER,
            width INTEGER,
            height INTEGER,
            stored_at REAL,
            PRIMARY KEY (task_id, n)
        )""",
        "CREATE INDEX assets_due ON assets(next_attempt_at) WHERE next_attempt_at IS NOT NULL",
        "CREATE INDEX assets_sha ON assets(sha256) WHERE sha256 IS NOT NULL",
        "CREATE INDEX tasks_completed ON tasks(completed_at) WHERE completed_at IS NOT NULL",
    ),
    # 3: signed callbacks to clients: signing secrets, the delivery outbox, attempts, gone URLs
    (
        """CREATE TABLE signing_secrets (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            api_key_id TEXT NOT NULL REFERENCES api_keys(id),
            secret TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL
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
            next_attempt_at REAL,
            event_at REAL NOT NULL,
            delivered_at REAL,
            dead_at REAL,
            last_error TEXT,
            UNIQUE (task_id, event_type)
        )""",
        "CREATE INDEX deliveries_due ON deliveries(next_attempt_at)"
        " WHERE next_attempt_at IS NOT NULL",
        "CREATE INDEX deliveries_dead ON deliveries(api_key_id, status, dead_at)",
        "CREATE INDEX deliveries_url ON deliveries(url, status)",
        """CREATE TABLE delivery_attempts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            delivery_id TEXT NOT NULL,
            attempted_at REAL NOT NULL,
            status_code INTEGER,
            latency_ms REAL,
            error TEXT
        )""",
        "CREATE INDEX delivery_attempts_delivery ON delivery_attempts(delivery_id, id)",
        "CREATE TABLE gone_urls (url TEXT PRIMARY KEY, at REAL NOT NULL)",
    ),
    # 4: keys made by demo mode work only in demo mode. Demo mode always named its key "demo";
    # those made before this flag existed are flagged too, since their secret was printed in a
    # banner and would otherwise spend real credits once the relay gets a GrsAI key.
    (
        "ALTER TABLE api_keys ADD COLUMN demo INTEGER NOT NULL DEFAULT 0",
        "UPDATE api_keys SET demo = 1 WHERE name = 'demo'",
    ),
    # 5: stream mode (GrsAI's streamed submit answer) is a third task mode. SQLite cannot alter
    # a CHECK, so the table is rebuilt the documented way (sqlite.org/lang_altertable.html,
    # "other kinds of table schema changes"): new table, copy, drop, rename, every index made
    # again. No table refers to `tasks` by foreign key, so foreign_keys may stay on; the
    # AUTOINCREMENT high-water mark is carried over, so a purged task's seq is never reused.
    (
        """CREATE TABLE tasks_new (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            api_key_id TEXT NOT NULL REFERENCES api_keys(id),
            model TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            mode TEXT NOT NULL CHECK (mode IN ('callback', 'poll', 'stream')),
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
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            completed_at REAL,
            submit_state TEXT NOT NULL
                CHECK (submit_state IN ('submitting', 'submitted', 'failed')),
            idempotency_key TEXT,
            request_hash TEXT,
            token_hash BLOB UNIQUE,
            last_event_at REAL,
            next_poll_at REAL,
            poll_attempts INTEGER NOT NULL DEFAULT 0
        )""",
        f"INSERT INTO tasks_new ({_TASK_COLUMNS}) SELECT {_TASK_COLUMNS} FROM tasks",
        "UPDATE sqlite_sequence SET seq = (SELECT seq FROM sqlite_sequence WHERE name = 'tasks')"
        " WHERE name = 'tasks_new'"
        " AND seq < (SELECT seq FROM sqlite_sequence WHERE name = 'tasks')",
        "INSERT INTO sqlite_sequence (name, seq)"
        " SELECT 'tasks_new', seq FROM sqlite_sequence WHERE name = 'tasks'"
        " AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'tasks_new')",
        "DROP TABLE tasks",
        "ALTER TABLE tasks_new RENAME TO tasks",
        "CREATE UNIQUE INDEX tasks_idempotency ON tasks(api_key_id, idempotency_key)"
        " WHERE idempotency_key IS NOT NULL",
        "CREATE INDEX tasks_owner ON tasks(api_key_id, seq)",
        "CREATE INDEX tasks_owner_status ON tasks(api_key_id, status, seq)",
        "CREATE INDEX tasks_owner_model ON tasks(api_key_id, model, seq)",
        "CREATE INDEX tasks_due ON tasks(next_poll_at) WHERE next_poll_at IS NOT NULL",
        "CREATE INDEX tasks_completed ON tasks(completed_at) WHERE completed_at IS NOT NULL",
    ),
    # 6: GrsAI-shaped callbacks. A task says which body its client's callbacks carry, and the
    # outbox holds a progress event per progress value besides the final one: deliveries are
    # unique by id (a hash of task, event and value) and no longer by (task, event type), and
    # a progress event records its value. SQLite cannot drop a UNIQUE constraint, so the
    # deliveries table is rebuilt as in migration 5 (no table refers to it).
    (
        "ALTER TABLE tasks ADD COLUMN callback_format TEXT NOT NULL DEFAULT 'relay'"
        " CHECK (callback_format IN ('relay', 'grsai'))",
        """CREATE TABLE deliveries_new (
            id TEXT PRIMARY KEY,
            task_id TEXT NOT NULL,
            api_key_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            url TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL,
            event_at REAL NOT NULL,
            delivered_at REAL,
            dead_at REAL,
            last_error TEXT,
            progress INTEGER CHECK (progress BETWEEN 0 AND 100)
        )""",
        f"INSERT INTO deliveries_new ({_DELIVERY_COLUMNS}) SELECT {_DELIVERY_COLUMNS}"
        " FROM deliveries",
        "DROP TABLE deliveries",
        "ALTER TABLE deliveries_new RENAME TO deliveries",
        "CREATE INDEX deliveries_due ON deliveries(next_attempt_at)"
        " WHERE next_attempt_at IS NOT NULL",
        "CREATE INDEX deliveries_dead ON deliveries(api_key_id, status, dead_at)",
        "CREATE INDEX deliveries_url ON deliveries(url, status)",
        "CREATE INDEX deliveries_task ON deliveries(task_id, event_type)",
    ),
)

LATEST = len(MIGRATIONS)
