"""Efficient-Empathy §3.2: rate every listener response for sensibility and rationality.

An LLM judge gives each sample a sensibility score S and a rationality score R (0–10) with the
rating prompt below (split.py then splits the data at a threshold). Ratings can also be
imported from the authors' released JSON (`test_results.json` style) instead of running a judge.

Rating is long at paper scale, so it runs through llm/table.run_sharded: a killed run continues
where it stopped and its final table equals an uninterrupted run's; changed settings start afresh.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import polars as pl

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import read_json_list
from empathy_pipeline.judges.ask import ask_until_parsed
from empathy_pipeline.llm.base import SEEDING, Chat, ChatBackend, Sampling, prompt_chat, transcript
from empathy_pipeline.llm.table import fingerprint, run_sharded

# ---- the prompt and its parser: Efficient-Empathy: sensibility / rationality rating (paper §3.2, Figure 5) ---
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
    return prompt_chat(RATING_SYSTEM_PROMPT, RATING_PROMPT.format(conversation=transcript(context), response=response),
                       prefill)


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


RATINGS_SCHEMA = {
    "sample_id": pl.String,
    "sensibility": pl.Int64,
    "rationality": pl.Int64,
    "raw_reply": pl.String,
}
# Shards also keep how many judge calls each sample took, so a resumed run reports the same counts.
SHARD_SCHEMA = {**RATINGS_SCHEMA, "attempts": pl.Int64}
DEFAULT_SAMPLING = Sampling(max_new_tokens=24)  # greedy: a rerun gives the same scores
AUTHORS_TURN_SEPARATOR = "</s>"


# ---- rating with an LLM judge ---------------------------------------------------------------------

def rate_samples(
    backend: ChatBackend,
    samples: pl.DataFrame,
    *,
    retries: int,
    shard_dir: str | Path,
    shard_size: int,
    sampling: Sampling = DEFAULT_SAMPLING,
    retry_temperature: float = 0.7,
    prefill: str | None = None,
    settings: dict | None = None,
    show_progress: bool = True,
) -> tuple[pl.DataFrame, dict]:
    """Rate samples (sample_id, context, response); return (ratings table, counts).

    The first call per sample uses `sampling` (greedy by default); a reply that does not yield both
    scores is asked again up to `retries` times, sampled at `retry_temperature` (a greedy retry would
    repeat the same reply). After that its scores stay null (what parsed is kept) and it counts
    as missing. `prefill` starts the judge's reply (see RATING_FORM_PREFIX); raw_reply holds
    the full form, prefill included. `settings` is whatever else decides the replies (model, backend
    params): it goes into the shard fingerprint. Resumable through llm/table.run_sharded.
    """
    missing = [c for c in ("sample_id", "context", "response") if c not in samples.columns]
    if missing:
        raise PipelineError(f"rating samples: missing column(s) {', '.join(missing)}")
    fp = fingerprint({
        "settings": settings, "sampling": asdict(sampling), "retries": retries, "retry_temperature": retry_temperature,
        "prefill": prefill, "prompt": [RATING_SYSTEM_PROMPT, RATING_PROMPT],
        **(SEEDING if sampling.temperature > 0 or retries > 0 else {}),
    }, samples, ("sample_id", "context", "response"))
    table, shards = run_sharded(
        samples, lambda part, _: _rate_part(backend, part, retries, sampling, retry_temperature, prefill),
        shard_dir=shard_dir, shard_size=shard_size, fingerprint=fp, schema=SHARD_SCHEMA, what="rate",
        show_progress=show_progress)
    complete = table["sensibility"].is_not_null() & table["rationality"].is_not_null()
    counts = {
        "rated": table.height,
        "parsed": int(complete.sum()),
        "retried": int((table["attempts"] > 1).sum()),
        "missing": int((~complete).sum()),
        "judge_calls": int(table["attempts"].sum()),
        "shards": shards["shards"],  # how many were resumed is a fact of the run, not of the result: logged only
    }
    return table.select(list(RATINGS_SCHEMA)), counts


def _rate_part(judge: ChatBackend, part: pl.DataFrame, retries: int, sampling: Sampling,
               retry_temperature: float, prefill: str | None) -> pl.DataFrame:
    chats = [rating_chat(context, response, prefill)
             for context, response in zip(part["context"].to_list(), part["response"].to_list(), strict=True)]

    def form(reply: str) -> str:
        # The backend returns only what the model wrote; the form it continued is part of the answer.
        return f"{prefill}{reply}" if prefill else reply

    asked = ask_until_parsed(judge, chats, part["sample_id"].to_list(), lambda reply: parse_rating(form(reply)),
                             sampling=sampling, retries=retries, retry_temperature=retry_temperature, what="rate",
                             parsed_ok=lambda scores: None not in scores)
    return pl.DataFrame({
        "sample_id": part["sample_id"].to_list(),
        "sensibility": [s.sensibility for s in asked.parsed],
        "rationality": [s.rationality for s in asked.parsed],
        "raw_reply": [form(reply) for reply in asked.replies],
        "attempts": asked.attempts,
    }, schema=SHARD_SCHEMA)


# ---- importing the authors' ratings ----------------------------------------------------------------

# Contractions in any of the forms the files use ("didn't", "did n't", "did not"), as one key.
_CONTRACTION_KEYS = [
    (re.compile(r"\bca\s*n't"), "can not"), (re.compile(r"\bcannot\b"), "can not"),
    (re.compile(r"\bwo\s*n't"), "will not"), (re.compile(r"\s*n't\b"), " not"),
    (re.compile(r"\s*'m\b"), " am"), (re.compile(r"\s*'re\b"), " are"), (re.compile(r"\s*'ve\b"), " have"),
    (re.compile(r"\s*'ll\b"), " will"), (re.compile(r"\s*'d\b"), " would"),
    (re.compile(r"\b(it|that|what|there)\s*'s\b"), r"\1 is"),
]


def _normalise(text: str) -> str:
    # Letters and digits only, contractions in one form: the authors' files and our preprocessing
    # (either setting) differ in case, tokenisation spaces, contractions and `_comma_`, never in
    # the words themselves.
    text = text.replace("_comma_", ",").replace("\u2019", "'").lower()
    for pattern, replacement in _CONTRACTION_KEYS:
        text = pattern.sub(replacement, text)
    return re.sub(r"[^a-z0-9]", "", text)


def _key(context, response: str) -> tuple:
    return tuple(_normalise(t) for t in context), _normalise(response)


def import_ratings(path: str | Path, samples: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
    """Ratings from the authors' JSON (items with context, response, evaluation) matched to samples.

    An item matches a sample with the same context turns (joined by " </s> " in the file) and
    response after normalisation (_normalise). When several samples share a text they take the
    items with that text in file order. Samples without a match get null scores; items without
    a sample, unusable items and evaluations that do not parse are counted.
    """
    path = Path(path)
    items = read_json_list(path, "ratings file not found", "a JSON list of items with context, response, evaluation")

    by_text: dict[tuple, deque] = defaultdict(deque)
    bad_items = 0
    for item in items:
        if not (isinstance(item, dict) and all(isinstance(item.get(k), str)
                                               for k in ("context", "response", "evaluation"))):
            bad_items += 1
            continue
        turns = [t.strip() for t in item["context"].split(AUTHORS_TURN_SEPARATOR)]
        by_text[_key(turns, item["response"])].append(item["evaluation"])

    rows = []
    imported = 0
    for sample_id, context, response in samples.select("sample_id", "context", "response").iter_rows():
        queue = by_text.get(_key(context, response))
        evaluation = queue.popleft() if queue else None
        scores = parse_rating(evaluation) if evaluation is not None else RatingScores(None, None)
        imported += evaluation is not None
        rows.append((sample_id, scores.sensibility, scores.rationality, evaluation))
    ratings = pl.DataFrame(rows, schema=RATINGS_SCHEMA, orient="row")
    if items and not imported:
        raise PipelineError(f"{path}: none of its {len(items)} items matches a sample's context and response "
                            "(is it the same split and preprocessing?)")
    complete = ratings["sensibility"].is_not_null() & ratings["rationality"].is_not_null()
    counts = {
        "rated": ratings.height,
        "imported": imported,
        "parsed": int(complete.sum()),
        "missing": int((~complete).sum()),
        "unparseable_imported": imported - int(complete.sum()),
        "unmatched_items": sum(len(q) for q in by_text.values()),
        "bad_items": bad_items,
    }
    return ratings, counts
