"""Every prompt the pipeline sends, in one place, next to the parser of its reply.

Dialogue layout follows the authors' released training files: the speaker is the `user`, the
listener the `assistant`, turns alternate, and the model writes the listener's next turn.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # annotations only: the prompts need no backend
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
# The trailing space matters: after "Rationality:" SmolLM2-135M copies the empty form line by line
# (1 of 30 replies parsed); after "Rationality: " it writes a number (30 of 30 parsed).
RATING_FORM_PREFIX = "Evaluation Form (scores ONLY):\n- Rationality: "


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
# tolerate the judges' typos the authors cleaned by hand ("Rationalality") and any case, but not
# other words ("Rating 0-5" is not a rationality score).
_SCORE_TAIL = r"\s*[*_]*\s*[:=]?\s*[*_]*\s*(-?\d+(?:\.\d+)?)(?:\s*/\s*(\d+))?"
_RATIONALITY_RE = re.compile(r"\bration\w*" + _SCORE_TAIL, re.IGNORECASE)
_SENSIBILITY_RE = re.compile(r"\bsensib\w*" + _SCORE_TAIL, re.IGNORECASE)


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
# Prompt 1 asks for semantic continuity and gives the paper's bare "Round/Context/Response" template;
# Prompt 2 is the paper's shorter variant with the numbered skeleton "Round 1 ... Round 4".
# Both are sent as a one-shot chat: a made-up seed (ours, not from ED) with a filled-in answer
# first, then the real seed, and the assistant turn is prefilled with "Round 1\nContext:". Without
# the shot and the prefill SmolLM2-135M almost never keeps the layout; larger models do not need
# them but are not hurt. A backend that cannot continue a prefill (a plain OpenAI server) opens a
# new turn instead, which `parse_rounds` also reads.

GENERATION_SYSTEM_PROMPT = (
    "You write short, realistic conversations between a speaker who shares a feeling and an "
    "empathetic listener. You follow the requested layout exactly."
)

GENERATION_PROMPT_1 = """Original Context:
{context}
Original Response: {response}

The speaker feels {emotion}. Please generate at least three rounds of completely new emotional context and corresponding empathetic response. The newly generated multi-round context should satisfy semantic continuity. The response should be empathetic and should not exceed {max_words} words.

Round:
Context:
Response:"""

GENERATION_PROMPT_2 = """Original Context:
{context}
Original Response: {response}

You are an empathetic listener and the speaker feels {emotion}. Please generate at least three rounds of completely new emotional context and corresponding empathetic response. The response should be empathetic and should not exceed {max_words} words.

Round 1

Round 2

Round 3

Round 4"""

GENERATION_PROMPTS = {1: GENERATION_PROMPT_1, 2: GENERATION_PROMPT_2}

# The one-shot example, written by us. Its topic is unlike the seeds' so copying it is visible.
_SHOT_SEED = (["my little sister got into the college she dreamed of ."], "that is wonderful news ! you must be so happy for her .", "proud")
_SHOT_ROUNDS = [
    ("My neighbour's dog ran away last night and she is heartbroken. I keep wondering how to help her.",
     "That is kind of you to care so much. Maybe you could help her put up posters around the block?"),
    ("We put up twenty posters this morning, but nobody has called yet. She barely slept.",
     "Waiting without news is so hard. Staying close to her right now probably means a lot to her."),
    ("A family two streets away just called. They found him hiding in their garden!",
     "What a relief! I am so glad he is safe. Your support really helped her through it."),
]
GENERATION_PREFILL = "Round 1\nContext:"


def format_rounds(rounds: Sequence[tuple[str, str]]) -> str:
    """Rounds in the layout that `parse_rounds` reads."""
    return "\n".join(f"Round {i}\nContext: {c}\nResponse: {r}" for i, (c, r) in enumerate(rounds, 1))


def _generation_request(template: str, context: Sequence[str], response: str, emotion: str, max_words: int) -> str:
    lines = "\n".join(f"{'Speaker' if i % 2 == 0 else 'Listener'}: {turn}" for i, turn in enumerate(context))
    return template.format(context=lines, response=response, emotion=emotion or "some emotion", max_words=max_words)


def generation_chat(context: Sequence[str], response: str, emotion: str, variant: int,
                    max_words: int = 30) -> Chat:
    """One-shot chat asking for >= 3 new rounds seeded by one ED sample, with Prompt `variant` (1 or 2).

    The last message is the assistant prefill GENERATION_PREFILL; pass it to `parse_rounds` as `prefix`.
    """
    template = GENERATION_PROMPTS.get(int(variant))
    if template is None:
        from .errors import PipelineError

        raise PipelineError(f"generate.prompt_variant: unknown variant {variant!r} (use 1 or 2)")
    return [
        {"role": "system", "content": GENERATION_SYSTEM_PROMPT},
        {"role": "user", "content": _generation_request(template, *_SHOT_SEED, max_words)},
        {"role": "assistant", "content": format_rounds(_SHOT_ROUNDS)},
        {"role": "user", "content": _generation_request(template, context, response, emotion, max_words)},
        {"role": "assistant", "content": GENERATION_PREFILL},
    ]


class ParsedRounds(NamedTuple):
    """`rounds` as (context, response) pairs when the reply is usable; else `reject_reason` says why."""

    rounds: list[tuple[str, str]]
    reject_reason: str | None
    dropped_tail: bool = False  # the last round was cut off (no response or unfinished) and left out


REJECT_EMPTY = "empty"                          # nothing generated
REJECT_NO_ROUNDS = "no_rounds"                  # no "Round N" header at all: not the layout
REJECT_MISSING_CONTEXT = "missing_context"      # a round without a "Context:" text
REJECT_MISSING_RESPONSE = "missing_response"    # a round without a "Response:" text
REJECT_MALFORMED_ROUND = "malformed_round"      # a round with labels repeated or out of order
REJECT_RESPONSE_TOO_LONG = "response_too_long"  # a response over generate.max_response_words words
REJECT_TOO_FEW_ROUNDS = "too_few_rounds"        # fewer than three complete rounds

# A round header on its own line: "Round 2", "**Round 2:**", "### Round 2", "Round:" (Prompt 1's bare form).
_ROUND_HEADER_RE = re.compile(r"^[\s*#_>-]*round\b\s*\d*\s*[:.)]?[\s*_]*$", re.IGNORECASE | re.MULTILINE)
# A field label at the start of a line, with markdown decoration: "Context:", "**Response:**", "- Context :".
_LABEL_RE = re.compile(r"^[\s*#_>-]*(context|response)[\s*_]*:[\s*_]*", re.IGNORECASE | re.MULTILINE)
_SENTENCE_END = (".", "!", "?", '"', "'", ")", "…")


def _clean_field(text: str) -> str:
    return " ".join(text.split()).strip(' "*_')


def _split_round(block: str) -> tuple[str | None, str | None, bool]:
    """(context, response, well_formed) of one round block; None where a label is missing or empty.

    well_formed is False when the labels are not exactly one Context followed by one Response.
    """
    labels = list(_LABEL_RE.finditer(block))
    names = [label.group(1).lower() for label in labels]
    fields: dict[str, str] = {}
    for i, label in enumerate(labels):
        end = labels[i + 1].start() if i + 1 < len(labels) else len(block)
        value = block[label.end():end]
        if names[i] == "response":
            # The response is the first paragraph: commentary after a blank line is not the listener's.
            value = re.split(r"\n\s*\n", value.strip(), maxsplit=1)[0]
        fields.setdefault(names[i], _clean_field(value))
    well_formed = names in (["context", "response"], ["context"], ["response"], [])
    return fields.get("context") or None, fields.get("response") or None, well_formed


def parse_rounds(text: str, max_response_words: int = 30, min_rounds: int = 3,
                 prefix: str = "") -> ParsedRounds:
    """Rounds of a generator reply in the `Round N / Context: / Response:` layout.

    `prefix` is the start of the layout that the chat prefilled (GENERATION_PREFILL); it is put
    back unless the reply opens with a layout of its own (a backend that ignored the prefill).
    A final round cut off by the token limit (no response yet, or a response that stops
    mid-sentence) is left out and flagged `dropped_tail`. Any other incomplete or malformed round,
    a response over `max_response_words` words, or fewer than `min_rounds` complete rounds rejects
    the whole reply: the rounds continue one another, so one broken round breaks the conversation.
    """
    if not text or not text.strip():
        return ParsedRounds([], REJECT_EMPTY)
    if prefix and not (_ROUND_HEADER_RE.match(text.lstrip().splitlines()[0]) or _LABEL_RE.match(text.lstrip())):
        text = prefix + " " + text.lstrip()
    headers = list(_ROUND_HEADER_RE.finditer(text))
    if not headers:
        return ParsedRounds([], REJECT_NO_ROUNDS)
    blocks = [text[h.end():(headers[i + 1].start() if i + 1 < len(headers) else len(text))]
              for i, h in enumerate(headers)]
    # Trailing empty headers ("Round 4" and nothing after it) are the prompt's skeleton, not rounds.
    while blocks and not blocks[-1].strip():
        blocks.pop()
    rounds = [_split_round(b) for b in blocks]
    if not rounds:
        return ParsedRounds([], REJECT_MISSING_CONTEXT)
    dropped_tail = False
    last_context, last_response, last_well_formed = rounds[-1]
    cut_off = last_response is None or not last_response.endswith(_SENTENCE_END)
    if len(rounds) > 1 and last_context and last_well_formed and cut_off:
        rounds.pop()
        dropped_tail = True
    for context, response, well_formed in rounds:
        if not well_formed:
            return ParsedRounds([], REJECT_MALFORMED_ROUND, dropped_tail)
        if context is None:
            return ParsedRounds([], REJECT_MISSING_CONTEXT, dropped_tail)
        if response is None:
            return ParsedRounds([], REJECT_MISSING_RESPONSE, dropped_tail)
        if len(response.split()) > max_response_words:
            return ParsedRounds([], REJECT_RESPONSE_TOO_LONG, dropped_tail)
    if len(rounds) < min_rounds:
        return ParsedRounds([], REJECT_TOO_FEW_ROUNDS, dropped_tail)
    return ParsedRounds([(c, r) for c, r, _ in rounds], None, dropped_tail)  # type: ignore[misc]


# ---- Synth-Empathy: data-quality judge (paper §3.4, Figure 4) --------------------------------------
# Figure 4 gives the frame of the three G-Eval-style prompts (task, steps, "Evaluation Form (scores
# ONLY)") but its rubrics did not survive extraction; the criteria below are written by us. Each
# criterion is scored 1, 2 or 3 in its own request. The assistant turn is prefilled with the form
# line ("- Coherence:") so that even a 135M judge answers with a number.

JUDGE_SYSTEM_PROMPT = "You are a careful annotator of dialogues. You answer only with the filled-in evaluation form."

JUDGE_CRITERIA = {
    "coherence": (
        "Coherence (1-3) - does the response follow from the conversation history?\n"
        "- 1: the response ignores or contradicts what was said, or makes no sense after it.\n"
        "- 2: the response is related to the conversation but drifts, is vague or misses its main point.\n"
        "- 3: the response follows logically from the conversation and stays on its topic."
    ),
    "naturalness": (
        "Naturalness (1-3) - does the response sound like something a person would say?\n"
        "- 1: robotic, broken, repetitive or very awkward.\n"
        "- 2: mostly natural, with some awkward or unusual phrasing.\n"
        "- 3: a fluent reply a person could give in this conversation."
    ),
    "empathy": (
        "Empathy (1-3) - does the response understand and care about the speaker's feelings?\n"
        "- 1: ignores the speaker's feelings, or is dismissive or inappropriate.\n"
        "- 2: acknowledges the feelings, but in a generic or shallow way.\n"
        "- 3: clearly recognises how the speaker feels and responds with warmth and care."
    ),
}

_JUDGE_STEPS = {
    "coherence": (
        "1. Read the conversation between the two individuals.\n"
        "2. Read the potential response for the next turn in the conversation.\n"
        "3. Evaluate the response based on its coherence, using the provided criteria.\n"
        "4. Assign a rating score of 1, 2, or 3 based on the evaluation."
    ),
    "naturalness": (
        "1. Read the conversation between the two individuals.\n"
        "2. Read the potential response for the next turn in the conversation.\n"
        "3. Evaluate the response based on its naturalness, using the provided criteria.\n"
        "4. Assign a rating score of 1, 2, or 3 based on the evaluation."
    ),
    "empathy": (
        "1. Read the conversation history.\n"
        "2. Read the potential response.\n"
        "3. Evaluate the empathy of the response based on the conversation history.\n"
        "4. Assign a score of 1, 2, or 3 for empathy."
    ),
}

JUDGE_PROMPT = """You will be given a conversation between two individuals. You will then be given one potential response for the next turn in the conversation.

Your task is to rate the responses on one metric.

Please make sure you read and understand these instructions carefully. Please keep this document open while reviewing, and refer to it as needed.

Evaluation Criteria:

{criteria}

Evaluation Steps:

{steps}

Example:

Conversation History:
{conversation}

Response:

{response}

Evaluation Form (scores ONLY):
- {label}:"""


def judge_prefill(criterion: str) -> str:
    return f"- {criterion.capitalize()}:"


def judge_chat(criterion: str, context: Sequence[str], response: str) -> Chat:
    """Chat asking for one 1-3 score of `response` on `criterion` (coherence, naturalness or empathy)."""
    if criterion not in JUDGE_CRITERIA:
        from .errors import PipelineError

        raise PipelineError(f"judge: unknown criterion {criterion!r} (use {', '.join(JUDGE_CRITERIA)})")
    conversation = "\n".join(f"{'Speaker' if i % 2 == 0 else 'Listener'}: {turn}" for i, turn in enumerate(context))
    prompt = JUDGE_PROMPT.format(criteria=JUDGE_CRITERIA[criterion], steps=_JUDGE_STEPS[criterion],
                                 conversation=conversation, response=response, label=criterion.capitalize())
    return [
        {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": judge_prefill(criterion)},
    ]


_JUDGE_NUMBER = r"(\d+(?:\.\d+)?)(?:\s*/\s*(\d+))?"


def parse_judge_score(reply: str, criterion: str) -> int | None:
    """The 1-3 score in a judge reply, or None when there is none (the caller counts those).

    The reply normally continues the prefilled "- Criterion:" line, so it starts with the number;
    a reply that restarts the form ("- Empathy: 2") is read by its label. "N/3" is accepted, other
    scales, fractions and numbers outside 1..3 are not.
    """
    if not reply:
        return None
    labelled = re.search(rf"\b{re.escape(criterion)}\w*\s*[*_]*\s*[:=]\s*[*_]*\s*" + _JUDGE_NUMBER, reply, re.IGNORECASE)
    match = labelled or re.match(r"[\s*_:=-]*" + _JUDGE_NUMBER + r"(?!\w)", reply)
    if match is None:
        return None
    number, scale = match.group(1), match.group(2)
    if (scale is not None and scale != "3") or "." in number:
        return None
    value = int(number)
    return value if 1 <= value <= 3 else None


# ---- EPITOME: one empathy mechanism of a reply, levels 0/1/2 (Sharma et al. 2020) ------------------
# The codebook is written by us from the paper's description of its three mechanisms (none of the
# annotators' instructions is copied). One request per (post, reply, mechanism); the assistant turn
# is prefilled with "Level: " so that even a 135M judge answers with a number (the trailing space
# matters for SmolLM2, as with RATING_FORM_PREFIX).

LEVEL_SYSTEM_PROMPT = (
    "You are a careful annotator of empathy in online mental-health support. You answer only with the level."
)

LEVEL_MECHANISMS = {
    "ER": (
        "Emotional Reactions - does the reply show feelings the replier has after reading the post, "
        "such as warmth, compassion, concern or sympathy for the seeker?\n"
        "0 - no such feeling is expressed.\n"
        "1 - weak: the feeling is only hinted at, e.g. general comfort or reassurance (\"It will get better\", \"Sending hugs\").\n"
        "2 - strong: the replier states their own feeling outright (\"I am so sorry you are going through this\")."
    ),
    "IP": (
        "Interpretations - does the reply show that the replier understands the feelings or experiences "
        "the seeker describes, as inferred from the post?\n"
        "0 - no understanding is communicated.\n"
        "1 - weak: a generic claim of understanding (\"I know how you feel\", \"I get it\").\n"
        "2 - strong: names the specific feeling or situation inferred from the post (\"Being ignored like that "
        "must feel humiliating\"), or tells of a similar experience of the replier's own."
    ),
    "EX": (
        "Explorations - does the reply ask about feelings or experiences of the seeker that the post does "
        "not state, to understand them better?\n"
        "0 - no such question or invitation.\n"
        "1 - weak: a generic question (\"What happened?\", \"Do you want to talk about it?\").\n"
        "2 - strong: a specific question about the seeker's feelings or situation (\"Has it felt lonely since you moved?\")."
    ),
}

LEVEL_PROMPT = """You will be given a post by a person seeking support and one reply to it.

Your task is to rate the reply on one empathy mechanism, with a level of 0, 1 or 2.

Mechanism and levels:

{mechanism}

Seeker's post:

{post}

Reply:

{response}

Answer with the level only (0, 1 or 2)."""

LEVEL_PREFILL = "Level: "


def level_chat(mechanism: str, post: str, response: str, prefill: str | None = LEVEL_PREFILL) -> Chat:
    """Chat asking for the 0-2 level of `response` (to seeker `post`) on mechanism ER, IP or EX."""
    if mechanism not in LEVEL_MECHANISMS:
        from .errors import PipelineError

        raise PipelineError(f"level judge: unknown mechanism {mechanism!r} (use {', '.join(LEVEL_MECHANISMS)})")
    chat: Chat = [
        {"role": "system", "content": LEVEL_SYSTEM_PROMPT},
        {"role": "user", "content": LEVEL_PROMPT.format(mechanism=LEVEL_MECHANISMS[mechanism], post=post,
                                                        response=response)},
    ]
    if prefill:
        chat.append({"role": "assistant", "content": prefill})
    return chat


# A level is 0, 1 or 2, optionally "/2"; a fraction, another scale or another number is not one.
_LEVEL_NUMBER = r"(\d+(?:\.\d+)?)(?:\s*/\s*(\d+))?(?![\w.]*\d)"
_LEVEL_WORDS = {"none": 0, "weak": 1, "strong": 2}
# "-1" is a negative number, not the answer 1 after a bullet ("- 1" is a bullet).
_NEGATIVE = re.compile(r"[\s*_]*-\d")


def parse_level(reply: str) -> int | None:
    """The 0-2 level in a judge reply, or None when there is none (the caller counts those, never guesses).

    The reply normally continues the prefilled "Level: ", so it starts with the number ("2",
    "**1**", "0 - none"); a reply that restarts the form is read by its label ("Level: 2") and one
    that answers in the codebook's words by its first word ("strong"). Anything else is None.
    """
    if not reply or not reply.strip() or _NEGATIVE.match(reply):
        return None
    labelled = re.search(r"\blevel\s*[*_]*\s*[:=]\s*[*_]*\s*" + _LEVEL_NUMBER, reply, re.IGNORECASE)
    match = labelled or re.match(r"[\s*_:=\"'(-]*" + _LEVEL_NUMBER + r"(?![A-Za-z])", reply)
    if match is None:
        word = re.match(r"[\s*_:=\"'(-]*([A-Za-z]+)", reply)
        return _LEVEL_WORDS.get(word.group(1).lower()) if word else None
    number, scale = match.group(1), match.group(2)
    if (scale is not None and scale != "2") or "." in number:
        return None
    value = int(number)
    return value if 0 <= value <= 2 else None


# ---- pairwise preference: which of two replies is better on one criterion --------------------------
# The four criteria of Synth-Empathy's human A/B test (§4), defined by us from the paper's one-line
# descriptions. The judge sees the conversation and "Response 1" / "Response 2" and answers 1, 2 or
# tie; pairwise.py asks each pair in both orders, so a preference for a position cancels out.

PAIRWISE_SYSTEM_PROMPT = (
    "You are a careful, impartial judge of dialogue responses. You answer only with 1, 2 or tie."
)

PAIRWISE_CRITERIA = {
    "coherence": "Coherence - which response fits the conversation better: it makes sense as the listener's "
                 "next turn and matches what a good reply would say.",
    "empathy": "Empathy - which response better grasps the speaker's situation and feelings and shows "
               "appropriate concern or care.",
    "informativeness": "Informativeness - which response carries more relevant content (specific remarks, "
                       "questions or suggestions rather than generic filler).",
    "continuity": "Continuity - which response better keeps the conversation flowing, so that the speaker "
                  "can naturally go on talking.",
}

PAIRWISE_PROMPT = """You will be given a conversation between a speaker and a listener, followed by two candidate responses for the listener's next turn.

Your task is to compare the two responses on one criterion. Ignore their length and their order.

Criterion:

{criterion}

Conversation:

{conversation}

Response 1:

{first}

Response 2:

{second}

Which response is better on this criterion? Answer with "1", "2", or "tie" if they are equally good."""

PAIRWISE_PREFILL = "Better response: "

PREFER_FIRST, PREFER_SECOND, PREFER_TIE = "1", "2", "tie"


def pairwise_chat(criterion: str, context: Sequence[str], first: str, second: str,
                  prefill: str | None = PAIRWISE_PREFILL) -> Chat:
    """Chat asking which of `first` (Response 1) and `second` (Response 2) is better on `criterion`."""
    if criterion not in PAIRWISE_CRITERIA:
        from .errors import PipelineError

        raise PipelineError(f"pairwise judge: unknown criterion {criterion!r} (use {', '.join(PAIRWISE_CRITERIA)})")
    conversation = "\n".join(f"{'Speaker' if i % 2 == 0 else 'Listener'}: {turn}" for i, turn in enumerate(context))
    chat: Chat = [
        {"role": "system", "content": PAIRWISE_SYSTEM_PROMPT},
        {"role": "user", "content": PAIRWISE_PROMPT.format(criterion=PAIRWISE_CRITERIA[criterion],
                                                           conversation=conversation, first=first, second=second)},
    ]
    if prefill:
        chat.append({"role": "assistant", "content": prefill})
    return chat


_PREFERENCE_ANSWER = r"(?:response\s*|#\s*)?([12])(?![\w.]*\d)(?![A-Za-z])"
_TIE_WORDS = ("tie", "equal", "equally", "both", "neither", "same")


def parse_preference(reply: str) -> str | None:
    """PREFER_FIRST, PREFER_SECOND or PREFER_TIE from a judge reply, or None (counted, never a win).

    The reply normally continues the prefilled "Better response: ", so it starts with the answer
    ("1", "Response 2", "**tie**", "Both are equally good"); a reply that restarts the form is read
    by its label ("Better response: 2", "Answer: tie"). Anything else, including a reply that only
    discusses both responses, is None.
    """
    if not reply or not reply.strip() or _NEGATIVE.match(reply):
        return None
    labelled = re.search(r"\b(?:better\s+response|answer|verdict|winner)\s*[*_]*\s*[:=]\s*[*_\"']*\s*"
                         r"(tie\b|" + _PREFERENCE_ANSWER + ")", reply, re.IGNORECASE)
    head = labelled or re.match(r"[\s*_:=\"'(-]*(" + r"|".join(rf"{w}\b" for w in _TIE_WORDS) + "|"
                                + _PREFERENCE_ANSWER + ")", reply, re.IGNORECASE)
    if head is None:
        return None
    if head.group(2) is not None:
        return PREFER_FIRST if head.group(2) == "1" else PREFER_SECOND
    return PREFER_TIE


# ---- SYNTHEMPATHY: situation -> stories -> explanation -> response (Chen, Shin & Hirschberg 2025) ---
# The corpus paper brainstorms many first-person stories per real-life situation, removes near
# duplicates, rewrites each story as the first-person explanation its narrator would give, and has
# the LLM answer that explanation empathetically; its corpus is the (explanation, response) pairs.
# Its prompts are not reproduced here: these three are written by us from that description, with
# the ED situation (`prompt` in the CSVs) and its emotion as the seed. The story and explanation
# chats prefill the assistant turn with "I" so that even a 135M model writes in the first person;
# the parsers put the prefill back, and read a reply that ignored it (an OpenAI server) as it is.

STORY_SYSTEM_PROMPT = "You write short, realistic stories about everyday life, told in the first person."

STORY_PROMPT = """Situation: {situation}
Feeling: {emotion}

Write a new short story, told in the first person ("I"), about someone living through a situation like this one and feeling {emotion}. Use three to five sentences. Write only the story."""

EXPLANATION_SYSTEM_PROMPT = "You retell stories the way the person in them would tell a friend what happened."

EXPLANATION_PROMPT = """Story: {story}

You are the person in this story and you feel {emotion}. Tell a friend, in the first person, what happened and explain why you feel {emotion}. Use two to four sentences. Write only what you would say."""

EMPATHETIC_RESPONSE_SYSTEM_PROMPT = (
    "You are an empathetic listener. A friend tells you what happened to them. Reply in two or three "
    "sentences that show you understand how they feel and why, with warmth; you may ask a gentle question."
)

FIRST_PERSON_PREFILL = "I"


def story_chat(situation: str, emotion: str, prefill: str | None = FIRST_PERSON_PREFILL) -> Chat:
    """Chat asking for one new first-person story in a situation like `situation`, feeling `emotion`."""
    chat: Chat = [
        {"role": "system", "content": STORY_SYSTEM_PROMPT},
        {"role": "user", "content": STORY_PROMPT.format(situation=situation, emotion=emotion or "some emotion")},
    ]
    if prefill:
        chat.append({"role": "assistant", "content": prefill})
    return chat


def explanation_chat(story: str, emotion: str, prefill: str | None = FIRST_PERSON_PREFILL) -> Chat:
    """Chat asking the narrator of `story` to explain, in the first person, what happened and why they feel `emotion`."""
    chat: Chat = [
        {"role": "system", "content": EXPLANATION_SYSTEM_PROMPT},
        {"role": "user", "content": EXPLANATION_PROMPT.format(story=story, emotion=emotion or "some emotion")},
    ]
    if prefill:
        chat.append({"role": "assistant", "content": prefill})
    return chat


def empathetic_response_chat(explanation: str) -> Chat:
    """Chat asking for one empathetic reply to a first-person `explanation` (the speaker's only turn)."""
    return [{"role": "system", "content": EMPATHETIC_RESPONSE_SYSTEM_PROMPT},
            {"role": "user", "content": explanation}]


class ParsedPassage(NamedTuple):
    """`text` when the reply is usable; else `reject_reason` says why (and `text` is "")."""

    text: str
    reject_reason: str | None
    dropped_tail: bool = False  # an unfinished last sentence (the token limit) was cut off


# REJECT_EMPTY ("empty") as above, plus:
REJECT_CUT_OFF = "cut_off"                    # no complete sentence: the token limit cut the first one
REJECT_NOT_FIRST_PERSON = "not_first_person"  # a story or explanation without I / me / my

# A label the model put in front of its text ("Story:", "**Explanation:**", "Response -").
_PASSAGE_LABEL_RE = re.compile(r"^[\s*#_>-]*(story|explanation|response|reply)[\s*_]*[:-][\s*_]*", re.IGNORECASE)
# An assistant preamble on its own line ("Here is a short story:", "Sure! Here's what I would say:").
_PREAMBLE_RE = re.compile(r"^\s*(here\s+is|here's|sure|certainly|of course|okay)\b[^\n]*\n", re.IGNORECASE)
# The end of a complete sentence: ., ! or ? (or …), then any closing quotes or brackets.
_SENTENCE_END_RE = re.compile(r"[.!?…][\"'”’)\]]*(?=\s|$)")
_FIRST_PERSON_RE = re.compile(r"\bI\b|\b(?:me|my|mine|myself)\b", re.IGNORECASE)


def _parse_passage(text: str, prefix: str, first_person: bool) -> ParsedPassage:
    if not text or not text.strip():
        return ParsedPassage("", REJECT_EMPTY)
    text = _PREAMBLE_RE.sub("", text.strip(), count=1)
    text = _PASSAGE_LABEL_RE.sub("", text.strip(), count=1).strip()
    # The first paragraph: what follows a blank line is commentary ("I hope you like it!"), not the text.
    text = " ".join(re.split(r"\n\s*\n", text, maxsplit=1)[0].split()).strip(" *_")
    if len(text) > 1 and text[0] == text[-1] == '"':  # a passage quoted whole; a quote inside it stays
        text = text[1:-1].strip()
    if prefix and text[:1] and (text[0].islower() or text[0] in ("'", "’")):
        # A continuation of the prefill ("woke up early", "'m so tired"); a reply that starts with a
        # capital opened a text of its own ("I woke up", "Yesterday I ...") and keeps it.
        text = prefix + ("" if text[0] in ("'", "’") else " ") + text
    if not text:
        return ParsedPassage("", REJECT_EMPTY)
    ends = list(_SENTENCE_END_RE.finditer(text))
    dropped_tail = not ends or ends[-1].end() != len(text)
    if dropped_tail:
        if not ends:
            return ParsedPassage("", REJECT_CUT_OFF, True)
        text = text[:ends[-1].end()]
    if first_person and not _FIRST_PERSON_RE.search(text):
        return ParsedPassage("", REJECT_NOT_FIRST_PERSON, dropped_tail)
    return ParsedPassage(text, None, dropped_tail)


def parse_story(text: str, prefix: str = FIRST_PERSON_PREFILL) -> ParsedPassage:
    """The story in a story_chat reply: its first paragraph, labels and preambles dropped, the
    prefill put back, an unfinished last sentence cut off; rejected when empty, with no complete
    sentence, or not in the first person. Length and content filters are the recipe's (synthempathy.py)."""
    return _parse_passage(text, prefix, first_person=True)


def parse_explanation(text: str, prefix: str = FIRST_PERSON_PREFILL) -> ParsedPassage:
    """The first-person explanation in an explanation_chat reply (the same reading as parse_story)."""
    return _parse_passage(text, prefix, first_person=True)


def parse_empathetic_response(text: str) -> ParsedPassage:
    """The reply in an empathetic_response_chat answer: first paragraph, label dropped, an
    unfinished last sentence cut off; rejected when empty or with no complete sentence."""
    return _parse_passage(text, "", first_person=False)
