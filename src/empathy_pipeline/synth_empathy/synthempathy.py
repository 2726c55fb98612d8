"""The SYNTHEMPATHY recipe (Chen, Shin & Hirschberg 2025, arXiv 2502.17857): `generate.recipe: synthempathy`.

    ED situation (the CSVs' `prompt`, with its emotion)
      -> `stories_per_situation` first-person stories, sampled           (story_chat)
      -> near-duplicate removal: MinHash LSH over word shingles          (dedupe.py)
      -> per story, the narrator's first-person explanation of what
         happened and why they feel so                                  (explanation_chat)
      -> one empathetic response to the explanation                     (empathetic_response_chat)
      -> filters: length in words, profanity (better-profanity), an EPITOME-level floor

The paper brainstorms stories from real-life scenarios, removes duplicates, rewrites each story as
a first-person explanation and answers it; its corpus is 105k (explanation, response) pairs (the
abstract gives the 105k responses, summaries of the paper the steps and the pairs). So a sample
here is that pair: context = [the explanation] (the speaker's one turn), response = the
reply. The story stays out of the context: it is the brainstorm the explanation retells, narrated
to no one, and the response was written to the explanation alone, so the pair is exactly what the
listener saw. The output has generation.SYNTH_SCHEMA, so discriminate, embed, the quality and
diversity selections and train_synth read it as they read the Synth-Empathy recipe's.

Each of the three LLM steps runs through llm/table.run_sharded in its own shard directory
(stories/, explanations/, responses/ under the stage's shards): a killed run resumes at the step
and shard it reached. Every request samples with its own seed, request_seed(generate.seed, key),
keyed by situation, story number and step, so neither batch_size nor shard_size changes what is
drawn. Every story ends as exactly one sample or one counted reject with its reason.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from pathlib import Path
from typing import NamedTuple

import polars as pl

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import sample_rows
from empathy_pipeline.data.epitome import MECHANISMS
from empathy_pipeline.llm.base import SEEDING, Chat, ChatBackend, Sampling, prompt_chat, request_seed
from empathy_pipeline.llm.table import fingerprint, run_sharded
from empathy_pipeline.synth_empathy import dedupe
from empathy_pipeline.synth_empathy.generation import REJECT_EMPTY, REJECTS_SCHEMA, SYNTH_SCHEMA

# ---- the prompt and its parser: SYNTHEMPATHY: situation -> stories -> explanation -> response (Chen, Shin & Hirschberg 2025) ---
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
    return prompt_chat(STORY_SYSTEM_PROMPT,
                       STORY_PROMPT.format(situation=situation, emotion=emotion or "some emotion"), prefill)


def explanation_chat(story: str, emotion: str, prefill: str | None = FIRST_PERSON_PREFILL) -> Chat:
    """Chat asking the narrator of `story` to explain, in the first person, what happened and why they feel `emotion`."""
    return prompt_chat(EXPLANATION_SYSTEM_PROMPT,
                       EXPLANATION_PROMPT.format(story=story, emotion=emotion or "some emotion"), prefill)


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


STORIES_SCHEMA = {"situation_id": pl.String, "story": pl.Int32, "raw_text": pl.String}
STEP_SCHEMA = {"story_id": pl.String, "raw_text": pl.String}   # one explanation or response per story

TOO_SHORT, TOO_LONG, PROFANITY, NEAR_DUPLICATE = "too_short", "too_long", "profanity", "near_duplicate"
BELOW_EPITOME_FLOOR = "below_epitome_floor"
# Every reason a story can stop at, step by step (metrics/generate.json counts each as rejected_<reason>).
REJECT_REASONS = (
    *(f"story_{r}" for r in (REJECT_EMPTY, REJECT_CUT_OFF, REJECT_NOT_FIRST_PERSON,
                             TOO_SHORT, TOO_LONG, NEAR_DUPLICATE)),
    *(f"explanation_{r}" for r in (REJECT_EMPTY, REJECT_CUT_OFF, REJECT_NOT_FIRST_PERSON,
                                   TOO_SHORT, TOO_LONG, PROFANITY)),
    *(f"response_{r}" for r in (REJECT_EMPTY, REJECT_CUT_OFF, TOO_SHORT, TOO_LONG, PROFANITY)),
    BELOW_EPITOME_FLOOR,
)


# ---- situations ---------------------------------------------------------------------------------

def select_situations(train: pl.DataFrame, num_seeds: int | float, seed: int) -> tuple[pl.DataFrame, int]:
    """(`num_seeds` ED situations drawn with `seed`, in file order; conversations skipped for an empty situation).

    One situation per conversation (ED's `prompt` is per conversation; its first sample stands for
    it): situation_id (= conv_id), seed_sample_id, emotion, situation. `num_seeds` is a count or a
    fraction in (0, 1] of the conversations that have a situation.
    """
    missing = [c for c in ("sample_id", "conv_id", "emotion", "situation") if c not in train.columns]
    if missing:
        raise PipelineError(f"generate (synthempathy): the train split has no {', '.join(missing)} column")
    conversations = train.unique("conv_id", keep="first", maintain_order=True)
    usable = conversations.filter(pl.col("situation").is_not_null() & (pl.col("situation").str.strip_chars() != ""))
    n = max(1, round(num_seeds * usable.height)) if isinstance(num_seeds, float) else int(num_seeds)
    if n > usable.height:
        raise PipelineError(f"generate.num_seeds: {n} situations asked for, but the train split has "
                            f"{usable.height} conversations with a situation")
    picked = sample_rows(usable, n, seed).select(
        pl.col("conv_id").alias("situation_id"), pl.col("sample_id").alias("seed_sample_id"),
        pl.col("emotion").fill_null(""), "situation")
    return picked, conversations.height - usable.height


def story_key(situation_id: str, story: int) -> str:
    """The story's identity: its shard rows, its request seeds (plus the step) and its sample_id derive from it."""
    return f"{situation_id}#story{story}"


# ---- the three LLM steps, each resumable ------------------------------------------------------------

def _sampling(p, max_new_tokens: int) -> Sampling:
    return Sampling(max_new_tokens=max_new_tokens, temperature=p.temperature, top_p=p.top_p, seed=p.seed)


def _seeding(sampling: Sampling) -> dict:
    return SEEDING if sampling.temperature > 0 else {}


def write_stories(situations: pl.DataFrame, backend: ChatBackend, p, *, shard_dir: Path, settings: dict,
                  show_progress: bool = True) -> tuple[pl.DataFrame, dict]:
    """Raw story replies (situation_id, story, raw_text), `stories_per_situation` per situation, in order."""
    n = p.synthempathy.stories_per_situation
    sampling = _sampling(p, p.synthempathy.story_max_new_tokens)
    fp = fingerprint({"settings": settings, "prompt": story_chat("{situation}", "{emotion}"),
                      "sampling": sampling, "stories_per_situation": n, **_seeding(sampling)},
                     situations, ("situation_id", "emotion", "situation"))

    def work(part: pl.DataFrame, _: int) -> pl.DataFrame:
        rows = [row for row in part.iter_rows(named=True) for _ in range(n)]
        numbers = [k % n for k in range(len(rows))]
        chats = [story_chat(row["situation"], row["emotion"]) for row in rows]
        seeds = [request_seed(sampling.seed, story_key(row["situation_id"], k) + "#story")
                 for row, k in zip(rows, numbers, strict=True)]
        return pl.DataFrame({"situation_id": [row["situation_id"] for row in rows], "story": numbers,
                             "raw_text": backend.generate(chats, sampling, seeds)}, schema=STORIES_SCHEMA)

    return run_sharded(situations, work, shard_dir=shard_dir / "stories", shard_size=p.shard_size, fingerprint=fp,
                       schema=STORIES_SCHEMA, what="generate stories", id_column="situation_id",
                       show_progress=show_progress)


def _write_step(rows: pl.DataFrame, chat, columns: tuple[str, ...], step: str, backend: ChatBackend,
                sampling: Sampling, *, shard_dir: Path, shard_size: int, settings: dict,
                show_progress: bool) -> tuple[pl.DataFrame, dict]:
    """One reply per row (story_id, raw_text) to chat(*row[columns]), seeded by story and step."""
    example = chat(*(f"{{{c}}}" for c in columns))
    fp = fingerprint({"settings": settings, "prompt": example, "sampling": sampling, **_seeding(sampling)},
                     rows, ("story_id", *columns))

    def work(part: pl.DataFrame, _: int) -> pl.DataFrame:
        chats = [chat(*values) for values in part.select(columns).iter_rows()]
        seeds = [request_seed(sampling.seed, f"{key}#{step}") for key in part["story_id"].to_list()]
        return pl.DataFrame({"story_id": part["story_id"], "raw_text": backend.generate(chats, sampling, seeds)},
                            schema=STEP_SCHEMA)

    if rows.height == 0:  # nothing survived the step before: no shards, no model
        return pl.DataFrame(schema=STEP_SCHEMA), {"shards": 0, "shards_resumed": 0}
    return run_sharded(rows, work, shard_dir=shard_dir / f"{step}s", shard_size=shard_size, fingerprint=fp,
                       schema=STEP_SCHEMA, what=f"generate {step}s", id_column="story_id", show_progress=show_progress)


# ---- filters --------------------------------------------------------------------------------------

@cache
def _profanity():
    from better_profanity import Profanity

    return Profanity()  # better-profanity's own word list, with its character-swap variants


def filter_reason(text: str, cfg, *, check_profanity: bool) -> str | None:
    """Why a parsed text is dropped (too_short, too_long, profanity), or None when it passes.
    `cfg` is the generate.synthempathy section."""
    words = len(text.split())
    if words < cfg.min_words:
        return TOO_SHORT
    if words > cfg.max_words:
        return TOO_LONG
    if check_profanity and cfg.profanity_filter and _profanity().contains_profanity(text):
        return PROFANITY
    return None


def require_classifier(directory: str | Path | None) -> None:
    """The EPITOME floor needs the train_epitome classifiers: a one-line error when they are not there."""
    from empathy_pipeline.evaluation.epitome_levels import CONFIG_FILE, HEADS_FILE

    fix = "run the train_epitome stage, or set generate.synthempathy.epitome_floor: null"
    if directory is None:
        raise PipelineError(f"generate.synthempathy.epitome_floor is set but no EPITOME classifier directory was given; {fix}")
    if not (Path(directory) / CONFIG_FILE).is_file() or not (Path(directory) / HEADS_FILE).is_file():
        raise PipelineError(f"{directory}: no EPITOME classifier (generate.synthempathy.epitome_floor is set); {fix}")


def epitome_measure(levels: dict[str, list[int]], measure: str) -> list[int]:
    """The level the floor reads, per pair: ER + IP + EX for `sum`, else that mechanism's level."""
    if measure == "sum":
        return [sum(values) for values in zip(*(levels[m] for m in MECHANISMS), strict=True)]
    return list(levels[measure])


# ---- the recipe -----------------------------------------------------------------------------------

def generate(train: pl.DataFrame, backend: ChatBackend, p, *, shard_dir: str | Path, settings: dict,
             generator: str, epitome_dir: str | Path | None, show_progress: bool = True,
             ) -> tuple[pl.DataFrame, pl.DataFrame, dict, dict]:
    """(samples in SYNTH_SCHEMA, rejects in REJECTS_SCHEMA, counts, shard counts) of the whole recipe.

    `p` is the generate section; `settings` whatever else decides the replies (llm params, model
    fingerprint); `epitome_dir` the EPITOME classifiers, read only when generate.synthempathy.epitome_floor is set.
    """
    cfg, shard_dir = p.synthempathy, Path(shard_dir)
    if cfg.epitome_floor is not None:
        require_classifier(epitome_dir)  # before any model call, not after an hour of generation
    situations, skipped = select_situations(train, p.num_seeds, p.seed)
    by_situation = {row["situation_id"]: row for row in situations.iter_rows(named=True)}
    rejects: list[dict] = []

    def reject(seed_sample_id: str, raw: str, reason: str) -> None:
        rejects.append({"seed_sample_id": seed_sample_id, "raw_text": raw, "reason": reason})

    # 1. stories, parsed and length-filtered
    stories, shards = write_stories(situations, backend, p, shard_dir=shard_dir, settings=settings,
                                    show_progress=show_progress)
    parsed, tails = _parse_replies(
        (({**by_situation[sid], "story_id": story_key(sid, k), "story_number": k}, raw) for sid, k, raw in stories.iter_rows()),
        parse_story, "story", cfg, reject, check_profanity=False)

    # 2. near-duplicate removal over every story of the run (the first of a group is kept)
    duplicate_of = dedupe.near_duplicates([s["story"] for s in parsed], threshold=cfg.dedupe_threshold,
                                          num_perm=cfg.num_perm, shingle_words=cfg.shingle_words)
    unique = []
    for story, original in zip(parsed, duplicate_of, strict=True):
        if original is None:
            unique.append(story)
        else:
            reject(story["seed_sample_id"], story["story"], f"story_{NEAR_DUPLICATE}")

    # 3-4. one first-person explanation per unique story, then one empathetic response per explanation
    step = dict(backend=backend, shard_dir=shard_dir, shard_size=p.shard_size, settings=settings,
                show_progress=show_progress)

    def ask_and_parse(items: list[dict], asked: tuple[str, ...], chat, name: str, max_new_tokens: int, parse):
        """Ask `chat(*item[asked])` of every item in resumable shards: (the items whose reply parses, with it;
        how many replies there were). The rest are rejected."""
        nonlocal shards, tails
        replies, counts = _write_step(_table(items, ("story_id", *asked)), chat, asked, name,
                                      sampling=_sampling(p, max_new_tokens), **step)
        shards = _add(shards, counts)
        by_story = {s["story_id"]: s for s in items}
        kept, dropped = _parse_replies(((by_story[i], raw) for i, raw in replies.iter_rows()), parse, name, cfg,
                                       reject, check_profanity=True)
        tails += dropped
        return kept, replies.height

    explained, n_explanations = ask_and_parse(unique, ("story", "emotion"), explanation_chat, "explanation",
                                              cfg.explanation_max_new_tokens, parse_explanation)
    answered, n_responses = ask_and_parse(explained, ("explanation",), empathetic_response_chat, "response",
                                          cfg.response_max_new_tokens, parse_empathetic_response)

    # 5. the EPITOME floor, read on (explanation, response) as the classifiers read (post, reply)
    level_summary: dict = {}
    if cfg.epitome_floor is not None and answered:
        from empathy_pipeline.evaluation import epitome_levels

        levels = epitome_levels.EpitomeClassifier.load(epitome_dir).levels([a["explanation"] for a in answered],
                                                                    [a["response"] for a in answered])
        passes = [value >= cfg.epitome_floor for value in epitome_measure(levels, cfg.epitome_measure)]
        for pair, ok in zip(answered, passes, strict=True):
            if not ok:
                reject(pair["seed_sample_id"], pair["response"], BELOW_EPITOME_FLOOR)
        answered = [pair for pair, ok in zip(answered, passes, strict=True) if ok]
        if answered:  # the levels of what is kept, in the evaluation's keys (epitome_er_mean, ...)
            level_summary = epitome_levels.level_summary(
                {m: [v for v, ok in zip(values, passes, strict=True) if ok] for m, values in levels.items()})

    samples = [{
        "sample_id": f"synthempathy:{a['situation_id']}:{a['story_number']}",
        "conv_id": f"synthempathy:{a['situation_id']}:{a['story_number']}",
        "split": "synthetic",
        "emotion": a["emotion"],
        "situation": a["situation"],          # the seed situation: provenance
        "context": [a["explanation"]],
        "response": a["response"],
        "seed_sample_id": a["seed_sample_id"],
        "round_count": 1,                     # one speaker turn and its reply
        "generator": generator,
        "prompt_variant": None,               # Synth-Empathy's Figure 6 variants do not apply
    } for a in answered]
    reasons = Counter(r["reason"] for r in rejects)
    counts = {
        "situations": situations.height,
        "conversations_without_situation": skipped,
        "stories": stories.height,
        "stories_parsed": len(parsed),
        "stories_unique": len(unique),
        "explanations": n_explanations,
        "explanations_kept": len(explained),
        "responses": n_responses,
        "rejected": len(rejects),
        **{f"rejected_{reason}": reasons[reason] for reason in REJECT_REASONS},
        "unfinished_last_sentences_dropped": tails,
        "samples": len(samples),
        "mean_explanation_words": _mean_words([s["context"][0] for s in samples]),
        "mean_response_words": _mean_words([s["response"] for s in samples]),
        **level_summary,
    }
    return (pl.DataFrame(samples, schema=SYNTH_SCHEMA) if samples else pl.DataFrame(schema=SYNTH_SCHEMA),
            pl.DataFrame(rejects, schema=REJECTS_SCHEMA) if rejects else pl.DataFrame(schema=REJECTS_SCHEMA),
            counts, shards)


def _parse_replies(pairs, parse, step: str, cfg, reject, *, check_profanity: bool) -> tuple[list[dict], int]:
    """(each row with its parsed text under `step`, tails dropped) for the replies that parse and
    pass the filters; every other reply goes to `reject` with reason `<step>_<why>`."""
    kept: list[dict] = []
    tails = 0
    for row, raw in pairs:
        parsed = parse(raw)
        tails += parsed.dropped_tail
        reason = parsed.reject_reason or filter_reason(parsed.text, cfg, check_profanity=check_profanity)
        if reason:
            reject(row["seed_sample_id"], raw, f"{step}_{reason}")
        else:
            kept.append({**row, step: parsed.text})
    return kept, tails


def _table(rows: list[dict], columns: tuple[str, ...]) -> pl.DataFrame:
    return pl.DataFrame({c: [row[c] for row in rows] for c in columns}, schema={c: pl.String for c in columns})


def _add(a: dict, b: dict) -> dict:
    return {k: a[k] + b[k] for k in a}


def _mean_words(texts: list[str]) -> float:
    return round(sum(len(t.split()) for t in texts) / len(texts), 2) if texts else 0.0


def summary_line(counts: dict, shard_counts: dict, out: str | Path) -> str:
    """The stage's one-line report."""
    reasons = ", ".join(f"{k.removeprefix('rejected_')} {v}" for k, v in counts.items()
                        if k.startswith("rejected_") and v)
    return (f"generate (synthempathy): {counts['situations']} situations -> {counts['stories']} stories "
            f"({counts['stories_unique']} unique after parsing and MinHash dedupe) -> {counts['explanations_kept']} "
            f"explanations -> {counts['samples']} samples in {out}; {counts['rejected']} rejected "
            f"({reasons or 'none'}); {shard_counts['shards_resumed']} of {shard_counts['shards']} shards resumed")
