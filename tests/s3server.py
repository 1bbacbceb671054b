"""A real S3 API server on 127.0.0.1 for the S3 file store's tests: moto's server mode.

`S3Server().start()` runs `python -m moto.server` as a child process on 127.0.0.1 and waits
until the S3 API answers. Each test makes its own bucket (`new_bucket()`), so tests sharing a
server never share objects. `stop()` kills the process: every connection to it breaks and the
port refuses, as a store that is down does; `start()` again serves on the same port (empty: moto
keeps its buckets in memory). A server that cannot start fails the test with the reason and its
output: nothing is skipped.

    python -m tests.s3server     start one, make a bucket, list it, stop (a self-check)
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# moto answers any credentials; these only have to be present (the relay's SDK signs with them)
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test-relay-key",
    "AWS_SECRET_ACCESS_KEY": "test-relay-secret",
    "AWS_REGION": "us-east-1",
}
_NAMES = itertools.count()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class S3Server:
    """moto's S3 API server, a child process on 127.0.0.1 (its port kept across restarts)."""

    port: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: Path | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        """The `AWS_ENDPOINT_URL` of this server."""
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The AWS variables a relay (or a store) needs to use this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, **CREDENTIALS}

    def start(self, within: float = 60.0) -> S3Server:
        """Serve, and wait until the S3 API answers (fail with the server's output if not)."""
        self.port = self.port or _free_port()
        fd, name = tempfile.mkstemp(prefix="moto-", suffix=".log")
        self._log = Path(name)
        with os.fdopen(fd, "wb") as log:
            self._proc = subprocess.Popen(  # our own interpreter, fixed arguments
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "MOTO_PORT": str(self.port)},
            )
        deadline = time.monotonic() + within  # a hang guard: a loaded machine starts slowly
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto's S3 server exited at start: {self._output()}")
            try:
                httpx.get(f"{self.endpoint}/", timeout=2.0)
                return self
            except httpx.TransportError as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"moto's S3 server did not answer on {self.endpoint}: {exc!r};"
                        f" install the dev set (moto[server]). Output: {self._output()}"
                    ) from exc
                time.sleep(0.05)

    def _output(self) -> str:
        return self._log.read_text(errors="replace")[-2000:] if self._log else ""

    def stop(self) -> None:
        """Kill the server: its port refuses and its connections break (the port is kept)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        if self._log is not None:
            self._log.unlink(missing_ok=True)

    def new_bucket(self, prefix: str = "relay") -> str:
        """Create a bucket with a name no other test uses; return its name."""
        name = f"{prefix}-{os.getpid()}-{next(_NAMES)}-{uuid.uuid4().hex[:8]}"
        response = httpx.put(f"{self.endpoint}/{name}", timeout=10.0)
        if response.status_code != 200:
            raise RuntimeError(f"could not create bucket {name}: {response.text}")
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in `bucket` under `prefix` (ListObjectsV2, one page is plenty)."""
        response = httpx.get(
            f"{self.endpoint}/{bucket}",
            params={"list-type": "2", "prefix": prefix, "max-keys": "1000"},
            timeout=10.0,
        )
        response.raise_for_status()
        return sorted(re.findall(r"<Key>([^<]+)</Key>", response.text))


def main() -> int:
    """Self-check: start, make a bucket, list it, stop."""
    server = S3Server().start()
    try:
        bucket = server.new_bucket()
        print(f"moto S3 server at {server.endpoint}: bucket {bucket}, keys {server.keys(bucket)}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
