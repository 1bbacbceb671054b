"""Contract fuzzing: schemathesis, driven by the relay's own /openapi.json, against the real relay.

Every documented operation gets generated requests (valid and invalid data, the documented
examples, and a real task's id and callback token, so that the 200/206/304/416 answers and real
callback parsing are reached too), once with a valid API key and once without. Every answer must
be documented: no 5xx, a documented status code, content type, headers and body schema. All
failures are collected and reported together, each once; the case counts are printed.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import RelayFactory, auth
from tests.e2e.harness import RelayProcess, SimulatorServer

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MAX_EXAMPLES = 50  # per operation and generation mode (a fixed count: no time budget, so a
# slow machine runs exactly the cases a fast one does)
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
# Deliveries to the relay's own /healthz (GET only) fail fast and die: the replay has work.
RELAY_ENV = {"DELIVERY_SCHEDULE": "0,0.05", "DELIVERY_TIMEOUT": "1"}
RANGE = r"bytes=[0-9]{0,5}-[0-9]{0,5}"
Operation = schemathesis.APIOperation[Any, Any, Any, Any]
Case = schemathesis.Case[Operation]


@dataclass
class Tally:
    """What one fuzzing run sent and found."""

    cases: int = 0
    per_operation: Counter[str] = field(default_factory=Counter)
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)

    def record(self, label: str, status: int, exc: Failure | FailureGroup | None) -> None:
        """Count one case; keep each distinct failure once (by operation, check and status)."""
        self.cases += 1
        self.per_operation[label] += 1
        self.answers[label, status] += 1
        found = list(exc.exceptions) if isinstance(exc, FailureGroup) else [exc] if exc else []
        for failure in found:
            key = f"{label} -> {status}: {failure.title}"
            self.failures.setdefault(key, str(failure))


def strategies(
    schema: schemathesis.BaseSchema,
    operation: Operation,
    headers: dict[str, str],
    known: dict[str, Any],
) -> Iterator[Any]:
    """Every case strategy for one operation: both modes, its examples, a real task's ids."""
    for mode in MODES:
        yield operation.as_strategy(generation_mode=mode, headers=headers or None)
    yield from schema.get_strategies_from_examples(operation)
    wanted = set(re.findall(r"{(\w+)}", operation.path))
    if known and wanted and wanted <= set(known):
        fixed = {name: known[name] for name in wanted}
        yield operation.as_strategy(path_parameters=fixed, headers=headers or None)
        if "n" in wanted:  # byte ranges in and around the real file: 206 and 416
            yield st.tuples(operation.as_strategy(path_parameters=fixed, headers=headers or None),
                            st.from_regex(RANGE, fullmatch=True)).map(with_range)  # fmt: skip
        if "token" in wanted:  # GrsAI's own callback body again: a duplicate, acknowledged
            yield operation.as_strategy(
                path_parameters=fixed, body=known["callback"], media_type="application/json"
            )


def with_range(drawn: tuple[Case, str]) -> Case:
    """The case, asking for the drawn byte range."""
    case, value = drawn
    case.headers["Range"] = value
    return case


def fuzz(relay: RelayProcess, headers: dict[str, str], known: dict[str, Any]) -> Tally:
    """Run every operation of the served document; return the tally."""
    schema = served_schema(relay)
    tally = Tally()
    session = requests.Session()
    for operation in operations(schema):
        for strategy in strategies(schema, operation, headers, known):
            run_cases(
                strategy, MAX_EXAMPLES, lambda case: send(case, relay, session, headers, tally)
            )
    session.close()
    return tally


def run_cases(strategy: Any, examples: int, test: Callable[[Case], None]) -> None:
    """Let hypothesis draw up to `examples` cases from `strategy` and hand each to `test`."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # failures are collected, not shrunk
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.data())
    def run(case: st.DataObject) -> None:
        test(case.draw(strategy))

    try:
        run()
    except Unsatisfiable:  # negative mode, for an operation with nothing that can be invalid
        return


def send(
    case: Case,
    relay: RelayProcess,
    session: requests.Session,
    headers: dict[str, str],
    tally: Tally,
) -> None:
    """Send one case with exactly our credentials (or none) and check its answer."""
    case.headers.pop("Authorization", None)  # a generated one would stand in for ours
    # a hang guard only: a request raising here would make hypothesis replay a case whose data
    # depends on the relay's state, which it reports as flaky generation
    response = case.call(base_url=relay.url, session=session, headers=headers, timeout=120)
    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
    except (Failure, FailureGroup) as exc:
        tally.record(case.operation.label, response.status_code, exc)
    else:
        tally.record(case.operation.label, response.status_code, None)


def known_task(relay: RelayProcess, simulator: SimulatorServer, key: str) -> dict[str, Any]:
    """Path parameters of a real task: succeeded, its result copied, its delivery dead, and
    its callback token (from the simulator, which holds the callback URL), so that generated
    requests reach the 200/206/304/416 answers, redelivery and real callback parsing."""
    with httpx.Client(base_url=relay.url, headers=auth(key), timeout=10) as client:
        body = {"model": "nano-banana", "prompt": "a fox", "callback_url": f"{relay.url}/healthz"}
        created = client.post("/v1/tasks", json=body)
        assert created.status_code == 202, created.text
        task_id = created.json()["id"]
        for _ in range(2400):  # a hang guard of 120 s
            task = client.get(f"/v1/tasks/{task_id}").json()
            deliveries = client.get(f"/v1/tasks/{task_id}/deliveries").json()["data"]
            stored = all(r["asset"]["status"] == "stored" for r in task["results"])
            dead = bool(deliveries) and deliveries[0]["status"] == "dead"
            if task["status"] == "succeeded" and stored and dead:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"task never settled: {task} {deliveries}")
        truth = client.get(f"{simulator.url}/_sim/tasks/{task['upstream_id']}").json()
    token = truth["webhook"].rsplit("/", 1)[1]
    return {"task_id": task_id, "n": 0, "token": token, "callback": truth["task"]}


def report(capsys: pytest.CaptureFixture[str], title: str, tally: Tally) -> None:
    """Print the case counts (shown even when the test passes)."""
    with capsys.disabled():
        print(f"\n[contract] {title}: {tally.cases} generated cases over "
              f"{len(tally.per_operation)} operations")  # fmt: skip
        for (label, status), count in sorted(tally.answers.items()):
            print(f"[contract]   {label} -> {status}: {count}")


def failures(tally: Tally) -> str:
    """Each distinct failure, cut to its first lines so that all of them fit."""
    cut = ["\n".join(text.splitlines()[:12]) for text in tally.failures.values()]
    return "\n\n".join(f"== {key}\n{text}" for key, text in zip(tally.failures, cut, strict=True))


@pytest.mark.timeout(1200)  # a hang guard: ~90 s idle, several times that on a loaded box
@pytest.mark.parametrize("with_key", [True, False], ids=["with-key", "without-key"])
def test_every_answer_matches_the_document(
    start_relay: RelayFactory,
    simulator: SimulatorServer,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
    with_key: bool,
) -> None:
    """Generated requests to every operation get only documented answers, and never a 5xx;
    without a key every /v1 operation refuses, even for a real task."""
    relay = start_relay(**RELAY_ENV)
    key = relay.create_key("contract")
    known = known_task(relay, simulator, key)
    tally = fuzz(relay, auth(key) if with_key else {}, known)
    report(capsys, "with a valid API key" if with_key else "without an API key", tally)
    record_property("generated_cases", tally.cases)
    assert set(tally.per_operation) == {op.label for op in operations(served_schema(relay))}
    if not with_key:
        leaked = {k: n for k, n in tally.answers.items() if " /v1/" in k[0] and k[1] < 400}
        assert leaked == {}
    assert tally.failures == {}, failures(tally)


def served_schema(relay: RelayProcess) -> schemathesis.BaseSchema:
    """The document the relay serves, loaded by schemathesis (its own endpoint included)."""
    schema = schemathesis.openapi.from_url(f"{relay.url}/openapi.json", timeout=10)
    return schema.include(path_regex="^/")  # schemathesis leaves /openapi.json out unless asked


def operations(schema: schemathesis.BaseSchema) -> list[Operation]:
    """Every operation of `schema` (each must load)."""
    loaded = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in loaded), loaded
    return [result.ok() for result in loaded if isinstance(result, Ok)]
