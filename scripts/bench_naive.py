"""The naive receiver for `scripts/bench`: what a developer would write in an afternoon instead.

A Starlette app on stock `uvicorn[standard]` (access log off) over one file-backed SQLite
database with Python's `sqlite3`, called synchronously from the handlers, one connection opened
at start. SQLite's defaults except two lines any tutorial adds, which also give it the relay's
default durability so the comparison is fair: `journal_mode=WAL`, `synchronous=NORMAL` (with
SQLite's rollback journal and FULL, every commit waits on the disk and the peer is many times
slower). It takes the relay's routes:
`POST /webhooks/grsai/{token}` looks the task up by its token (unique index), inserts the raw
body, updates the task and commits, once per request; `GET /v1/tasks/{id}` checks the bearer
key against the one given and answers the row of one indexed select as JSON.

    python scripts/bench_naive.py --db tasks.db --api-key KEY --port 8200
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tasks (id TEXT PRIMARY KEY, token TEXT NOT NULL UNIQUE,"
    " upstream_id TEXT, model TEXT, status TEXT, progress INTEGER, input TEXT, results TEXT,"
    " error TEXT, created_at REAL, updated_at REAL)",
    "CREATE TABLE IF NOT EXISTS callbacks (id INTEGER PRIMARY KEY, task_id TEXT,"
    " body BLOB, received_at REAL)",
)
SHOWN = ("id", "upstream_id", "model", "status", "progress", "input", "results", "error",
         "created_at", "updated_at")  # fmt: skip


def create_app(db_path: str, api_key: str) -> Starlette:
    """The receiver over the database at `db_path`."""
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    for statement in SCHEMA:
        db.execute(statement)

    async def callback(request: Request) -> JSONResponse:
        raw = await request.body()
        token = request.path_params["token"]
        row = db.execute("SELECT id FROM tasks WHERE token = ?", (token,)).fetchone()
        if row is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        body = json.loads(raw)
        now = time.time()
        db.execute(
            "INSERT INTO callbacks (task_id, body, received_at) VALUES (?, ?, ?)",
            (row[0], raw, now),
        )
        db.execute(
            "UPDATE tasks SET status = ?, progress = ?, results = ?, error = ?, updated_at = ?"
            " WHERE id = ?",
            (body.get("status"), body.get("progress"), json.dumps(body.get("results") or []),
             body.get("error"), now, row[0]),
        )  # fmt: skip
        db.commit()
        return JSONResponse({"code": 0, "msg": "success"})

    async def get_task(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {api_key}":
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        sql = f"SELECT {', '.join(SHOWN)} FROM tasks WHERE id = ?"  # noqa: S608  # fixed names
        row = db.execute(sql, (request.path_params["task_id"],)).fetchone()
        if row is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        task = dict(zip(SHOWN, row, strict=True))
        task["input"], task["results"] = json.loads(task["input"]), json.loads(task["results"])
        return JSONResponse(task)

    return Starlette(
        routes=[
            Route("/webhooks/grsai/{token}", callback, methods=["POST"]),
            Route("/v1/tasks/{task_id}", get_task, methods=["GET"]),
        ]
    )


def main() -> None:
    """Serve the receiver on 127.0.0.1 until interrupted."""
    top = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    top.add_argument("--db", required=True)
    top.add_argument("--api-key", required=True)
    top.add_argument("--port", type=int, required=True)
    ns = top.parse_args()
    app = create_app(ns.db, ns.api_key)
    uvicorn.run(app, host="127.0.0.1", port=ns.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
