"""The OpenAI-compatible backend against a small chat-completions server on 127.0.0.1.

The server is ours and local (the network is closed); what is under test is the client side:
order of replies, seeds per request, retry after a 429, and the one-line error when a request fails.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.llm.backends import load_backend
from empathy_pipeline.llm.base import Sampling, request_seed


class ChatServer(ThreadingHTTPServer):
    def __init__(self, fail_first: int, always_fail: bool = False):
        super().__init__(("127.0.0.1", 0), Handler)
        self.fail_first, self.always_fail = fail_first, always_fail
        self.requests: list[dict] = []
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append(body)
            fail = self.server.always_fail or len(self.server.requests) <= self.server.fail_first
        if fail:
            self._send(429 if not self.server.always_fail else 400, {"error": {"message": "slow down", "type": "x"}})
            return
        last = body["messages"][-1]["content"]
        self._send(200, {
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f" echo {last} seed={body.get('seed')} "}}],
        })

    def _send(self, status: int, payload: dict):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 429:
            self.send_header("retry-after-ms", "10")
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server(request, monkeypatch):
    fail_first, always_fail = getattr(request, "param", (0, False))
    srv = ChatServer(fail_first, always_fail)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("TEST_LLM_URL", f"http://127.0.0.1:{srv.server_address[1]}/v1")
    monkeypatch.delenv("TEST_LLM_KEY", raising=False)
    yield srv
    srv.shutdown()


def backend(**extra):
    cfg = {"backend": "openai", "base_url_env": "TEST_LLM_URL", "api_key_env": "TEST_LLM_KEY",
           "concurrency": 3, "max_retries": 2, "timeout": 5, "show_progress": False, **extra}
    return load_backend(cfg, model="served-model")


@pytest.mark.parametrize("server", [(2, False)], indirect=True)
def test_replies_in_order_with_per_request_seeds_after_retries(server):
    chats = [[{"role": "user", "content": f"message {i}"}] for i in range(6)]
    replies = backend().generate(chats, Sampling(max_new_tokens=8, temperature=0.7, seed=100))
    # No seeds given: each request's seed is keyed by its position in the call.
    assert replies == [f"echo message {i} seed={request_seed(100, str(i))}" for i in range(6)]
    assert len(server.requests) == 6 + 2  # two 429s were retried
    assert {r["max_tokens"] for r in server.requests} == {8} and server.requests[0]["model"] == "served-model"


def test_each_request_carries_its_samples_seed(server):
    """The stages pass request_seed(stage seed, sample key) per chat: that is the seed the server sees."""
    keys = ["s3", "s1", "s2"]
    chats = [[{"role": "user", "content": key}] for key in keys]
    seeds = [request_seed(100, key) for key in keys]
    replies = backend().generate(chats, Sampling(max_new_tokens=8, temperature=0.7, seed=100), seeds=seeds)
    assert replies == [f"echo {key} seed={request_seed(100, key)}" for key in keys]
    assert len(set(seeds)) == 3
    with pytest.raises(PipelineError, match="2 seeds given for 3 chats"):
        backend().generate(chats, Sampling(temperature=0.7), seeds=seeds[:2])


@pytest.mark.parametrize("server", [(0, True)], indirect=True)
def test_failed_request_is_one_line_error(server):
    with pytest.raises(PipelineError, match=r"^openai backend: http://127\.0\.0\.1:\d+/v1 failed after 1 attempt "
                                           r"\(HTTP 400: slow down\); 0 of 1 requests done"):
        backend().generate([[{"role": "user", "content": "hi"}]], Sampling())
