"""Any OpenAI-compatible chat server (`vllm serve`, hosted APIs): concurrent, retried, timed out."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from ..errors import PipelineError
from ..progress import progress
from .base import Chat, Sampling


class OpenAIBackend:
    name = "openai"
    OPTIONS = ("base_url_env", "api_key_env", "concurrency", "max_retries", "timeout", "show_progress")

    def __init__(self, model: str, base_url_env: str = "OPENAI_BASE_URL", api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, max_retries: int = 3, timeout: float = 60, show_progress: bool = True):
        try:
            import openai  # noqa: F401
        except ImportError:
            raise PipelineError("llm.backend 'openai' needs the openai package: pip install openai") from None
        self.model = model
        self.base_url = os.environ.get(base_url_env) or None
        self.api_key = os.environ.get(api_key_env)
        if not self.api_key:
            if not self.base_url:
                raise PipelineError(f"llm.backend 'openai': set {api_key_env} (and {base_url_env} for a local server)")
            self.api_key = "EMPTY"  # local servers such as `vllm serve` accept any key
        self.concurrency = int(concurrency)
        self.max_retries = int(max_retries)
        self.timeout = float(timeout)
        self.show_progress = show_progress

    def generate(self, chats: Sequence[Chat], sampling: Sampling) -> list[str]:
        return asyncio.run(self._generate_all(chats, sampling))

    async def _generate_all(self, chats: Sequence[Chat], sampling: Sampling) -> list[str]:
        import openai

        # The client retries connection errors, 429s and 5xx with exponential backoff itself.
        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key,
                                    max_retries=self.max_retries, timeout=self.timeout)
        limit = asyncio.Semaphore(self.concurrency)
        bar = progress(None, desc="generate", total=len(chats), enabled=self.show_progress)

        async def one(i: int, chat: Chat) -> str:
            async with limit:
                try:
                    reply = await client.chat.completions.create(
                        model=self.model, messages=chat, max_tokens=sampling.max_new_tokens,
                        temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed + i,
                    )
                except openai.APIError as exc:
                    raise PipelineError(f"openai backend, request {i}: {type(exc).__name__}: "
                                        f"{str(exc).splitlines()[0]}") from None
                bar.update(1)
                return (reply.choices[0].message.content or "").strip()

        try:
            return list(await asyncio.gather(*(one(i, c) for i, c in enumerate(chats))))
        finally:
            bar.close()
            await client.close()
