"""The issue's targets, checked against one run's results (on a 2-core machine)."""

from __future__ import annotations

from benchlib.report import MB, Results, Target

P99_MS = 50.0
OVER_PEER = 2.0  # the relay against the naive peer on the same plan
FLAT_MB = 10.0  # our reading of "flat": RSS at the largest database within 10 MB of the smallest
PG_VS_SQLITE = 0.8  # PostgreSQL with one relay process against SQLite, callbacks and lookups


def evaluate(results: Results) -> list[Target]:
    """Every target this run measured, met or not; unmeasured ones say so."""
    found = [*_callbacks(results), *_lookups(results), *_memory(results), *_submit(results)]
    return found + _postgres(results)


def _postgres(results: Results) -> list[Target]:
    """Each PostgreSQL run of callbacks or lookups against its SQLite run: judged with one
    relay process, shown with more (only when the run had `--database`)."""
    found: list[Target] = []
    for run in results.runs:
        if run.versus is None or not run.versus.startswith(("callbacks", "lookups")):
            continue
        other = results.run(run.versus)
        ratio = results.versus_ratio(run)
        judged = run.key.startswith("pg_") and not run.key.startswith("pg_w")
        what = run.title + (f", {run.tasks:,} tasks" if run.tasks else "")
        if other is None or ratio is None:
            found.append(Target(f"{what} vs SQLite", "(not measured)", "not measured", None))
            continue
        found.append(
            Target(
                f"{what} vs SQLite",
                f">= {PG_VS_SQLITE:g} x SQLite req/s" if judged else "(shown only)",
                f"{ratio:.2f} x ({run.result.rps:,.0f} vs {other.result.rps:,.0f} req/s)",
                ratio >= PG_VS_SQLITE if judged else None,
            )
        )
    return found


def _share(results: Results, key: str, at_least: float, p99: bool, name: str) -> list[Target]:
    run = results.run(key)
    ratio = results.ratio(run) if run is not None else None
    if run is None or ratio is None:
        return [
            Target(name, f">= {at_least} x {key}", "not measured", None),
            *_over_peer(results, key, name),
        ]
    found = [
        Target(
            name,
            f">= {at_least:g} x {run.ceiling} req/s",
            f"{ratio:.2f} x ({run.result.rps:,.0f} req/s)",
            ratio >= at_least,
        )
    ]
    if p99:
        found.append(
            Target(
                f"{name} p99",
                f"<= {P99_MS:g} ms",
                f"{run.result.p99_ms:.1f} ms",
                run.result.p99_ms <= P99_MS,
            )
        )
    return [*found, *_over_peer(results, key, name)]


def _over_peer(results: Results, key: str, name: str) -> list[Target]:
    """The run against the naive peer on the same plan."""
    run = results.run(key)
    peer = results.run(run.peer) if run is not None and run.peer is not None else None
    ratio = results.peer_ratio(run) if run is not None else None
    target = f"{name} vs naive peer"
    goal = f">= {OVER_PEER:g} x naive peer req/s"
    if run is None or peer is None or ratio is None:
        return [Target(target, goal, "not measured", None)]
    measured = f"{ratio:.2f} x ({run.result.rps:,.0f} vs {peer.result.rps:,.0f} req/s)"
    return [Target(target, goal, measured, ratio >= OVER_PEER)]


def _callbacks(results: Results) -> list[Target]:
    return [
        *_share(results, "callbacks_normal", 0.6, True, "callbacks durable (NORMAL)"),
        *_share(results, "callbacks_full", 0.45, False, "callbacks durable (FULL)"),
    ]


def _sizes(results: Results) -> list[int]:
    return sorted(int(r.key.split("_")[1]) for r in results.runs if r.key.startswith("lookups_"))


def _lookups(results: Results) -> list[Target]:
    sizes = _sizes(results)
    if not sizes:
        return [Target("status lookups", ">= 0.5 x hello", "not measured", None)]
    found: list[Target] = []
    for size in sizes:
        found += _share(results, f"lookups_{size}", 0.5, True, f"status lookups, {size:,} tasks")
    small = results.run(f"lookups_{sizes[0]}")
    assert small is not None
    if len(sizes) == 1:
        found.append(
            Target("status lookups, large vs small database", "within 15%", "skipped", None)
        )
    for size in sizes[1:]:
        big = results.run(f"lookups_{size}")
        assert big is not None
        kept = big.result.rps / small.result.rps if small.result.rps else 0.0
        found.append(
            Target(
                f"status lookups, {size:,} vs {sizes[0]:,} tasks",
                "within 15% (>= 0.85 x)",
                f"{kept:.2f} x",
                kept >= 0.85,
            )
        )
    return found


def _memory(results: Results) -> list[Target]:
    mem = results.memory
    found: list[Target] = []
    if "soak: growth" in mem:
        grown = mem["soak: growth"] / MB
        found.append(Target("RSS growth over the soak", "< 50 MB", f"{grown:+.1f} MB", grown < 50))
    sizes = _sizes(results)
    if len(sizes) > 1:
        small = mem.get(f"lookups {sizes[0]:,} tasks: after the run", 0) / MB
        for size in sizes[1:]:
            big = mem.get(f"lookups {size:,} tasks: after the run", 0) / MB
            found.append(
                Target(
                    f"RSS flat from {sizes[0]:,} to {size:,} tasks",
                    f"within {FLAT_MB:g} MB",
                    f"{small:.1f} -> {big:.1f} MB",
                    abs(big - small) <= FLAT_MB,
                )
            )
    else:
        found.append(Target("RSS flat from small to large database", "flat", "skipped", None))
    return found


def _submit(results: Results) -> list[Target]:
    found: list[Target] = []
    for run in results.runs:
        if not run.key.startswith("submit_relay_c"):
            continue
        conns = run.key.removeprefix("submit_relay_c")
        direct = results.run(f"submit_direct_c{conns}")
        if direct is None:
            continue
        added = run.result.p50_ms - direct.result.p50_ms
        # The target is about the relay's own cost, so it is judged with one connection;
        # with more, queueing on a shared 2-core machine is measured too (shown, not judged).
        judged = conns == "1"
        found.append(
            Target(
                f"submission added p50, {conns} connection(s)",
                "<= 5 ms" if judged else "(shown only)",
                f"{added:+.1f} ms ({run.result.p50_ms:.1f} vs {direct.result.p50_ms:.1f})",
                added <= 5.0 if judged else None,
            )
        )
    return found
