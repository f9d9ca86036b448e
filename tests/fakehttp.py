"""A fake HTTP server's answer, shared by the tests that stand in for etcd members."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler


def answer_post(handler: BaseHTTPRequestHandler, body: bytes) -> None:
    """Read the request's body, then answer 200 with ``body``."""
    handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
