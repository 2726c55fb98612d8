"""The one interface every text-generation backend implements: chats in, texts out."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from empathy_pipeline.core.errors import PipelineError

# A chat is the OpenAI message list: [{"role": "system"|"user"|"assistant", "content": str}, ...]
Chat = list[dict[str, str]]


def prompt_chat(system: str, user: str, prefill: str | None = None) -> Chat:
    """The one-question chat every judge and generator step sends: a system prompt, the request, and
    optionally the start of the assistant's reply (`prefill`), which the model continues."""
    chat: Chat = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return chat + [{"role": "assistant", "content": prefill}] if prefill else chat


def transcript(context: Sequence[str]) -> str:
    """An ED dialogue as the prompts quote it: one turn per line, "Speaker: " / "Listener: " in turn,
    the speaker first."""
    return "\n".join(f"{'Speaker' if i % 2 == 0 else 'Listener'}: {turn}" for i, turn in enumerate(context))


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


SEED_LIMIT = 2**31  # below every backend's limit (torch, vLLM and OpenAI-style servers take any int32)
# Names the seeding scheme in the shard fingerprints of sampled work, so shards drawn under an
# earlier scheme (one seed per shard or batch) are redone, not mixed with new ones. Greedy
# fingerprints leave it out: greedy replies never depended on seeds.
SEEDING = {"seeding": "request_seed(stage seed, sample key)"}


def request_seed(seed: int, key: str) -> int:
    """The sampling seed of one request: a stable function of the stage seed and the sample's key.

    The key names what is sampled (a sample_id, plus e.g. a completion or retry number), never a
    position in a call: the same sample gets the same seed whatever the batch, shard or order it is
    asked in, so shard_size and batch_size do not change sampled replies. sha256, not hash(): the
    same value in every process and on every machine.
    """
    digest = hashlib.sha256(f"{int(seed)}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % SEED_LIMIT


def seeds_for(chats: Sequence[Chat], sampling: Sampling, seeds: Sequence[int] | None = None) -> list[int]:
    """One sampling seed per chat: `seeds` as given (checked), or by position in the call when None.

    The positional default is for callers that have no sample identities (ad-hoc calls, tests);
    the stages pass request_seed(stage seed, sample key) per chat. Every backend's generate calls this.
    """
    if seeds is None:
        return [request_seed(sampling.seed, str(i)) for i in range(len(chats))]
    if len(seeds) != len(chats):
        raise PipelineError(f"llm generate: {len(seeds)} seeds given for {len(chats)} chats")
    return [int(s) for s in seeds]


class ChatBackend(Protocol):
    name: str

    def generate(self, chats: Sequence[Chat], sampling: Sampling, seeds: Sequence[int] | None = None) -> list[str]:
        """Return one reply per chat, in order. Must not drop or reorder items.

        `seeds` gives each chat its own sampling seed (see seeds_for for the default): a sampled reply
        depends on its chat, the sampling settings and its seed only, not on the other chats in the
        call. Greedy decoding (temperature 0) ignores seeds.
        """
        ...
