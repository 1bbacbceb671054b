"""`scripts/bench --smoke` keeps working: every scenario runs and lands in both reports.

Only that the benchmark runs end to end is checked, never how fast anything was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import pgserver
from tests.e2e.harness import ROOT

# The benchmark picks its databases itself, whatever RELAY_TEST_BACKEND says: one run covers it.
pytestmark = pytest.mark.no_database


def bench_databases() -> set[str]:
    """The databases of benchmark runs on the test server (`grsai_bench_<pid>_...`)."""
    rows = pgserver.fetch(pgserver.admin_url(), "SELECT datname FROM pg_database")
    return {str(name) for (name,) in rows if str(name).startswith("grsai_bench_")}


SCENARIOS = (
    "callbacks_normal",
    "peer_callbacks",
    "callbacks_full",
    "lookups_10000",
    "peer_lookups_10000",
    "submit_direct_c1",
    "submit_relay_c1",
    "submit_direct_c16",
    "submit_relay_c16",
    "mixed",
    "soak",
)


@pytest.mark.timeout(900)  # a hang guard: the smoke run takes ~30 s on an idle machine
def test_bench_smoke_runs_every_scenario_and_writes_both_reports(tmp_path: Path) -> None:
    """The smoke run exits 0 with every scenario, the naive peer's runs and targets reported."""
    out = tmp_path / "results"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench.py"),
            "--smoke",
            "--generator",
            "python",
            "--duration",
            "0.5",
            "--soak",
            "1",
            "--connections",
            "8",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=840,  # a hang guard only; a loaded 2-core machine is many times slower
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    [md] = out.glob("*.md")
    [js] = out.glob("*.json")
    report = json.loads(js.read_text())
    assert set(report["ceilings"]) == {"hello", "post_noop"}
    assert all(len(found["measurements"]) == 2 for found in report["ceilings"].values())
    runs = {run["key"]: run for run in report["runs"]}
    assert set(SCENARIOS) <= set(runs)
    assert all(runs[key]["requests"] > 0 for key in SCENARIOS)
    assert runs["callbacks_normal"]["extra"]["outcomes"]
    for key in ("callbacks_normal", "callbacks_full", "lookups_10000"):
        assert runs[key]["peer_ratio"] is not None
    assert "soak: growth" in report["memory_bytes"]
    assert "database bytes per submitted task" in report["storage"]
    assert {t["name"] for t in report["targets"]} >= {
        "callbacks durable (NORMAL)",
        "callbacks durable (FULL)",
        "status lookups, 10,000 tasks",
        "callbacks durable (NORMAL) vs naive peer",
        "callbacks durable (FULL) vs naive peer",
        "status lookups, 10,000 tasks vs naive peer",
        "RSS growth over the soak",
        "submission added p50, 1 connection(s)",
    }
    text = md.read_text()
    titles = (
        "| what | req/s | p50 ms | p99 ms | x ceiling | x peer |",
        "callbacks, SQLITE_SYNCHRONOUS=FULL",
        "GET /v1/tasks/{id}",
        "naive peer: callbacks",
        "naive peer: GET /v1/tasks/{id}",
        "soak: mixed",
    )
    for title in titles:
        assert title in text


@pytest.mark.timeout(900)  # a hang guard, as above
def test_bench_smoke_on_postgresql_runs_beside_sqlite_and_drops_its_databases(
    tmp_path: Path,
) -> None:
    """With --database, callbacks and lookups also run on PostgreSQL (one and two relay
    processes), each compared with its SQLite run; the run's databases are dropped."""
    before = bench_databases()
    out = tmp_path / "results"
    argv = ["--smoke", "--generator", "python", "--duration", "0.5", "--connections", "8"]
    argv += ["--only", "callbacks,lookups", "--database", pgserver.admin_url(), "--out", str(out)]
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), *argv],
        cwd=ROOT,
        capture_output=True,
        timeout=840,  # a hang guard only
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    [js] = out.glob("*.json")
    report = json.loads(js.read_text())
    runs = {run["key"]: run for run in report["runs"]}
    versus = {
        "pg_callbacks_normal": "callbacks_normal",
        "pg_w2_callbacks_normal": "callbacks_normal",
        "pg_lookups_10000": "lookups_10000",
        "pg_w2_lookups_10000": "lookups_10000",
    }
    for key, sqlite in versus.items():
        assert runs[key]["requests"] > 0
        assert (runs[key]["versus"], runs[key]["versus_ratio"] is not None) == (sqlite, True)
    assert runs["pg_callbacks_normal"]["extra"]["outcomes"]
    assert report["seeding"][0]["postgres_bytes"] > 0
    assert {t["name"] for t in report["targets"]} >= {
        "callbacks, PostgreSQL, 10,000 tasks vs SQLite",
        "GET /v1/tasks/{id}, PostgreSQL, 2 workers, 10,000 tasks vs SQLite",
    }
    assert "| x SQLite |" in next(out.glob("*.md")).read_text()
    assert bench_databases() == before
