"""A stand-in for `cloudflared tunnel --url URL --metrics HOST:PORT`, run as a real process.

It behaves as the tests need the real one to: a banner on stderr (with an error line naming
`api.trycloudflare.com`, as a real first attempt can print), a metrics server answering
`/ready` (503 until connected, then 200 with `readyConnections`) and `/quicktunnel`
(`{"hostname": ""}` until named), and an "edge" that forwards every request to URL. There is
no DNS here, so the edge is an HTTPS server on 127.0.0.1 (its certificate from FAKE_CF_CERT and
FAKE_CF_KEY, signed by the tests' own CA) and the hostname it reports carries its port.

Control: FAKE_CF_DELAY seconds before connecting; FAKE_CF_MODE=never never connects, =crash
exits 1 after the banner; FAKE_CF_PIDFILE is where it writes its pid. SIGUSR1 drops the
connections (`/ready` 503, the edge answers 530 like Cloudflare's "origin unreachable");
SIGUSR2 restores them; SIGTERM ends it.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import signal
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

STATE = {"connected": False, "hostname": ""}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


def _args(argv: list[str]) -> tuple[str, str]:
    metrics, url = "", ""
    for flag, value in itertools.pairwise(argv):
        if flag == "--metrics":
            metrics = value
        elif flag == "--url":
            url = value
    if argv[:1] != ["tunnel"] or not metrics or not url:
        print("fake cloudflared: expected `tunnel ... --metrics H:P --url URL`", file=sys.stderr)
        sys.exit(2)
    return metrics, url


class Metrics(BaseHTTPRequestHandler):
    """cloudflared's metrics server: /ready and /quicktunnel."""

    def do_GET(self) -> None:  # the stdlib's name
        """Answer /ready and /quicktunnel as cloudflared does."""
        if self.path == "/ready":
            up = bool(STATE["connected"])
            body = {"status": 200 if up else 503, "readyConnections": 4 if up else 0,
                    "connectorId": "5e1f-fake"}  # fmt: skip
            self._json(200 if up else 503, body)
        elif self.path == "/quicktunnel":
            self._json(200, {"hostname": STATE["hostname"]})
        else:
            self._json(404, {"error": "not found"})

    def _json(self, status: int, body: object) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def edge_handler(origin: str) -> type[BaseHTTPRequestHandler]:
    """Forward each request to `origin`, as Cloudflare's edge does through the tunnel."""
    target = urlsplit(origin)

    class Edge(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            if not STATE["connected"]:
                self._answer(530, b"error code: 1033", "text/plain")
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Host"] = target.netloc
            conn = http.client.HTTPConnection(target.hostname or "", target.port, timeout=30)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
            except OSError:
                self._answer(502, b"bad gateway", "text/plain")
                return
            finally:
                conn.close()
            kind = answer.getheader("Content-Type") or "application/octet-stream"
            self._answer(answer.status, data, kind)

        def _answer(self, status: int, data: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _forward

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    return Edge


def say(line: str) -> None:
    """One log line on stderr, as cloudflared writes them."""
    print(f"2026-11-27T00:00:00Z {line}", file=sys.stderr, flush=True)


def main() -> None:
    """Run until SIGTERM."""
    metrics, origin = _args(sys.argv[1:])
    if pidfile := os.environ.get("FAKE_CF_PIDFILE"):
        with open(pidfile, "w", encoding="ascii") as out:
            out.write(str(os.getpid()))
    say("INF Thank you for trying Cloudflare Tunnel. Doing so, without a Cloudflare account,")
    say("INF Requesting new quick Tunnel on trycloudflare.com...")
    if os.environ.get("FAKE_CF_MODE") == "crash":
        say('ERR failed to request quick Tunnel: Post "https://api.trycloudflare.com/tunnel": EOF')
        sys.exit(1)
    say('ERR failed to request quick Tunnel: Post "https://api.trycloudflare.com/tunnel": retrying')
    host, port = metrics.rsplit(":", 1)
    metrics_server = ThreadingHTTPServer((host, int(port)), Metrics)
    threading.Thread(target=metrics_server.serve_forever, daemon=True).start()
    edge = ThreadingHTTPServer(("127.0.0.1", 0), edge_handler(origin))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(os.environ["FAKE_CF_CERT"], os.environ["FAKE_CF_KEY"])
    edge.socket = context.wrap_socket(edge.socket, server_side=True)
    threading.Thread(target=edge.serve_forever, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: STATE.update(connected=False))
    signal.signal(signal.SIGUSR2, lambda *_: STATE.update(connected=True))
    if os.environ.get("FAKE_CF_MODE") != "never":
        time.sleep(float(os.environ.get("FAKE_CF_DELAY", "0.5")))
        STATE.update(connected=True, hostname=f"127.0.0.1:{edge.server_address[1]}")
        say(f"INF |  https://127.0.0.1:{edge.server_address[1]}  |")
        say("INF Registered tunnel connection connIndex=0 location=fake01 protocol=quic")
    stop.wait()


if __name__ == "__main__":
    main()
