"""The OpenAI-compatible backend against a flaky server: 500s, 429s, bad bodies, hangs, a death midway.

The server (tests/support/chatserver.py) is a real HTTP server on 127.0.0.1 that injects each fault on the
requests a test chooses; the client under test is the real backend with its own retry loop, its
backoff shrunk to milliseconds (the Retry-After waits are real). The death-midway tests run the
real sharded loop (llm/table.respond, and the evaluate stage as a subprocess) so that what is kept
on disk and what the rerun asks for are measured, not assumed.
"""

from __future__ import annotations

import email.utils
import os
import re
import subprocess
import time
import uuid

import polars as pl
import pytest
import yaml
from chatserver import DIE, MALFORMED, OK, ChatServer, die_after, fail_first, hang, status
from dvc_spec import ROOT, STAGES, command, stage_argv
from stagerun import untrained_epitome

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.data import ed
from empathy_pipeline.data.chat import dialogue_chat
from empathy_pipeline.llm.backends import load_backend
from empathy_pipeline.llm.base import Sampling
from empathy_pipeline.llm.openai import OpenAIBackend, retry_after
from empathy_pipeline.llm.table import respond

SAMPLE = ROOT / "data" / "sample" / "empatheticdialogues"
TAIL = "completed shards are kept, rerun to resume"
CHAT = [{"role": "user", "content": "hello"}]


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    """Backoff in milliseconds: the loop is the same, the waits are not worth seconds of test time."""
    monkeypatch.setattr(OpenAIBackend, "BACKOFF_BASE", 0.01)
    monkeypatch.setattr(OpenAIBackend, "BACKOFF_CAP", 0.05)


def backend(server: ChatServer, monkeypatch, **extra) -> OpenAIBackend:
    monkeypatch.setenv("FAULTS_LLM_URL", server.url)
    monkeypatch.delenv("FAULTS_LLM_KEY", raising=False)
    cfg = {"backend": "openai", "base_url_env": "FAULTS_LLM_URL", "api_key_env": "FAULTS_LLM_KEY",
           "concurrency": 1, "max_retries": 3, "timeout": 5, "show_progress": False, **extra}
    return load_backend(cfg, model="served-model")


def failure(url: str, attempts: int, cause: str, done: int, total: int) -> str:
    return (f"openai backend: {url} failed after {attempts} attempt{'s' if attempts != 1 else ''} ({cause}); "
            f"{done} of {total} requests done — {TAIL}")



# ---- retried faults: the call succeeds ---------------------------------------------------------

def test_500s_then_success(monkeypatch):
    chats = [[{"role": "user", "content": f"m{i}"}] for i in range(3)]
    with ChatServer(fail_first(2, status(500))) as server:
        replies = backend(server, monkeypatch).generate(chats, Sampling(), seeds=[7, 8, 9])
    assert replies == [f"echo m{i} seed={7 + i}" for i in range(3)]
    assert len(server.requests) == 3 + 2 and server.answered == 3


@pytest.mark.parametrize("header, wait", [
    ({"retry_after": "1"}, 1.0),
    ({"retry_after_ms": "300"}, 0.3),
    ("http-date", 2.0),
])
def test_429_retry_after_is_honoured(monkeypatch, header, wait):
    """The gap between the 429 and the retry is the server's wish, not the (ms-sized) backoff."""
    if header == "http-date":  # an HTTP date has whole seconds: the wait is in (wait - 1, wait]
        header = {"retry_after": email.utils.formatdate(time.time() + wait, usegmt=True)}
    with ChatServer(fail_first(1, status(429, **header))) as server:
        assert backend(server, monkeypatch).generate([CHAT], Sampling()) == ["echo hello seed=" +
                                                                             str(server.requests[0].body["seed"])]
    gap = server.requests[1].at - server.requests[0].at
    low = wait - 1 if wait >= 2 else wait * 0.9
    assert low <= gap <= wait + 0.6, gap


@pytest.mark.parametrize("bad", [MALFORMED, status(200)], ids=["cut-off JSON", "JSON without choices"])
def test_malformed_json_is_retried(monkeypatch, bad):
    with ChatServer(fail_first(2, bad)) as server:
        assert backend(server, monkeypatch).generate([CHAT], Sampling(), seeds=[1]) == ["echo hello seed=1"]
    assert len(server.requests) == 3


def test_a_hang_past_the_timeout_is_cut_and_retried(monkeypatch):
    started = time.monotonic()
    with ChatServer(fail_first(1, hang(10))) as server:
        assert backend(server, monkeypatch, timeout=0.5).generate([CHAT], Sampling(), seeds=[1]) == [
            "echo hello seed=1"]
    elapsed = time.monotonic() - started
    assert len(server.requests) == 2 and 0.5 <= elapsed < 3, elapsed


# ---- faults that outlast the retries: one line ---------------------------------------------------

@pytest.mark.parametrize("plan, cause", [
    (lambda i: status(503), "HTTP 503"),
    (lambda i: MALFORMED, "malformed response body"),
    (lambda i: hang(10), "timeout after 0.5 s"),
])
def test_exhausted_retries_fail_in_one_line(monkeypatch, plan, cause):
    with ChatServer(plan) as server, pytest.raises(PipelineError) as caught:
        backend(server, monkeypatch, max_retries=2, timeout=0.5).generate([CHAT], Sampling())
    assert str(caught.value) == failure(server.url, 3, cause, 0, 1)
    assert len(server.requests) == 3


@pytest.mark.parametrize("code", [400, 401, 404])
def test_non_retryable_4xx_fails_at_once(monkeypatch, code):
    with ChatServer(lambda i: status(code)) as server, pytest.raises(PipelineError) as caught:
        backend(server, monkeypatch).generate([CHAT], Sampling())
    assert str(caught.value) == failure(server.url, 1, f"HTTP {code}: injected fault", 0, 1)
    assert len(server.requests) == 1


def test_counts_the_requests_done_before_the_failure(monkeypatch):
    chats = [[{"role": "user", "content": f"m{i}"}] for i in range(5)]
    with ChatServer(lambda i: OK if i <= 3 else status(500)) as server, pytest.raises(PipelineError) as caught:
        backend(server, monkeypatch, max_retries=1).generate(chats, Sampling())
    assert str(caught.value) == failure(server.url, 2, "HTTP 500", 3, 5)


def test_backoff_is_capped_exponential_with_jitter():
    b = OpenAIBackend.__new__(OpenAIBackend)
    b.BACKOFF_BASE, b.BACKOFF_CAP = 0.5, 30.0
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (40, 30.0)):
        waits = {b.delay(attempt, None) for _ in range(50)}
        assert all(ceiling / 2 <= w < ceiling for w in waits) and len(waits) > 1, (attempt, waits)
    assert b.delay(1, 7.0) == 7.0 and b.delay(1, 1e6) == OpenAIBackend.RETRY_AFTER_CAP
    assert retry_after({"retry-after": email.utils.formatdate(0, usegmt=True)}) == 0.0  # a date in the past
    assert retry_after({"retry-after": "soon"}) is None and retry_after({}) is None


def test_repr_and_errors_never_show_the_key(monkeypatch):
    key = f"sk-repr-{uuid.uuid4().hex}"
    with ChatServer(lambda i: status(401)) as server:
        monkeypatch.setenv("FAULTS_LLM_URL", server.url)
        monkeypatch.setenv("FAULTS_LLM_KEY", key)
        b = load_backend({"backend": "openai", "base_url_env": "FAULTS_LLM_URL", "api_key_env": "FAULTS_LLM_KEY",
                          "max_retries": 0, "show_progress": False}, model="m")
        with pytest.raises(PipelineError) as caught:
            b.generate([CHAT], Sampling())
    assert key not in repr(b) and key not in str(caught.value) and key not in repr(caught.value)
    assert server.requests[0].authorization == f"Bearer {key}"


# ---- dies midway: the real sharded loop keeps its shards, the rerun asks only for the rest -------

def samples(n: int) -> pl.DataFrame:
    rows, _ = ed.read_ed_csv(SAMPLE / "test.csv", "test", normalize=ed.paper_normalize)
    return rows.head(n)


def test_server_dying_midway_keeps_shards_and_rerun_asks_only_the_rest(tmp_path, monkeypatch):
    rows, sampling = samples(10), Sampling(max_new_tokens=8, seed=3)
    args = dict(shard_size=2, settings={"model": "served-model"}, what="evaluate test", show_progress=False)

    with ChatServer(die_after(5)) as server, pytest.raises(PipelineError) as caught:
        respond(rows, dialogue_chat, backend(server, monkeypatch), sampling, shard_dir=tmp_path / "killed", **args)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"openai backend: {server.url} failed after 4 attempts (")
    assert message.endswith(f"); 1 of 2 requests done — {TAIL}")
    assert sorted(p.name for p in (tmp_path / "killed").glob("shard-*.parquet")) == [
        "shard-00000.parquet", "shard-00001.parquet"]

    with ChatServer() as healthy:
        resumed, counts = respond(rows, dialogue_chat, backend(healthy, monkeypatch), sampling,
                                  shard_dir=tmp_path / "killed", **args)
    assert len(healthy.requests) == 10 - 4 and counts["shards_resumed"] == 2
    asked = {r.body["messages"][-1]["content"] for r in healthy.requests}
    assert asked == {dialogue_chat(c)[-1]["content"] for c in rows["context"].to_list()[4:]}

    with ChatServer() as whole_server:
        whole, _ = respond(rows, dialogue_chat, backend(whole_server, monkeypatch), sampling,
                           shard_dir=tmp_path / "whole", **args)
    assert resumed.equals(whole) and len(whole_server.requests) == 10


# ---- the evaluate stage end to end: the key goes to the server and nowhere else -----------------

def test_api_key_reaches_the_server_and_no_file_or_stream(tmp_path):
    """evaluate@synth_base as dvc runs it, through the openai backend: a run the server dies in, then
    the resume. The key is in every Authorization header and in no file, stdout or stderr."""
    key = f"sk-test-{uuid.uuid4().hex}"
    project = tmp_path / "project"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["llm"].update({"backend": "openai", "base_url_env": "EMPATHY_TEST_URL", "api_key_env": "EMPATHY_TEST_KEY",
                          "concurrency": 1, "max_retries": 1, "timeout": 5})
    params["evaluate"].update({"max_samples": 6, "shard_size": 2, "max_new_tokens": 8, "bertscore": False})
    project.mkdir()
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    (project / "data/prepared").mkdir(parents=True)
    samples(8).write_parquet(project / "data/prepared/test.parquet")
    (project / "models/synth_base").mkdir(parents=True)  # a served model: the directory only names it
    (project / "models/synth_base/config.json").write_text("{}")
    untrained_epitome(project / "models/epitome")
    _, options = command(STAGES["evaluate@synth_base"])

    def run(server: ChatServer) -> subprocess.CompletedProcess:
        env = {**os.environ, "EMPATHY_TEST_URL": server.url, "EMPATHY_TEST_KEY": key}
        return subprocess.run(stage_argv("evaluate@synth_base"), cwd=project, env=env,
                              capture_output=True, text=True, timeout=300)

    with ChatServer(die_after(3)) as dying:
        failed = run(dying)
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert failed.returncode == 1 and len(errors) == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert re.fullmatch(rf"error: evaluate: openai backend: {re.escape(dying.url)} failed after 2 attempts "
                        rf"\(.+\); 1 of 2 requests done — {TAIL}", errors[0]), errors[0]
    assert len(list((project / options["shards"][0]).glob("shard-*.parquet"))) == 1
    assert not (project / options["predictions"][0]).exists()

    with ChatServer() as healthy:
        done = run(healthy)
    assert done.returncode == 0, done.stderr
    assert len(healthy.requests) == 6 - 2  # the resume asks only for the shards not on disk
    assert pl.read_parquet(project / options["predictions"][0]).height == 6

    seen = dying.requests + healthy.requests
    assert seen and all(r.authorization == f"Bearer {key}" for r in seen)
    files = [p for p in project.rglob("*") if p.is_file()]
    assert any(p.name == "stage_times.jsonl" for p in files) and len(files) > 5
    leaked = [str(p.relative_to(project)) for p in files if key.encode() in p.read_bytes()]
    leaked += [name for name, text in (("stdout", failed.stdout + done.stdout), ("stderr", failed.stderr + done.stderr))
               if key in text]
    assert not leaked, leaked


def test_dead_server_before_any_request(monkeypatch):
    """A server that is gone from the first request: the same one line, 0 requests done."""
    with ChatServer(lambda i: DIE) as server, pytest.raises(PipelineError) as caught:
        backend(server, monkeypatch, max_retries=1).generate([CHAT, CHAT], Sampling())
    assert str(caught.value).startswith(f"openai backend: {server.url} failed after 2 attempts (connection failed")
    assert str(caught.value).endswith(f"; 0 of 2 requests done — {TAIL}")
