#!/usr/bin/env python3
"""A stand-in for the SaaS APIs connectors call, for the demo and the README's examples: it
answers on loopback the way such APIs do, so that remedy can be seen at work on a machine
without internet.

    python3 scripts/fake_api.py [--port 8781]

Routes (any method; the path may carry more segments after these):

  /crm/...      a CRM: 200 with a page of contacts for `Authorization: Bearer demo-token`,
                401 with an OAuth-style error body for any other token or none
  /ads/...      an ad platform's reporting API with a quota of 5 calls a minute: 200 with
                report rows and `X-RateLimit-Limit`, `-Remaining` and `-Reset` counting down,
                then 429 with `Retry-After` until the minute is over
  /health       200 `ok`

Every answer is JSON but /health. Standard library only; one thread per connection.
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "demo-token"
QUOTA = 5
WINDOW = 60


class Quota:
    """A fixed window of QUOTA calls per WINDOW seconds, shared by every connection."""

    def __init__(self):
        self.lock = threading.Lock()
        self.start = time.monotonic()
        self.used = 0

    def take(self):
        """(allowed, remaining, seconds to reset) for one call."""
        with self.lock:
            now = time.monotonic()
            if now - self.start >= WINDOW:
                self.start, self.used = now, 0
            reset = max(1, round(WINDOW - (now - self.start)))
            if self.used >= QUOTA:
                return False, 0, reset
            self.used += 1
            return True, QUOTA - self.used, reset


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-api/1"
    quota = Quota()

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("fake-api: " + fmt % args + "\n")

    def answer(self, status, body, headers=()):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not isinstance(body, bytes) else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path = self.path.split("?", 1)[0]
        if path == "/health":
            return self.answer(200, b"ok\n")
        if path.startswith("/crm/") or path == "/crm":
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self.answer(401, {
                    "error": "invalid_token",
                    "error_description": "The access token expired or was revoked.",
                }, [("WWW-Authenticate", 'Bearer error="invalid_token"')])
            return self.answer(200, {
                "results": [{"id": n, "email": f"contact{n}@example.com"} for n in range(1, 4)],
                "paging": {"next": None},
            })
        if path.startswith("/ads/") or path == "/ads":
            allowed, remaining, reset = self.quota.take()
            limits = [("X-RateLimit-Limit", str(QUOTA)), ("X-RateLimit-Remaining", str(remaining)),
                      ("X-RateLimit-Reset", str(reset))]
            if not allowed:
                return self.answer(429, {
                    "error": {"code": 429, "message": "Quota exceeded: too many requests this minute."},
                }, limits + [("Retry-After", str(reset))])
            return self.answer(200, {
                "rows": [{"date": "2026-12-01", "campaign": "demo", "clicks": 42, "spend": 13.5}],
            }, limits)
        return self.answer(404, {"error": "not_found", "path": path})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = handle_any


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8781)
    parser.add_argument("--verbose", action="store_true", help="log every request on stderr")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.verbose = args.verbose
    print(f"fake API listening on http://127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
