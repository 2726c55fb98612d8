"""Any OpenAI-compatible chat server (`vllm serve`, hosted APIs): concurrent, retried, timed out.

The retries are ours, not the openai client's (it is built with max_retries=0): one loop decides
what is worth another try (429, 408/409/425, every 5xx, timeouts, refused or dropped connections,
a body that is not a chat completion), how long to wait (the server's Retry-After or
retry-after-ms when it sends one, else capped exponential backoff with jitter) and, when the
tries run out, the one line the user sees: the endpoint, the last cause and how many of the
call's requests were done. The stages call generate once per shard, so finished shards are
already on disk and a rerun asks only for the rest.

The API key is read from the environment variable `api_key_env` names and nowhere else, and it
never appears in a message, a log line or a repr: causes are built from status codes and
exception types, and any text a server sends back is scrubbed of the key before it is shown.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from collections.abc import Mapping, Sequence
from datetime import timezone
from urllib.parse import urlsplit, urlunsplit

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.progress import progress
from empathy_pipeline.llm.base import Chat, Sampling, seeds_for

# Statuses a later try can cure (the server is busy, restarting or rate limiting); any other 4xx
# (a bad request, a wrong key, an unknown model) fails the same way every time.
RETRY_STATUSES = frozenset({408, 409, 425, 429})


class RequestFailed(Exception):
    """One request gave up: why (a short, key-free cause) and after how many attempts."""

    def __init__(self, cause: str, attempts: int):
        super().__init__(cause)
        self.cause, self.attempts = cause, attempts


class Malformed(Exception):
    """A 2xx reply that is not a chat completion (not JSON, no choices, no message)."""


def retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """The wait in seconds a server asked for: retry-after-ms, or Retry-After as seconds or an HTTP date."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000)
    except ValueError:
        pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def public_url(url: str) -> str:
    """The URL without any user:password part, as it may be shown in a message."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")


class OpenAIBackend:
    name = "openai"
    OPTIONS = ("base_url_env", "api_key_env", "concurrency", "max_retries", "timeout", "show_progress")
    # Backoff before retry n (n = 1, 2, ...): min(cap, base * 2**(n-1)) scaled by a random factor in
    # [0.5, 1) so that many clients hit by the same outage do not come back in lockstep. Class
    # attributes so a test can run the loop in milliseconds.
    BACKOFF_BASE = 0.5
    BACKOFF_CAP = 30.0
    # A Retry-After longer than this is clipped: a server asking for an hour is better answered by
    # a failed stage (finished shards kept) than by a silent hang.
    RETRY_AFTER_CAP = 120.0

    def __init__(self, model: str, base_url_env: str = "OPENAI_BASE_URL", api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, max_retries: int = 3, timeout: float = 60, show_progress: bool = True):
        try:
            import openai  # noqa: F401
        except ImportError:
            raise PipelineError("llm.backend 'openai' needs the openai package: pip install openai") from None
        self.model = model
        self.base_url = os.environ.get(base_url_env) or None
        self._api_key = os.environ.get(api_key_env)  # private: never in a repr, message or log
        if not self._api_key:
            if not self.base_url:
                raise PipelineError(f"llm.backend 'openai': set {api_key_env} (and {base_url_env} for a local server)")
            self._api_key = "EMPTY"  # local servers such as `vllm serve` accept any key
        self.concurrency = int(concurrency)
        self.max_retries = int(max_retries)
        self.timeout = float(timeout)
        self.show_progress = show_progress

    def __repr__(self) -> str:
        return (f"OpenAIBackend(model={self.model!r}, base_url={self.base_url and public_url(self.base_url)!r}, "
                f"concurrency={self.concurrency}, max_retries={self.max_retries}, timeout={self.timeout:g})")

    def generate(self, chats: Sequence[Chat], sampling: Sampling, seeds: Sequence[int] | None = None) -> list[str]:
        return asyncio.run(self._generate_all(chats, sampling, seeds_for(chats, sampling, seeds)))

    # ---- one call: many requests under a semaphore ------------------------------------------------

    async def _generate_all(self, chats: Sequence[Chat], sampling: Sampling, seeds: list[int]) -> list[str]:
        import openai

        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key, max_retries=0,
                                    timeout=self.timeout)
        endpoint = public_url(str(client.base_url))
        limit = asyncio.Semaphore(self.concurrency)
        bar = progress(None, desc="generate", total=len(chats), enabled=self.show_progress)
        done = 0

        async def one(chat: Chat, seed: int) -> str:
            nonlocal done
            async with limit:
                reply = await self._request(client, chat, sampling, seed)
            done += 1
            bar.update(1)
            return reply

        tasks = [asyncio.create_task(one(c, s)) for c, s in zip(chats, seeds)]
        try:
            return list(await asyncio.gather(*tasks))
        except RequestFailed as failed:
            for task in tasks:  # the other requests would only be thrown away
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            tries = f"{failed.attempts} attempt{'s' if failed.attempts != 1 else ''}"
            raise PipelineError(f"openai backend: {endpoint} failed after {tries} ({failed.cause}); "
                                f"{done} of {len(chats)} requests done — completed shards are kept, "
                                f"rerun to resume") from None
        finally:
            bar.close()
            await client.close()

    # ---- one request: the retry loop ------------------------------------------------------------

    async def _request(self, client, chat: Chat, sampling: Sampling, seed: int) -> str:
        attempt = 0
        while True:
            attempt += 1
            cause, retryable, asked = await self._try_once(client, chat, sampling, seed)
            if cause is None:
                return asked  # the reply text
            if not retryable or attempt > self.max_retries:
                raise RequestFailed(cause, attempt)
            await asyncio.sleep(self.delay(attempt, asked))

    async def _try_once(self, client, chat: Chat, sampling: Sampling, seed: int):
        """(None, _, reply) on success, else (cause, retryable, the server's Retry-After or None)."""
        import openai

        try:
            reply = await client.chat.completions.create(
                model=self.model, messages=chat, max_tokens=sampling.max_new_tokens,
                temperature=sampling.temperature, top_p=sampling.top_p, seed=seed,
            )
            return None, False, _content(reply)
        except openai.APITimeoutError:
            return f"timeout after {self.timeout:g} s", True, None
        except openai.APIConnectionError as exc:
            return f"connection failed: {self._scrub(_first_line(exc.__cause__ or exc))}", True, None
        except openai.APIStatusError as exc:
            status = exc.status_code
            retryable = status in RETRY_STATUSES or status >= 500
            cause = f"HTTP {status}"
            if not retryable:  # say what the server objected to: a wrong key, an unknown model
                message = exc.body.get("message") if isinstance(exc.body, dict) else None
                cause += f": {self._scrub(_first_line(message))}" if message else ""
            return cause, retryable, retry_after(exc.response.headers)
        except (openai.APIResponseValidationError, json.JSONDecodeError, UnicodeDecodeError, Malformed):
            # the decode errors: the client's json() on a body that is not JSON (or not text)
            return "malformed response body", True, None

    def delay(self, attempt: int, asked: float | None) -> float:
        """Seconds to wait before retry `attempt`: the server's wish (clipped), else jittered backoff."""
        if asked is not None:
            return min(asked, self.RETRY_AFTER_CAP)
        ceiling = min(self.BACKOFF_CAP, self.BACKOFF_BASE * 2 ** (attempt - 1))
        return ceiling * (0.5 + random.random() / 2)

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key and self._api_key != "EMPTY" else text


def _content(reply) -> str:
    """The reply text of a chat completion, or Malformed."""
    try:
        return (reply.choices[0].message.content or "").strip()
    except (AttributeError, TypeError, IndexError, KeyError):
        raise Malformed from None


def _first_line(value: object, limit: int = 120) -> str:
    lines = str(value).strip().splitlines()
    return (lines[0] if lines else type(value).__name__)[:limit]
