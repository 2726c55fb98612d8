"""Every prompt the pipeline sends, in one place, next to the parser of its reply.

Dialogue layout follows the authors' released training files: the speaker is the `user`, the
listener the `assistant`, turns alternate, and the model writes the listener's next turn.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from .llm.base import Chat

# SmolLM2's chat template inserts its own default system prompt when none is given, and that
# prompt sends the 135M model into emoji loops; an explicit listener instruction avoids it and
# is harmless for larger models.
LISTENER_SYSTEM_PROMPT = (
    "You are an empathetic listener. Reply to the speaker's last message in one or two short "
    "sentences that show you understand how they feel."
)


def dialogue_chat(context: Sequence[str], system_prompt: str | None = LISTENER_SYSTEM_PROMPT) -> Chat:
    """Chat for "write the listener's next turn": context[0] is the speaker, roles alternate."""
    chat: Chat = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for i, turn in enumerate(context):
        chat.append({"role": "user" if i % 2 == 0 else "assistant", "content": turn})
    return chat


# ---- Efficient-Empathy: sensibility / rationality rating (paper §3.2, Figure 5) -----------------
# The paper's Figure 5 prompt is an image we cannot copy; this is a G-Eval-style prompt written from
# its description: rate the listener's response for rationality and sensibility on 0-10 given the
# conversation, and answer in the authors' form "Evaluation Form (scores ONLY):\n- Rationality: N\n-
# Sensibility: N" (the form every item of their released test_results.json carries).

RATING_SYSTEM_PROMPT = (
    "You are a careful annotator of empathetic dialogues. You answer only with the filled-in evaluation form."
)

RATING_PROMPT = """You will be given a conversation between a speaker and a listener, followed by the listener's next response.

Your task is to rate the listener's response on two metrics.

Please make sure you read and understand these instructions carefully.

Evaluation Criteria:

Rationality (0-10) - how much the response engages with the speaker's situation through reasoning: it is logical and coherent with the conversation, asks relevant questions, and offers explanations, perspective or practical suggestions grounded in what the speaker said.

Sensibility (0-10) - how much the response engages with the speaker's feelings: it recognises and acknowledges their emotion, expresses warmth, sympathy or shared joy, and makes the speaker feel understood.

Evaluation Steps:

1. Read the conversation and identify the speaker's situation and feelings.
2. Read the listener's response and judge how well it reasons about the situation. Assign a Rationality score from 0 to 10.
3. Judge how well the response recognises and responds to the speaker's feelings. Assign a Sensibility score from 0 to 10.

Conversation:

{conversation}

Listener's response:

{response}

Evaluation Form (scores ONLY):
- Rationality:
- Sensibility:"""

# Prefill for weak judges: the assistant turn starts with the form, so the model only writes numbers.
RATING_FORM_PREFIX = "Evaluation Form (scores ONLY):\n- Rationality:"


def rating_chat(context: Sequence[str], response: str, prefill: str | None = None) -> Chat:
    """Chat asking for the two scores of `response`; with `prefill` the reply continues that text."""
    conversation = "\n".join(
        f"{'Speaker' if i % 2 == 0 else 'Listener'}: {turn}" for i, turn in enumerate(context)
    )
    chat: Chat = [
        {"role": "system", "content": RATING_SYSTEM_PROMPT},
        {"role": "user", "content": RATING_PROMPT.format(conversation=conversation, response=response)},
    ]
    if prefill:
        chat.append({"role": "assistant", "content": prefill})
    return chat


class RatingScores(NamedTuple):
    sensibility: int | None
    rationality: int | None


# Label, then any decoration (spaces, "**", ":", "="), then an integer, optionally "/10". The stems
# tolerate the judges' typos the authors cleaned by hand ("Rationalality") and any case.
_SCORE_TAIL = r"\s*[*_]*\s*[:=]?\s*[*_]*\s*(-?\d+(?:\.\d+)?)(?:\s*/\s*(\d+))?"
_RATIONALITY_RE = re.compile(r"\brati\w*" + _SCORE_TAIL, re.IGNORECASE)
_SENSIBILITY_RE = re.compile(r"\bsens\w*" + _SCORE_TAIL, re.IGNORECASE)


def _score(pattern: re.Pattern, text: str) -> int | None:
    match = pattern.search(text)
    if match is None:
        return None
    number, scale = match.group(1), match.group(2)
    if scale is not None and scale != "10":
        return None  # "4/5" is another scale: not a 0-10 score
    if "." in number:
        return None  # the form asks for whole scores; a fraction is not one
    value = int(number)
    return value if 0 <= value <= 10 else None


def parse_rating(text: str) -> RatingScores:
    """Both scores from a judge reply; a score that is missing or outside 0..10 is None.

    Order-free (either line may come first), ignores text around the form; the first occurrence of
    each label wins.
    """
    return RatingScores(sensibility=_score(_SENSIBILITY_RE, text), rationality=_score(_RATIONALITY_RE, text))


# ---- Synth-Empathy: multi-round generation from an ED seed (paper §3.1, Figure 6) ------------------
# Figure 6 survives only as garbled text; both variants are written by us from it. Each gives the
# generator one ED sample (context, response, emotion) and asks for at least three rounds of
# completely new emotional context, each with an empathetic response of at most 30 words, that
# continue one another, in a "Round N / Context: / Response:" layout that `parse_rounds` reads.
# Prompt 1 states the layout as the paper's bare "Round:/Context:/Response:" template; Prompt 2
# puts the emotion first and shows a filled-in layout example (a made-up dialogue about a
# topic unrelated to any seed), which small models need to keep the layout.

GENERATION_SYSTEM_PROMPT = (
    "You write short, realistic conversations between a speaker who shares a feeling and an "
    "empathetic listener. You follow the requested layout exactly."
)

GENERATION_PROMPT_1 = """Here is a conversation from a dataset of empathetic dialogues. The speaker feels {emotion}.

Original Context:
{context}
Original Response: {response}

Please generate at least three rounds of completely new emotional context and corresponding empathetic response. The newly generated multi-round context should satisfy semantic continuity. The response should be empathetic and should not exceed {max_words} words.

Write every round in this layout:

Round 1
Context: <what the speaker says>
Response: <the listener's empathetic reply>"""

GENERATION_PROMPT_2 = """Original Context:
{context}
Original Response: {response}

The speaker feels {emotion}. Please generate at least three rounds of completely new emotional context and corresponding empathetic response. Each round continues the conversation of the round before it. The response should be empathetic and should not exceed {max_words} words.

Use exactly this layout (an example about a different topic):

Round 1
Context: I finally finished the marathon I trained for all year.
Response: That is amazing! All those early mornings paid off. How do you feel now?
Round 2
Context: Exhausted, but so proud. My family was waiting at the finish line.
Response: Having them there must have made it even more special. You earned every step.
Round 3
Context: I am already thinking about signing up for the next one.
Response: I love that energy! Give your body some rest first, then go for it.

Now write your new conversation about feeling {emotion}:

Round 1
Context:"""

GENERATION_PROMPTS = {1: GENERATION_PROMPT_1, 2: GENERATION_PROMPT_2}


def generation_chat(context: Sequence[str], response: str, emotion: str, variant: int,
                    max_words: int = 30) -> Chat:
    """Chat asking for >= 3 new rounds seeded by one ED sample, in the layout of `variant` (1 or 2)."""
    template = GENERATION_PROMPTS.get(int(variant))
    if template is None:
        from .errors import PipelineError

        raise PipelineError(f"generate.prompt_variant: unknown variant {variant!r} (use 1 or 2)")
    lines = "\n".join(f"{'Speaker' if i % 2 == 0 else 'Listener'}: {turn}" for i, turn in enumerate(context))
    prompt = template.format(context=lines, response=response, emotion=emotion or "some emotion",
                             max_words=max_words)
    return [{"role": "system", "content": GENERATION_SYSTEM_PROMPT}, {"role": "user", "content": prompt}]


class ParsedRounds(NamedTuple):
    """`rounds` as (context, response) pairs when the reply is usable; else `reject_reason` says why."""

    rounds: list[tuple[str, str]]
    reject_reason: str | None
    dropped_tail: bool = False  # the last round was cut off (no response or unfinished) and left out


REJECT_EMPTY = "empty"
REJECT_NO_ROUNDS = "no_rounds"
REJECT_MISSING_CONTEXT = "missing_context"
REJECT_MISSING_RESPONSE = "missing_response"
REJECT_RESPONSE_TOO_LONG = "response_too_long"
REJECT_TOO_FEW_ROUNDS = "too_few_rounds"

# A round header on its own line: "Round 2", "**Round 2:**", "### Round 2", "Round:" (Prompt 1's bare form).
_ROUND_HEADER_RE = re.compile(r"^[\s*#_>-]*round\b\s*\d*\s*[:.)]?[\s*_]*$", re.IGNORECASE | re.MULTILINE)
# A field label at the start of a line, with markdown decoration: "Context:", "**Response:**", "- Context :".
_LABEL_RE = re.compile(r"^[\s*#_>-]*(context|response)[\s*_]*:[\s*_]*", re.IGNORECASE | re.MULTILINE)
_SENTENCE_END = (".", "!", "?", '"', "'", ")", "…")


def _clean_field(text: str) -> str:
    return " ".join(text.split()).strip(' "*_')


def _split_round(block: str) -> tuple[str | None, str | None]:
    """Context and response of one round block; None where the label is missing or the text empty."""
    labels = list(_LABEL_RE.finditer(block))
    fields: dict[str, str] = {}
    for i, label in enumerate(labels):
        name = label.group(1).lower()
        end = labels[i + 1].start() if i + 1 < len(labels) else len(block)
        value = block[label.end():end]
        if name == "response":
            # The response is the first paragraph: commentary after a blank line is not the listener's.
            value = re.split(r"\n\s*\n", value.strip(), maxsplit=1)[0]
        fields.setdefault(name, _clean_field(value))
    return fields.get("context") or None, fields.get("response") or None


def parse_rounds(text: str, max_response_words: int = 30, min_rounds: int = 3,
                 prefix: str = "") -> ParsedRounds:
    """Rounds of a generator reply in the `Round N / Context: / Response:` layout.

    `prefix` is the start of the layout that the prompt already wrote (Prompt 2 ends with
    "Round 1\\nContext:"), put back before parsing. A final round that was cut off by the token limit
    (no response yet, or a response that stops mid-sentence) is left out and flagged `dropped_tail`;
    any other incomplete round, a response over `max_response_words` words, or fewer than
    `min_rounds` complete rounds rejects the whole reply: its rounds continue one another, so a
    broken round breaks the conversation.
    """
    if not text or not text.strip():
        return ParsedRounds([], REJECT_EMPTY)
    text = prefix + text
    headers = list(_ROUND_HEADER_RE.finditer(text))
    if not headers:
        return ParsedRounds([], REJECT_NO_ROUNDS)
    blocks = [text[h.end():(headers[i + 1].start() if i + 1 < len(headers) else len(text))]
              for i, h in enumerate(headers)]
    rounds: list[tuple[str | None, str | None]] = [_split_round(b) for b in blocks]
    # Trailing empty headers ("Round 4" and nothing after it) are the prompt's skeleton, not rounds.
    while rounds and rounds[-1] == (None, None):
        rounds.pop()
    if not rounds:
        return ParsedRounds([], REJECT_MISSING_CONTEXT)
    dropped_tail = False
    last_context, last_response = rounds[-1]
    if last_context and (last_response is None or not last_response.endswith(_SENTENCE_END)):
        rounds.pop()
        dropped_tail = True
    for context, response in rounds:
        if context is None:
            return ParsedRounds([], REJECT_MISSING_CONTEXT, dropped_tail)
        if response is None:
            return ParsedRounds([], REJECT_MISSING_RESPONSE, dropped_tail)
        if len(response.split()) > max_response_words:
            return ParsedRounds([], REJECT_RESPONSE_TOO_LONG, dropped_tail)
    if len(rounds) < min_rounds:
        return ParsedRounds([], REJECT_TOO_FEW_ROUNDS, dropped_tail)
    return ParsedRounds([(c, r) for c, r in rounds], None, dropped_tail)  # type: ignore[misc]
