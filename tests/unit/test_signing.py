"""Standard Webhooks signing: the published known answer, and the reference verifier."""

from __future__ import annotations

import time

import pytest
from standardwebhooks import Webhook

from service.jobs.delivery import retry_after_seconds
from service.upstream.signing import new_secret, secret_key, signature, signed_headers

KNOWN_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KNOWN_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
KNOWN_TS = 1614265330
KNOWN_BODY = b'{"test": 2432232314}'
KNOWN_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_known_answer_from_the_spec() -> None:
    """Our signature equals the Standard Webhooks published example."""
    assert signature(KNOWN_SECRET, KNOWN_ID, KNOWN_TS, KNOWN_BODY) == KNOWN_SIGNATURE


def test_reference_library_verifies_our_headers() -> None:
    """The standardwebhooks package accepts what we sign, with one or two secrets."""
    old, new = new_secret(), new_secret()
    now = int(time.time())
    body = b'{"type":"task.succeeded","data":{"id":"task_1"}}'
    headers = dict(signed_headers([new, old], "msg_1", now, body))
    assert Webhook(old).verify(body, headers) == {
        "type": "task.succeeded",
        "data": {"id": "task_1"},
    }
    assert Webhook(new).verify(body, headers)["data"]["id"] == "task_1"


def test_new_secrets_are_distinct_and_well_formed() -> None:
    """Secrets are whsec_ + base64 of 24 random bytes."""
    made = {new_secret() for _ in range(50)}
    assert len(made) == 50
    assert all(len(secret_key(s)) == 24 for s in made)


@pytest.mark.parametrize("bad", ["whsec_", "whsec_!!!!", "whsec_@@@@"])
def test_malformed_secrets_are_refused(bad: str) -> None:
    """A secret that is not base64 (or empty) is a ValueError, not a silent weak key."""
    with pytest.raises(ValueError, match="secret"):
        secret_key(bad)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("120", 120.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("soon", None),
        ("", None),
    ],
)
def test_retry_after_forms(header: str | None, expected: float | None) -> None:
    """Retry-After in seconds or as an HTTP date (a past date means now)."""
    assert retry_after_seconds(header, time.time()) == expected
