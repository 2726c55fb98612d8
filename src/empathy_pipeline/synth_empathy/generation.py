"""Synth-Empathy §3.1: generate new multi-round empathetic dialogues from ED seeds (`generate.recipe: synth_empathy`).

    Synthetic Dataset = LLM(Prompt(ED Data))

Each seed (one ED train sample) is sent `completions_per_seed` times with the paper's Figure 6
prompt (generation_chat); each reply is parsed into rounds (parse_rounds) and turned
into one training sample (build_samples). Unusable replies go to the rejects table with a reason.

Generation is the expensive step, so it runs through llm/table.run_sharded in shards of
`shard_size` seeds (the raw replies only): a rerun after a crash skips the shards already done, and
because every reply draws from its own seed (keyed by its seed sample and completion) the final
files are byte-identical to those of an uninterrupted run, whatever shard_size or batch_size.
Parsing and sample building run after the last shard, over all replies, so they
can change without regenerating anything.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import sample_rows
from empathy_pipeline.data.ed import SAMPLES_SCHEMA
from empathy_pipeline.llm.base import SEEDING, Chat, ChatBackend, Sampling, request_seed, transcript
from empathy_pipeline.llm.table import fingerprint, run_sharded

# ---- the prompt and its parser: Synth-Empathy: multi-round generation from an ED seed (paper §3.1, Figure 6) ---
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
    return template.format(context=transcript(context), response=response, emotion=emotion or "some emotion", max_words=max_words)


def generation_chat(context: Sequence[str], response: str, emotion: str, variant: int,
                    max_words: int = 30) -> Chat:
    """One-shot chat asking for >= 3 new rounds seeded by one ED sample, with Prompt `variant` (1 or 2).

    The last message is the assistant prefill GENERATION_PREFILL; pass it to `parse_rounds` as `prefix`.
    """
    template = GENERATION_PROMPTS.get(int(variant))
    if template is None:
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


SYNTH_SCHEMA = {
    **SAMPLES_SCHEMA,
    "seed_sample_id": pl.String,
    "round_count": pl.Int32,      # rounds the generator wrote (complete ones), not rounds in the context
    "generator": pl.String,
    "prompt_variant": pl.Int32,
}
REJECTS_SCHEMA = {"seed_sample_id": pl.String, "raw_text": pl.String, "reason": pl.String}
COMPLETIONS_SCHEMA = {"sample_id": pl.String, "completion": pl.Int32, "raw_text": pl.String}  # sample_id of the seed
REJECT_REASONS = (
    REJECT_EMPTY, REJECT_NO_ROUNDS, REJECT_MISSING_CONTEXT,
    REJECT_MISSING_RESPONSE, REJECT_MALFORMED_ROUND, REJECT_RESPONSE_TOO_LONG,
    REJECT_TOO_FEW_ROUNDS,
)
MAX_CONTEXT_ROUNDS = 3
# The generate keys of the other recipe (synthempathy.py). They are left out of this recipe's shard
# fingerprint: they do not decide its replies, and shards written before they existed stay valid.
SYNTHEMPATHY_KEYS = frozenset({"recipe", "synthempathy"})


# ---- seeds --------------------------------------------------------------------------------------

def select_seeds(train: pl.DataFrame, num_seeds: int | float, seed: int) -> pl.DataFrame:
    """`num_seeds` ED train samples (an int count, or a float fraction in (0, 1]), drawn with `seed`, in file order."""
    n = max(1, round(num_seeds * train.height)) if isinstance(num_seeds, float) else int(num_seeds)
    if n > train.height:
        raise PipelineError(f"generate.num_seeds: {n} seeds asked for, but the train split has {train.height} samples")
    return sample_rows(train, n, seed)


# ---- sharded, resumable generation ----------------------------------------------------------------

def generate_completions(
    seeds: pl.DataFrame,
    backend: ChatBackend,
    *,
    shard_dir: str | Path,
    prompt_variant: int,
    completions_per_seed: int,
    sampling: Sampling,
    max_response_words: int,
    shard_size: int,
    settings: dict,
    show_progress: bool = True,
) -> tuple[pl.DataFrame, dict]:
    """Raw replies (sample_id of the seed, completion, raw_text), `completions_per_seed` per seed, in
    seed order; and the shard counts. `settings` is whatever else decides the replies (params, model).

    Every reply samples with its own seed, request_seed(sampling.seed, completion_key(...)), so a
    resumed run draws exactly what an uninterrupted one would, and shard_size does not matter.
    """
    # The rendered prompt is part of what decides a shard's content: editing it regenerates.
    prompt = generation_chat(["{context}"], "{response}", "{emotion}", prompt_variant,
                                     max_words=max_response_words)
    fp = fingerprint({"settings": settings, "prompt": prompt, "sampling": sampling,
                      "completions_per_seed": completions_per_seed,
                      **(SEEDING if sampling.temperature > 0 else {})}, seeds,
                     ("sample_id", "emotion", "context", "response"))

    def work(part: pl.DataFrame, index: int) -> pl.DataFrame:
        rows = [row for row in part.iter_rows(named=True) for _ in range(completions_per_seed)]
        chats = [generation_chat(row["context"], row["response"], row["emotion"], prompt_variant,
                                         max_words=max_response_words) for row in rows]
        completions = [k % completions_per_seed for k in range(len(rows))]
        request_seeds = [request_seed(sampling.seed, completion_key(row["sample_id"], k, completions_per_seed))
                         for row, k in zip(rows, completions, strict=True)]
        return pl.DataFrame({"sample_id": [row["sample_id"] for row in rows],
                             "completion": completions,
                             "raw_text": backend.generate(chats, sampling, request_seeds)}, schema=COMPLETIONS_SCHEMA)

    return run_sharded(seeds, work, shard_dir=shard_dir, shard_size=shard_size, fingerprint=fp,
                       schema=COMPLETIONS_SCHEMA, what="generate", show_progress=show_progress)


def completion_key(sample_id: str, completion: int, completions_per_seed: int) -> str:
    """The seed key of one completion: the seed's sample_id, plus the completion number when there are several."""
    return sample_id if completions_per_seed == 1 else f"{sample_id}#completion{completion}"


# ---- from replies to samples --------------------------------------------------------------------

def build_samples(rounds: Sequence[tuple[str, str]], rng: np.random.Generator) -> list[tuple[list[str], str]]:
    """Training samples (context turns, target response) from one parsed reply: one per reply.

    Pick c context rounds, 1 <= c <= 3 and c < len(rounds), with `rng`. The context is those c
    rounds as alternating speaker/listener turns (each round's context, then its response) followed
    by the speaker turn of round c+1; the target is round c+1's response, the listener turn that
    answers it.

    Fix: the authors' code always took the LAST round's response as the target whatever context it
    kept, so the target did not always answer the last speaker turn of its context. Here the target
    is always the response of the round whose context ends the sample.
    """
    if len(rounds) < 2:
        return []
    c = int(rng.integers(1, min(MAX_CONTEXT_ROUNDS, len(rounds) - 1) + 1))
    context = [turn for speaker, listener in rounds[:c] for turn in (speaker, listener)]
    context.append(rounds[c][0])
    return [(context, rounds[c][1])]


def assemble(
    seeds: pl.DataFrame,
    completions: pl.DataFrame,
    *,
    generator: str,
    prompt_variant: int,
    max_response_words: int,
    seed: int,
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Parse every reply; return (samples, rejects, counts). Every reply is a sample or a reject.

    Each reply's context length is drawn from its own generator, keyed by (seed, seed row, completion),
    so a reply's sample does not depend on which other replies parsed.
    """
    seed_rows = {row["sample_id"]: (i, row) for i, row in enumerate(seeds.iter_rows(named=True))}
    samples: list[dict] = []
    rejects: list[dict] = []
    reasons: Counter[str] = Counter()
    dropped_tails = 0
    rounds_total = 0
    for seed_id, completion, raw in completions.iter_rows():
        row_index, seed_row = seed_rows[seed_id]
        parsed = parse_rounds(raw, max_response_words=max_response_words, prefix=GENERATION_PREFILL)
        dropped_tails += parsed.dropped_tail
        if parsed.reject_reason is not None:
            reasons[parsed.reject_reason] += 1
            rejects.append({"seed_sample_id": seed_id, "raw_text": raw, "reason": parsed.reject_reason})
            continue
        rounds_total += len(parsed.rounds)
        rng = np.random.default_rng([seed, row_index, completion])
        for k, (context, response) in enumerate(build_samples(parsed.rounds, rng)):
            sample_id = f"synth:{seed_id}:{completion}" + (f":{k}" if k else "")
            samples.append({
                "sample_id": sample_id,
                "conv_id": sample_id,
                "split": "synthetic",
                "emotion": seed_row["emotion"],
                # The seed's situation: provenance, since the generator was asked for a new one.
                "situation": seed_row["situation"],
                "context": context,
                "response": response,
                "seed_sample_id": seed_id,
                "round_count": len(parsed.rounds),
                "generator": generator,
                "prompt_variant": int(prompt_variant),
            })
    parsed_count = completions.height - len(rejects)
    counts = {
        "seeds": seeds.height,
        "completions": completions.height,
        "parsed": parsed_count,
        "parsed_pct": round(100 * parsed_count / completions.height, 2) if completions.height else 0.0,
        "rejected": len(rejects),
        **{f"rejected_{reason}": reasons[reason] for reason in REJECT_REASONS},
        "truncated_last_rounds_dropped": dropped_tails,
        "mean_rounds": round(rounds_total / parsed_count, 3) if parsed_count else 0.0,
        "samples": len(samples),
    }
    return (pl.DataFrame(samples, schema=SYNTH_SCHEMA) if samples else pl.DataFrame(schema=SYNTH_SCHEMA),
            pl.DataFrame(rejects, schema=REJECTS_SCHEMA) if rejects else pl.DataFrame(schema=REJECTS_SCHEMA),
            counts)


def summary_line(counts: dict, shard_counts: dict, out: str | Path) -> str:
    """The stage's one-line report."""
    reasons = ", ".join(f"{k.removeprefix('rejected_')} {v}" for k, v in counts.items() if k.startswith("rejected_") and v)
    return (f"generate: {counts['completions']} completions from {counts['seeds']} seeds -> {counts['parsed']} parsed, "
            f"{counts['rejected']} rejected ({reasons or 'none'}) -> {counts['samples']} samples in {out} "
            f"({shard_counts['shards_resumed']} of {shard_counts['shards']} shards resumed)")
