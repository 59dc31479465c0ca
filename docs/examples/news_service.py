#!/usr/bin/env python3
"""A legacy HTTP service for refract's /news route: standard library only.

refract POSTs every client event here as JSON (the Redis event fields minus responseChannel):
    {"id", "type": "connect" | "message" | "disconnect", "route", "remoteAddress",
     "remotePort", "message"?}
and, with polling_interval set on the route, a poll for every live connection:
    {"id", "type": "message", ..., "message": <the client's last message, or "">}

The response body is one WebSocketResponse ({"message": "..."}; "type" defaults to "message";
"type": "drop" closes the client), a JSON array of them, or 204 for nothing.

This service:
  - welcomes a client on connect;
  - treats a client message as a topic to follow ("sports", "tech", ...), or "bye" to leave;
  - on each poll, sends the next headline of the followed topic, or 204 when nothing is new.

Run it:  python3 docs/examples/news_service.py --port 9000
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEADLINES = {
    "tech": ["Gateway ships", "Redis turns 16", "Rust 2024 edition lands"],
    "sports": ["Local team wins", "Marathon record falls", "Chess goes indoors"],
}

# Per-connection state: the followed topic and a headline iterator. Protected by a lock since
# ThreadingHTTPServer handles requests on several threads.
_lock = threading.Lock()
_following: dict[str, tuple[str, itertools.cycle]] = {}


def reply(message: dict | str, kind: str = "message") -> dict:
    text = message if isinstance(message, str) else json.dumps(message)
    return {"type": kind, "message": text}


def handle(event: dict) -> list[dict] | None:
    """Returns the replies for one event, or None for 'nothing to say' (204)."""
    conn_id, kind = event.get("id"), event.get("type")
    if not isinstance(conn_id, str):
        raise ValueError("id must be a string")
    if kind == "connect":
        return [reply({"kind": "welcome", "topics": sorted(HEADLINES)})]
    if kind == "disconnect":
        with _lock:
            _following.pop(conn_id, None)
        return None
    if kind != "message":
        return None
    # As typed: a terminal client (websocat) sends the line with its newline.
    text = event.get("message", "").strip()
    with _lock:
        current = _following.get(conn_id)
        if text == "bye":
            _following.pop(conn_id, None)
            return [reply({"kind": "bye"}, kind="drop")]
        if text in HEADLINES and (current is None or current[0] != text):
            _following[conn_id] = (text, itertools.cycle(HEADLINES[text]))
            return [reply({"kind": "following", "topic": text})]
        if current is None:
            # A poll before the client chose a topic, or an unknown topic: nothing new.
            return None
        topic, headlines = current
        return [reply({"kind": "headline", "topic": topic, "title": next(headlines)})]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: refract reuses connections

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("content-length", 0))
        try:
            event = json.loads(self.rfile.read(length))
            replies = handle(event)
        except (ValueError, AttributeError) as e:
            self.send_error(400, f"bad event: {e}")
            return
        if replies is None:
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        body = json.dumps(replies).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        pass  # one line per poll would drown the terminal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"news_service ready on {args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
