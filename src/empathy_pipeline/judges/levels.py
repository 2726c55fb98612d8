"""An LLM judge for the EPITOME levels, and its agreement with the human annotators.

EPITOME (Sharma et al., EMNLP 2020) labels a (seeker post, response) pair 0 / 1 / 2 on three
mechanisms: Emotional Reactions (ER), Interpretations (IP), Explorations (EX). The judge gets the
codebook of one mechanism as a prompt (level_chat) and answers a level, greedily, one call
per (post, reply, mechanism). A reply that does not parse is asked again up to `retries` times at
`retry_temperature` (judges/ask.py, the rate stage's rule) and counted as retried; one that still
does not parse stays unparsed: it is counted and left out of κ and accuracy, never replaced by a
guess.

`empathy judge-levels` runs it on held-out EPITOME pairs and reports quadratic-weighted Cohen's κ
per mechanism beside the anchor of Kumar et al. (arXiv 2506.10150): a user who wants an LLM to
score empathy reads here how far the chosen judge is from that.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import sample_rows
from empathy_pipeline.core.params import Epitome
from empathy_pipeline.data.epitome import LEVELS, MECHANISMS, group_split, load_pairs
from empathy_pipeline.judges.ask import (
    DEFAULT_RETRIES,
    DEFAULT_RETRY_TEMPERATURE,
    NEGATIVE_ANSWER,
    SHORT_ANSWER,
    ask_until_parsed,
)
from empathy_pipeline.llm.base import Chat, ChatBackend, Sampling, prompt_chat

# ---- the prompt and its parser: EPITOME: one empathy mechanism of a reply, levels 0/1/2 (Sharma et al. 2020) ---
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
        raise PipelineError(f"level judge: unknown mechanism {mechanism!r} (use {', '.join(LEVEL_MECHANISMS)})")
    return prompt_chat(LEVEL_SYSTEM_PROMPT,
                       LEVEL_PROMPT.format(mechanism=LEVEL_MECHANISMS[mechanism], post=post, response=response), prefill)


# A level is 0, 1 or 2, optionally "/2"; a fraction, another scale or another number is not one.
_LEVEL_NUMBER = r"(\d+(?:\.\d+)?)(?:\s*/\s*(\d+))?(?![\w.]*\d)"
_LEVEL_WORDS = {"none": 0, "weak": 1, "strong": 2}


def parse_level(reply: str) -> int | None:
    """The 0-2 level in a judge reply, or None when there is none (the caller counts those, never guesses).

    The reply normally continues the prefilled "Level: ", so it starts with the number ("2",
    "**1**", "0 - none"); a reply that restarts the form is read by its label ("Level: 2") and one
    that answers in the codebook's words by its first word ("strong"). Anything else is None.
    """
    if not reply or not reply.strip() or NEGATIVE_ANSWER.match(reply):
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


# Expert-vs-LLM quadratic-weighted κ for frontier judges on 50 EPITOME conversations.
KUMAR_2025_KAPPA = {"ER": 0.64, "IP": 0.59, "EX": 0.76}
# The split of data/epitome.group_split when params.yaml has no `epitome` section: that section's defaults.
# The command passes the section's held_out_fraction and seed, so the judge and the classifiers score the
# same pairs.
HELD_OUT_FRACTION = Epitome.model_fields["held_out_fraction"].default
SPLIT_SEED = Epitome.model_fields["seed"].default


# ---- the EPITOME pairs -----------------------------------------------------------------------------

def held_out_pairs(data_dir: str | Path, fraction: float = HELD_OUT_FRACTION, seed: int = SPLIT_SEED) -> pl.DataFrame:
    """The held-out side of data/epitome.py's split by seeker post, as pair_id, seeker_post, response_post, ER, IP, EX.

    The same loader (duplicates kept once, majority level) and split the level classifiers use:
    with the classifiers' fraction and seed these are the pairs they were not trained on.
    """
    pairs, _ = load_pairs(data_dir)
    _, test = group_split(pairs, fraction, seed)
    return test.rename({"rp_id": "pair_id"})


# ---- judging ---------------------------------------------------------------------------------------

def judge_levels(backend: ChatBackend, pairs: pl.DataFrame, mechanisms: Sequence[str] = MECHANISMS,
                 sampling: Sampling = SHORT_ANSWER, *, retries: int = DEFAULT_RETRIES,
                 retry_temperature: float = DEFAULT_RETRY_TEMPERATURE) -> pl.DataFrame:
    """One judge call per (pair, mechanism), retried while unparsed: pair_id, mechanism, human,
    judge (null = unparsed), raw_reply (the last one), attempts (1 = parsed at once or no retry)."""
    if sampling.temperature != 0:
        raise PipelineError("level judge: temperature must be 0 (agreement of a sampled judge is not reproducible)")
    jobs = [(pid, m, post, reply, int(human))
            for m in mechanisms
            for pid, post, reply, human in pairs.select("pair_id", "seeker_post", "response_post", m).iter_rows()]
    # The backend returns only the continuation of the prefilled "Level: ", which is what is parsed;
    # a backend that cannot continue a prefill restarts the form ("Level: 2"), which parses as well.
    asked = ask_until_parsed(backend, [level_chat(m, post, reply) for _, m, post, reply, _ in jobs],
                             [f"{pid}:{m}" for pid, m, *_ in jobs], parse_level, sampling=sampling,
                             retries=retries, retry_temperature=retry_temperature, what="level judge")
    return pl.DataFrame({
        "pair_id": [j[0] for j in jobs], "mechanism": [j[1] for j in jobs], "human": [j[4] for j in jobs],
        "judge": asked.parsed, "raw_reply": asked.replies, "attempts": asked.attempts,
    }, schema={"pair_id": pl.String, "mechanism": pl.String, "human": pl.Int64, "judge": pl.Int64,
               "raw_reply": pl.String, "attempts": pl.Int64})


def agreement(judged: pl.DataFrame) -> dict:
    """Per mechanism: n, unparsed count and share, retried replies and judge calls, quadratic-weighted κ
    and accuracy on the parsed pairs, and both level distributions (a judge that always says 0 has κ 0
    and a high accuracy on ER)."""
    from sklearn.metrics import cohen_kappa_score

    out: dict = {}
    for mechanism in dict.fromkeys(judged["mechanism"].to_list()):
        rows = judged.filter(pl.col("mechanism") == mechanism)
        parsed = rows.drop_nulls("judge")
        human, judge = parsed["human"].to_numpy(), parsed["judge"].to_numpy()
        kappa = None
        if parsed.height > 1:
            with np.errstate(divide="ignore", invalid="ignore"):
                value = cohen_kappa_score(human, judge, labels=list(LEVELS), weights="quadratic")
            kappa = None if np.isnan(value) else round(float(value), 4)
        out[mechanism] = {
            "n": rows.height,
            "parsed": parsed.height,
            "unparsed": rows.height - parsed.height,
            "unparsed_pct": round(100 * (rows.height - parsed.height) / max(rows.height, 1), 2),
            "retried": int((rows["attempts"] > 1).sum()),  # asked again; some then parsed, the rest are unparsed
            "judge_calls": int(rows["attempts"].sum()),
            "kappa_quadratic": kappa,
            "accuracy": round(float((human == judge).mean()), 4) if parsed.height else None,
            "human_levels": {str(level): int((rows["human"] == level).sum()) for level in LEVELS},
            "judge_levels": {str(level): int((parsed["judge"] == level).sum()) for level in LEVELS},
            "anchor_kappa": KUMAR_2025_KAPPA.get(mechanism),
        }
    return out


def run(data_dir: str | Path, backend: ChatBackend, *, n: int | None, seed: int,
        mechanisms: Sequence[str] = MECHANISMS, held_out_fraction: float = HELD_OUT_FRACTION,
        split_seed: int = SPLIT_SEED, retries: int = DEFAULT_RETRIES,
        retry_temperature: float = DEFAULT_RETRY_TEMPERATURE) -> tuple[dict, pl.DataFrame]:
    """Judge `n` seeded held-out pairs (all when None) on each mechanism; (figures, per-call table)."""
    unknown = [m for m in mechanisms if m not in MECHANISMS]
    if unknown:
        raise PipelineError(f"judge-levels: unknown mechanism(s) {', '.join(unknown)} (use {', '.join(MECHANISMS)})")
    test = held_out_pairs(data_dir, held_out_fraction, split_seed)
    pairs = sample_rows(test, n, seed)
    judged = judge_levels(backend, pairs, mechanisms, retries=retries, retry_temperature=retry_temperature)
    figures = {"pairs": pairs.height, "held_out_pairs": test.height, "seed": seed,
               "split": {"held_out_fraction": held_out_fraction, "seed": split_seed},
               "retries": retries, "retry_temperature": retry_temperature,
               "mechanisms": agreement(judged)}
    return figures, judged


def format_figures(figures: dict, judge: str) -> str:
    """The agreement table as the command prints it."""
    lines = [f"EPITOME level judge {judge}: {figures['pairs']} held-out pairs (of {figures['held_out_pairs']}, "
             f"seed {figures['seed']}), Reddit posts, quadratic-weighted Cohen's kappa vs the human levels",
             f"{'mechanism':<10}{'kappa':>8}{'anchor':>8}{'accuracy':>10}{'parsed':>8}{'unparsed':>10}{'retried':>9}  "
             f"{'human 0/1/2':<14}judge 0/1/2"]
    for mechanism, f in figures["mechanisms"].items():
        kappa = "-" if f["kappa_quadratic"] is None else f"{f['kappa_quadratic']:.3f}"
        acc = "-" if f["accuracy"] is None else f"{f['accuracy']:.3f}"
        anchor = "-" if f["anchor_kappa"] is None else f"{f['anchor_kappa']:.2f}"
        human = "/".join(str(v) for v in f["human_levels"].values())
        judge_levels = "/".join(str(v) for v in f["judge_levels"].values())
        lines.append(f"{mechanism:<10}{kappa:>8}{anchor:>8}{acc:>10}{f['parsed']:>8}"
                     f"{f['unparsed']:>4} ({f['unparsed_pct']:.0f}%){f['retried']:>9}  {human:<14}{judge_levels}")
    lines.append("anchor: expert-vs-LLM kappa of frontier judges, Kumar et al. 2025 (arXiv 2506.10150); "
                 "kappa and accuracy count parsed replies only")
    lines.append(f"retried: replies that did not parse, asked again up to {figures['retries']} time(s) at "
                 f"temperature {figures['retry_temperature']}; unparsed: still not parsed after that")
    return "\n".join(lines)
