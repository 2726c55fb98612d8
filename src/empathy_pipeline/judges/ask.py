"""How every LLM judge asks: the chats it formats, the parser of its answer, and one retry rule.

The rating judge (efficient_empathy/rating.py), the data-quality judge (synth_empathy/data_quality.py),
the EPITOME level judge (judges/levels.py) and the pairwise judge (judges/pairwise.py) each keep their
prompt, chat builder and parser beside their step, and ask through `ask_until_parsed`: a question whose
answer must parse (two scores, a 1-3 score, a level, a preference). The first call uses the judge's own
sampling (greedy); a reply that does not parse is asked again up to `retries` times, sampled at
`retry_temperature`, since a greedy retry would repeat the same reply. Each call is seeded by
its chat's key and the retry number (request_seed(seed, "key#retryN")), so a retry draws the
same reply whichever other chats also failed, in whatever batch. After the last retry the reply
stays unparsed: the caller counts it, never guesses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.llm.base import Chat, ChatBackend, Sampling, request_seed

T = TypeVar("T")

# The judge commands' defaults, those of the rate stage too (params.JudgeStage keeps its own copy, so
# that the params of every stage do not depend on this module): one more, sampled, try for a reply
# that did not parse; and the sampling of a short answer (a level, "1" / "2" / "tie"), greedy.
DEFAULT_RETRIES = 1
DEFAULT_RETRY_TEMPERATURE = 0.7
SHORT_ANSWER = Sampling(max_new_tokens=6)

# A reply that opens with a negative number answers no 0-2 or 1-2 question: "-1" is not the answer 1
# after a bullet ("- 1" is a bullet, and reads as 1).
NEGATIVE_ANSWER = re.compile(r"[\s*_]*-\d")


def attempt_key(key: str, attempt: int) -> str:
    """The seed key of one judge call: the chat's key, plus the retry number for retries."""
    return key if attempt == 0 else f"{key}#retry{attempt}"


@dataclass(frozen=True)
class Asked(Generic[T]):
    """Per chat: the last reply, what it parsed to, and how many calls it took (1 = no retry)."""

    replies: list[str]
    parsed: list[T]
    attempts: list[int]

    @property
    def retried(self) -> int:
        return sum(a > 1 for a in self.attempts)

    @property
    def calls(self) -> int:
        return sum(self.attempts)


def ask_until_parsed(backend: ChatBackend, chats: Sequence[Chat], keys: Sequence[str],
                     parse: Callable[[str], T], *, sampling: Sampling, retries: int, retry_temperature: float,
                     what: str, parsed_ok: Callable[[T], bool] = lambda value: value is not None) -> Asked[T]:
    """Ask every chat, then again the ones whose reply `parse`s to something not `parsed_ok`.

    `keys` name the chats (a sample_id, plus e.g. the mechanism or the order shown) and seed
    them; `what` names the caller in errors.
    """
    if len(keys) != len(chats):
        raise PipelineError(f"{what}: {len(keys)} keys for {len(chats)} chats")
    if retries < 0:
        raise PipelineError(f"{what}: retries must be >= 0, got {retries}")
    replies: list[str | None] = [None] * len(chats)
    parsed: list = [None] * len(chats)
    attempts = [0] * len(chats)
    pending = list(range(len(chats)))
    for attempt in range(retries + 1):
        if not pending:
            break
        call = sampling if attempt == 0 else replace(sampling, temperature=retry_temperature)
        seeds = [request_seed(sampling.seed, attempt_key(keys[i], attempt)) for i in pending]
        out = backend.generate([chats[i] for i in pending], call, seeds)
        if len(out) != len(pending):
            raise PipelineError(f"{what}: backend returned {len(out)} replies for {len(pending)} prompts")
        for i, reply in zip(pending, out, strict=True):
            replies[i], parsed[i], attempts[i] = reply, parse(reply), attempt + 1
        pending = [i for i in pending if not parsed_ok(parsed[i])]
    return Asked(replies, parsed, attempts)
