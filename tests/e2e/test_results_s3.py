"""End to end on the S3 file store: a relay (`python -m service serve`) whose store is a bucket
on a moto S3 server process, which goes down and comes back.

(The rest of the results suite runs on S3 too: `RELAY_TEST_ASSET_STORE=s3`, see scripts/test.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RelayFactory, auth, wait_for_task
from tests.s3server import S3Server


@pytest.fixture(name="s3")
def _s3() -> Iterator[S3Server]:
    """An S3 server of this test alone (it is stopped and started again)."""
    server = S3Server().start()
    yield server
    server.stop()


def waiting_for_store(task: dict[str, Any]) -> bool:
    """Final, with its copy still pending because the store cannot be reached."""
    results = task["results"]
    return (
        task["status"] == "succeeded"
        and bool(results)
        and results[0]["asset"]["status"] == "pending"
        and "AWS_ENDPOINT_URL" in (results[0]["asset"]["error"] or "")
    )


@pytest.mark.timeout(180)
async def test_copies_stay_queued_while_the_store_is_down_then_finish(
    start_relay: RelayFactory, client: httpx.AsyncClient, s3: S3Server
) -> None:
    """With the S3 server down a stored file answers 503 naming AWS_ENDPOINT_URL, a new copy
    stays pending (no attempt spent) and /readyz names asset_store; once the server is back the
    same copy is stored and served."""
    bucket = s3.new_bucket()
    relay = start_relay(ASSET_STORE=f"s3://{bucket}/results", **s3.env())
    key = relay.create_key("a")
    earlier = await client.post(
        f"{relay.url}/v1/tasks", json={"model": "gpt-image-2", "prompt": "y"}, headers=auth(key)
    )
    done = await wait_for_task(client, relay, key, earlier.json()["id"])
    assert done["results"][0]["asset"]["status"] == "stored"
    s3.stop()
    unreachable = await client.get(done["results"][0]["url"], headers=auth(key))
    assert unreachable.status_code == 503
    assert unreachable.json()["error"]["code"] == "asset_store_unavailable"
    assert "AWS_ENDPOINT_URL" in unreachable.json()["error"]["message"]
    response = await client.post(
        f"{relay.url}/v1/tasks", json={"model": "gpt-image-2", "prompt": "x"}, headers=auth(key)
    )
    assert response.status_code == 202, response.text
    task_id = response.json()["id"]
    task = await wait_for_task(client, relay, key, task_id, until=waiting_for_store)
    assert task["results"][0]["asset"]["attempts"] == 0
    ready = await client.get(f"{relay.url}/readyz")
    assert ready.status_code == 503
    check = ready.json()["checks"]["asset_store"]
    assert check["status"] == "failing", check
    assert "AWS_ENDPOINT_URL" in check["error"], check
    file_url = f"{relay.url}/v1/tasks/{task_id}/results/0"
    pending = await client.get(file_url, headers=auth(key))
    assert pending.json()["error"]["code"] == "asset_pending"

    s3.start()  # back on the same port (empty: moto keeps buckets in memory)
    (await client.put(f"{s3.endpoint}/{bucket}")).raise_for_status()
    task = await wait_for_task(client, relay, key, task_id)
    entry = task["results"][0]
    assert (entry["asset"]["status"], entry["asset"]["attempts"]) == ("stored", 1), entry
    served = await client.get(file_url, headers=auth(key))
    assert served.status_code == 200
    assert hashlib.sha256(served.content).hexdigest() == entry["sha256"]
    sha = entry["sha256"]
    assert s3.keys(bucket) == [f"results/{sha[:2]}/{sha[2:4]}/{sha}"]
    ready = await client.get(f"{relay.url}/readyz")
    assert ready.json()["checks"]["asset_store"] == {"status": "ok"}, ready.json()
