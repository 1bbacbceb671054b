"""Operability: Prometheus metrics, request ids, JSON logs that keep secrets out, rate limits."""

from __future__ import annotations

import json
import logging

import httpx

from service.logs import REQUEST_ID, JsonFormatter, redact
from tests.unit.conftest import MakeRelay, Relay


async def test_metrics_are_served_to_loopback(relay: Relay) -> None:
    """/metrics answers Prometheus text with request, callback, queue and task figures."""
    await relay.created()
    response = await relay.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in (
        "grsai_relay_http_requests_total",
        "grsai_relay_http_request_seconds_bucket",
        "grsai_relay_upstream_seconds_bucket",
        "grsai_relay_db_commit_seconds_bucket",
        'grsai_relay_queue_due{queue="poller"}',
        'grsai_relay_queue_due{queue="copier"}',
        'grsai_relay_queue_oldest_seconds{queue="deliverer"}',
        'grsai_relay_tasks{status="pending"} 1.0',
        'grsai_relay_worker_alive{worker="poller"}',
        'grsai_relay_worker_alive{worker="copier"}',
        'grsai_relay_worker_alive{worker="deliverer"}',
    ):
        assert name in text, name
    assert 'route="/v1/tasks",status="202"' in text
    assert "mirror" not in text, "the copier has one name"


async def test_metrics_refuse_other_hosts_without_a_token(relay: Relay) -> None:
    """From a non-loopback address, /metrics is 403 unless METRICS_TOKEN is set."""
    transport = httpx.ASGITransport(app=relay.asgi, client=("203.0.113.9", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://relay.test") as remote:
        response = await remote.get("/metrics")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


async def test_metrics_token_is_required_when_set(make_relay: MakeRelay) -> None:
    """With METRICS_TOKEN, /metrics needs that bearer token, from anywhere."""
    relay = await make_relay(metrics_token="m-secret")
    assert (await relay.client.get("/metrics")).status_code == 401
    wrong = await relay.client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = await relay.client.get("/metrics", headers={"Authorization": "Bearer m-secret"})
    assert right.status_code == 200


async def test_callbacks_are_counted_by_outcome(relay: Relay) -> None:
    """Callback outcomes (applied, duplicate, unknown token) show in the metrics."""
    created = await relay.created()
    token = relay.grsai.token()
    body = {"id": created["upstream_id"], "status": "running", "progress": 10}
    for _ in range(2):
        await relay.client.post(f"/webhooks/grsai/{token}", json=body)
    await relay.client.post("/webhooks/grsai/" + "x" * 43, json=body)
    text = (await relay.client.get("/metrics")).text
    assert 'grsai_relay_callbacks_total{outcome="applied"} 1.0' in text
    assert 'grsai_relay_callbacks_total{outcome="duplicate"} 1.0' in text
    assert 'grsai_relay_callbacks_total{outcome="unknown_token"} 1.0' in text


async def test_request_id_is_echoed_or_generated(relay: Relay) -> None:
    """A well-formed X-Request-ID comes back as sent; a missing or hostile one is replaced."""
    sent = await relay.client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert sent.headers["x-request-id"] == "abc-123"
    made = await relay.client.get("/healthz")
    assert len(made.headers["x-request-id"]) == 32
    for bad in (b"a b", b"x" * 200, "\u00e9t\u00e9".encode("latin-1")):
        hostile = await relay.client.get("/healthz", headers={b"X-Request-ID": bad})
        assert hostile.status_code == 200
        assert len(hostile.headers["x-request-id"]) == 32  # replaced by a generated id


async def test_submissions_are_rate_limited_per_key(make_relay: MakeRelay) -> None:
    """Over SUBMIT_RATE_PER_MINUTE a key gets 429 with Retry-After; other keys are unaffected."""
    relay = await make_relay(submit_rate_per_minute=2)
    assert (await relay.submit()).status_code == 202
    assert (await relay.submit()).status_code == 202
    limited = await relay.submit()
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    other, _ = await relay.new_key("other")
    assert (await relay.submit(key=other)).status_code == 202
    relay.clock.advance(30)
    assert (await relay.submit()).status_code == 202


def test_json_log_lines_mask_every_kind_of_secret() -> None:
    """Keys, signing secrets, GrsAI keys and callback tokens are masked in JSON log lines."""
    secrets = [
        "grk_" + "A" * 43,
        "whsec_" + "B" * 32,
        "sk-" + "C" * 30,
        "/webhooks/grsai/" + "D" * 43,
    ]
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "saw %s", (" ".join(secrets),), None)
    record.path = secrets[3]
    token = REQUEST_ID.set("req-1")
    try:
        line = JsonFormatter().format(record)
    finally:
        REQUEST_ID.reset(token)
    parsed = json.loads(line)
    assert parsed["request_id"] == "req-1"
    for secret in secrets:
        assert secret not in line
    assert "AAAA" not in line
    assert redact("/webhooks/grsai/tok?x=1") == "/webhooks/grsai/***?x=1"
