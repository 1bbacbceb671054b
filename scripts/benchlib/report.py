"""The benchmark's results: collected in one value, written as Markdown and as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib.load import LoadResult

MB = 1024 * 1024


@dataclass
class Run:
    """One measured load run, and what its throughput is compared with."""

    key: str
    title: str
    result: LoadResult
    tasks: int | None = None
    ceiling: str | None = None  # "hello", "post_noop", or the key of another run
    extra: dict[str, Any] = field(default_factory=dict)
    peer: str | None = None  # the key of the naive peer's run on the same plan
    versus: str | None = None  # on PostgreSQL: the key of the same plan's run on SQLite


@dataclass(frozen=True, slots=True)
class Target:
    """One of the issue's targets and whether this run met it (None: not measured)."""

    name: str
    goal: str
    measured: str
    met: bool | None


@dataclass
class Results:
    """Everything one benchmark run measured."""

    started: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    ceilings: dict[str, list[LoadResult]] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    memory: dict[str, int] = field(default_factory=dict)
    storage: dict[str, float] = field(default_factory=dict)
    seeding: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    finished: str = ""

    def run(self, key: str) -> Run | None:
        """The run with this key."""
        return next((r for r in self.runs if r.key == key), None)

    def ceiling_rps(self, key: str) -> float | None:
        """Req/s of a ceiling (mean of its measurements) or of another run."""
        found = self.ceilings.get(key)
        if found:
            return sum(r.rps for r in found) / len(found)
        other = self.run(key)
        return other.result.rps if other is not None else None

    def ratio(self, run: Run) -> float | None:
        """The run's req/s over its ceiling's."""
        if run.ceiling is None:
            return None
        ceiling = self.ceiling_rps(run.ceiling)
        return run.result.rps / ceiling if ceiling else None

    def peer_ratio(self, run: Run) -> float | None:
        """The run's req/s over its naive peer's on the same plan."""
        peer = self.run(run.peer) if run.peer is not None else None
        if peer is None or not peer.result.rps:
            return None
        return run.result.rps / peer.result.rps

    def versus_ratio(self, run: Run) -> float | None:
        """A PostgreSQL run's req/s over the same plan's on SQLite."""
        other = self.run(run.versus) if run.versus is not None else None
        if other is None or not other.result.rps:
            return None
        return run.result.rps / other.result.rps

    def summary(self) -> list[str]:
        """The headline table: what | req/s | p50 | p99 | x ceiling | x peer | x SQLite."""
        out = [
            "| what | req/s | p50 ms | p99 ms | x ceiling | x peer | x SQLite |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for key, found in self.ceilings.items():
            rps = self.ceiling_rps(key) or 0.0
            p50 = sum(r.p50_ms for r in found) / len(found)
            p99 = sum(r.p99_ms for r in found) / len(found)
            out.append(f"| `{key}` (stock, mean) | {rps:,.0f} | {p50:.1f} | {p99:.1f} | 1 | | |")
        headline = {run.peer for run in self.runs if run.peer} | {
            run.versus for run in self.runs if run.versus
        }
        for run in self.runs:
            if run.peer is None and run.versus is None and run.key not in headline:
                continue
            r, ratio = run.result, self.ratio(run)
            what = run.title + (f", {run.tasks:,} tasks" if run.tasks else "")
            if r.connections != self.settings.get("connections"):
                what += f", {r.connections} connection(s)"
            times = f"{ratio:.2f} x `{run.ceiling}`" if ratio is not None else ""
            shown = [_bold(self.peer_ratio(run)), _bold(self.versus_ratio(run))]
            out.append(
                f"| {what} | {r.rps:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {times} |"
                f" {shown[0]} | {shown[1]} |"
            )
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of everything."""
        return {
            "started": self.started,
            "finished": self.finished,
            "machine": self.machine,
            "settings": self.settings,
            "ceilings": {
                key: {
                    "rps": round(self.ceiling_rps(key) or 0.0, 1),
                    "measurements": [r.to_json() for r in found],
                }
                for key, found in self.ceilings.items()
            },
            "runs": [
                {
                    "key": r.key,
                    "title": r.title,
                    "tasks": r.tasks,
                    "ceiling": r.ceiling,
                    "ratio": _round(self.ratio(r), 3),
                    "peer": r.peer,
                    "peer_ratio": _round(self.peer_ratio(r), 3),
                    "versus": r.versus,
                    "versus_ratio": _round(self.versus_ratio(r), 3),
                    **r.result.to_json(),
                    "extra": r.extra,
                }
                for r in self.runs
            ],
            "memory_bytes": self.memory,
            "storage": self.storage,
            "seeding": self.seeding,
            "targets": [
                {"name": t.name, "goal": t.goal, "measured": t.measured, "met": t.met}
                for t in self.targets
            ],
            "notes": self.notes,
        }

    def to_markdown(self) -> str:
        """The human-readable report."""
        m, s = self.machine, self.settings
        out = [
            f"# grsai-relay benchmark, {self.started}",
            "",
            f"{m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, {m['generator']},"
            f" commit {m['commit']}. One uvicorn worker per server unless a run says more.",
            f"Runs of {s['duration']:g} s ({s['warmup']:g} s warm-up first), soak"
            f" {s['soak']:g} s, {s['connections']} connections unless said otherwise.",
            "",
            "Ceilings: stock Starlette on stock `uvicorn[standard]` (httptools, uvloop), access"
            " log off, no project code. Peer: the naive receiver (`scripts/bench_naive.py`, sync"
            " sqlite3, WAL, synchronous=NORMAL, a commit per callback) on the same plans.",
            "The relay runs with its defaults (LOG_LEVEL=info with request logs, callback"
            " verification on, results copied, the poller on the tasks being hit) except:",
            "",
            *[f"- `{k}`: {v}" for k, v in s.get("relay_settings", {}).items()],
            "",
            "## Summary",
            "",
            *self.summary(),
            "",
            "## Throughput and latency",
            "",
            "| run | tasks | conns | req/s | p50 ms | p99 ms | x ceiling | ceiling | x peer"
            " | x SQLite | 2xx / total |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        ]
        for key, found in self.ceilings.items():
            for n, r in enumerate(found):
                when = "start" if n == 0 else "end"
                out.append(_row(f"**{key}** (ceiling, {when})", None, r, (None, "", None, None)))
        for run in self.runs:
            ratios = self.ratio(run), run.ceiling or "", self.peer_ratio(run)
            out.append(_row(run.title, run.tasks, run.result, (*ratios, self.versus_ratio(run))))
        stored = [run for run in self.runs if "outcomes" in run.extra]
        if stored:
            out += ["", "Stored callbacks by outcome (counted in the database after the run):", ""]
            for run in stored:
                pairs = sorted(run.extra["outcomes"].items())
                counts = ", ".join(f"{k} {v:,}" for k, v in pairs)
                out.append(f"- {run.title}: {counts or 'none'}")
        out += ["", "## Targets", "", "| target | goal | measured | met |", "|---|---|---|---|"]
        for t in self.targets:
            met = "n/a" if t.met is None else ("yes" if t.met else "**no**")
            out.append(f"| {t.name} | {t.goal} | {t.measured} | {met} |")
        out += ["", "## Memory (RSS of the relay process)", "", "| when | MB |", "|---|---:|"]
        out += [f"| {k} | {v / MB:.1f} |" for k, v in self.memory.items()]
        out += ["", "## Storage", "", "| what | value |", "|---|---:|"]
        out += [f"| {k} | {v:,.0f} |" for k, v in self.storage.items()]
        out += ["", "## Seeding", ""]
        pg = any("postgres_seconds" in x for x in self.seeding)
        out += [
            "| tasks | seconds | file MB | naive peer seconds |"
            + (" PostgreSQL seconds | PostgreSQL MB |" if pg else ""),
            "|---:|---:|---:|---:|" + ("---:|---:|" if pg else ""),
        ]
        out += [
            f"| {x['tasks']:,} | {x['seconds']:.1f} | {x['bytes'] / MB:.1f} |"
            f" {x.get('naive_seconds', 0.0):.1f} |"
            + (
                f" {x.get('postgres_seconds', 0.0):.1f} | {x.get('postgres_bytes', 0) / MB:.1f} |"
                if pg
                else ""
            )
            for x in self.seeding
        ]
        out += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write `<stem>.md` and `<stem>.json` into `directory`; return both paths."""
        directory.mkdir(parents=True, exist_ok=True)
        md, js = directory / f"{stem}.md", directory / f"{stem}.json"
        md.write_text(self.to_markdown())
        js.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return md, js


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _bold(ratio: float | None) -> str:
    return f"**{ratio:.2f}**" if ratio is not None else ""


def _row(
    title: str,
    tasks: int | None,
    r: LoadResult,
    ratios: tuple[float | None, str, float | None, float | None],
) -> str:
    """A row of the detailed table; `ratios`: x ceiling, which ceiling, x peer, x SQLite."""
    ratio, vs, peer, sqlite = ratios
    shown = "" if tasks is None else f"{tasks:,}"
    times = "" if ratio is None else f"{ratio:.2f}"
    over_peer = "" if peer is None else f"{peer:.2f}"
    over_sqlite = "" if sqlite is None else f"{sqlite:.2f}"
    broken = f" (+{r.socket_errors:,} socket errors)" if r.socket_errors else ""
    return (
        f"| {title} | {shown} | {r.connections} | {r.rps:,.0f} | {r.p50_ms:.1f} |"
        f" {r.p99_ms:.1f} | {times} | {vs} | {over_peer} | {over_sqlite} |"
        f" {r.ok:,} / {r.requests:,}{broken} |"
    )
