"""Secrets we hand out: shape, entropy, strict well-formedness, and stored only as hashes."""

from __future__ import annotations

import base64
import hashlib
import re
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.credentials import (
    API_KEY_PREFIX,
    SystemEntropy,
    api_key_well_formed,
    hash_secret,
    new_api_key,
    new_callback_token,
    new_task_id,
    token_well_formed,
)
from service.domain.records import ApiKey
from service.storage.sqlite import SQLiteStorage
from tests.unit.conftest import FakeEntropy

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")


def test_callback_token_is_43_urlsafe_chars() -> None:
    """A callback token is 32 random bytes: 43 base64url characters without padding."""
    token = new_callback_token(SystemEntropy())
    assert TOKEN_SHAPE.fullmatch(token)
    assert token_well_formed(token)


def test_callback_tokens_do_not_repeat() -> None:
    """Fresh tokens are distinct and use the whole alphabet (real randomness, not a counter)."""
    tokens = {new_callback_token(SystemEntropy()) for _ in range(2000)}
    assert len(tokens) == 2000
    assert set("".join(tokens)) == set(ALPHABET)


def test_callback_token_carries_256_bits() -> None:
    """The token decodes to 32 bytes, i.e. 256 bits of entropy."""
    token = new_callback_token(SystemEntropy())
    assert len(base64.urlsafe_b64decode(token + "=")) == 32


def test_api_key_shape() -> None:
    """An API key is `grk_` + 43 token characters, with a public id and a 12-char prefix."""
    made = new_api_key(SystemEntropy())
    assert made.secret.startswith(API_KEY_PREFIX)
    assert len(made.secret) == 47
    assert api_key_well_formed(made.secret)
    assert made.prefix == made.secret[:12]
    assert re.fullmatch(r"key_[A-Za-z0-9_-]{12}", made.id)
    assert made.id[4:] not in made.secret


def test_api_keys_do_not_repeat() -> None:
    """Two keys never share a secret or an id."""
    first, second = new_api_key(SystemEntropy()), new_api_key(SystemEntropy())
    assert first.secret != second.secret
    assert first.id != second.id


def test_task_id_shape() -> None:
    """A task id is `task_` + 22 base64url characters (128 bits)."""
    assert re.fullmatch(r"task_[A-Za-z0-9_-]{22}", new_task_id(SystemEntropy()))


def test_fake_entropy_has_the_real_shape() -> None:
    """The tests' fake entropy makes tokens of the same shape as the real one."""
    assert token_well_formed(new_callback_token(FakeEntropy()))
    assert api_key_well_formed(new_api_key(FakeEntropy()).secret)


def test_hash_is_sha256_of_the_secret() -> None:
    """The stored form is the 32-byte SHA-256 digest, never the secret itself."""
    secret = new_api_key(SystemEntropy()).secret
    digest = hash_secret(secret)
    assert digest == hashlib.sha256(secret.encode()).digest()
    assert len(digest) == 32
    assert secret.encode() not in digest


def test_hash_tolerates_lone_surrogates() -> None:
    """Hashing never raises, even for a string no UTF-8 encoder accepts."""
    assert len(hash_secret("\ud800")) == 32


@pytest.mark.parametrize(
    "token",
    [
        "",
        "A" * 42,
        "A" * 44,
        "A" * 42 + "=",
        "A" * 42 + "+",
        "A" * 42 + "/",
        "A" * 42 + ".",
        "A" * 42 + " ",
        "A" * 43 + "\n",
        "\n" + "A" * 43,
        "A" * 42 + "é",
        "A" * 42 + "\u0663",  # ARABIC-INDIC DIGIT THREE: a digit, but not ASCII
        "A" * 42 + "\uff21",  # FULLWIDTH LATIN CAPITAL A
        "A" * 42 + "\x00",
        "A" * 42 + "\ud800",
    ],
)
def test_malformed_tokens_refused(token: str) -> None:
    """Tokens of the wrong length, charset or with non-ASCII characters are not well formed."""
    assert not token_well_formed(token)
    assert not api_key_well_formed(API_KEY_PREFIX + token)


@pytest.mark.parametrize(
    "secret",
    ["A" * 47, "grk-" + "A" * 43, "GRK_" + "A" * 43, " grk_" + "A" * 43, "grk_" + "A" * 43 + " "],
)
def test_malformed_api_keys_refused(secret: str) -> None:
    """API keys without the exact `grk_` prefix or with stray characters are refused."""
    assert not api_key_well_formed(secret)


@settings(database=None, deadline=None)
@given(st.text(alphabet=ALPHABET, min_size=43, max_size=43))
def test_every_token_of_the_shape_is_well_formed(token: str) -> None:
    """Any 43 characters of the base64url alphabet are a well-formed token."""
    assert token_well_formed(token)
    assert api_key_well_formed(API_KEY_PREFIX + token)


@settings(database=None, deadline=None)
@given(st.text(max_size=60))
def test_well_formed_means_the_exact_shape(text: str) -> None:
    """Well-formedness holds exactly when the text is 43 base64url ASCII characters."""
    expected = len(text) == 43 and all(c in ALPHABET for c in text)
    assert token_well_formed(text) is expected


def database_bytes(folder: Path) -> bytes:
    """Every byte of every file in `folder` (the database, its WAL and shared memory)."""
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())


async def test_storage_keeps_only_the_hash(tmp_path: Path) -> None:
    """After storing an API key, the database files hold its hash and never the secret."""
    made = new_api_key(SystemEntropy())
    storage = SQLiteStorage(str(tmp_path / "keys.db"))
    await storage.open()
    try:
        await storage.create_api_key(
            ApiKey(made.id, "ci", made.prefix, 1_700_000_000.0), hash_secret(made.secret)
        )
        assert await storage.api_key_by_hash(hash_secret(made.secret)) is not None
        assert await storage.api_key_by_hash(hash_secret(made.secret + "x")) is None
        on_disk = database_bytes(tmp_path)
    finally:
        await storage.close()
    assert made.secret.encode() not in on_disk
    assert made.secret[12:].encode() not in on_disk
    with sqlite3.connect(tmp_path / "keys.db") as conn:
        rows = conn.execute("SELECT id, name, prefix, key_hash FROM api_keys").fetchall()
    assert rows == [(made.id, "ci", made.prefix, hash_secret(made.secret))]
