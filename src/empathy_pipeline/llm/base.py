"""The one interface every text-generation backend implements: chats in, texts out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# A chat is the OpenAI message list: [{"role": "system"|"user"|"assistant", "content": str}, ...]
Chat = list[dict[str, str]]


@dataclass(frozen=True)
class Sampling:
    """Decoding settings. temperature == 0 means greedy (deterministic) decoding."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    @classmethod
    def from_params(cls, p) -> Sampling:
        """From a params section that has max_new_tokens, temperature, top_p and seed."""
        return cls(max_new_tokens=p.max_new_tokens, temperature=p.temperature, top_p=p.top_p, seed=p.seed)


class ChatBackend(Protocol):
    name: str

    def generate(self, chats: Sequence[Chat], sampling: Sampling) -> list[str]:
        """Return one reply per chat, in order. Must not drop or reorder items."""
        ...
