"""A small OpenAI-compatible chat-completions server on 127.0.0.1, with faults on request.

The server is real (a thread serving HTTP on a free port); `plan(n)` decides what the n-th request
(1-based, in arrival order) gets: a normal echo reply, an HTTP status with headers, a body that is
not JSON, a hang, or nothing at all because the server has died. Every request is recorded (its
body, its Authorization header and when it arrived) so tests can count what a client asked for.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Reply:
    """What one request gets. kind: ok | status | malformed | hang | die."""

    kind: str = "ok"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # hang: how long before answering normally


OK = Reply()


def status(code: int, **headers: str) -> Reply:
    return Reply("status", code, {k.replace("_", "-"): v for k, v in headers.items()})


MALFORMED = Reply("malformed")
DIE = Reply("die")


def hang(seconds: float) -> Reply:
    return Reply("hang", seconds=seconds)


def fail_first(n: int, reply: Reply) -> Callable[[int], Reply]:
    """`reply` for the first n requests, then normal replies."""
    return lambda i: reply if i <= n else OK


def die_after(n: int) -> Callable[[int], Reply]:
    """n normal replies, then the server is gone: no answer, and the port stops listening."""
    return lambda i: OK if i <= n else DIE


@dataclass
class Seen:
    body: dict
    authorization: str | None
    at: float


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, plan: Callable[[int], Reply] = lambda i: OK):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.plan = plan
        self.requests: list[Seen] = []
        self.answered = 0  # requests that got a normal chat completion
        self.lock = threading.Lock()
        self.stopping = threading.Event()  # ends hangs at teardown
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._dead = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            if self._dead:
                return
            self._dead = True
        self.shutdown()
        self.server_close()

    def die(self) -> None:
        """Stop listening from inside a handler (shutdown() waits for serve_forever, so not here)."""
        threading.Thread(target=self.stop, daemon=True).start()


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append(Seen(body, self.headers.get("Authorization"), time.monotonic()))
            reply = self.server.plan(len(self.server.requests))
        if reply.kind == "die":
            self.close_connection = True  # no status line at all: the client sees a dropped connection
            self.server.die()
            return
        if reply.kind == "hang":
            self.server.stopping.wait(reply.seconds)
        if reply.kind == "status":
            self._send(reply.status, b'{"error": {"message": "injected fault", "type": "test"}}', reply.headers)
        elif reply.kind == "malformed":
            self._send(200, b'{"id": "x", "choices": [{"mess', {})
        else:
            last = body["messages"][-1]["content"]
            with self.server.lock:
                self.server.answered += 1
            self._send(200, json.dumps({
                "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": f" echo {last} seed={body.get('seed')} "}}],
            }).encode(), {})

    def _send(self, code: int, data: bytes, headers: dict[str, str]):
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and hung up first
