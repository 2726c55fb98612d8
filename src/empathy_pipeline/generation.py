"""Synth-Empathy §3.1: generate new multi-round empathetic dialogues from ED seeds (`generate.recipe: synth_empathy`).

    Synthetic Dataset = LLM(Prompt(ED Data))

Each seed (one ED train sample) is sent `completions_per_seed` times with the paper's Figure 6
prompt (prompts.generation_chat); each reply is parsed into rounds (prompts.parse_rounds) and turned
into one training sample (build_samples). Unusable replies go to the rejects table with a reason.

Generation is the expensive step, so it runs through llm_table.run_sharded in shards of
`shard_size` seeds (the raw replies only): a rerun after a crash skips the shards already done, and
because every reply draws from its own seed (keyed by its seed sample and completion) the final
files are byte-identical to those of an uninterrupted run, whatever shard_size or batch_size.
Parsing and sample building run after the last shard, over all replies, so they
can change without regenerating anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from . import prompts
from .ed import SAMPLES_SCHEMA
from .errors import PipelineError
from .io import sample_rows
from .llm.base import SEEDING, ChatBackend, Sampling, request_seed
from .llm_table import fingerprint, run_sharded

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
    prompts.REJECT_EMPTY, prompts.REJECT_NO_ROUNDS, prompts.REJECT_MISSING_CONTEXT,
    prompts.REJECT_MISSING_RESPONSE, prompts.REJECT_MALFORMED_ROUND, prompts.REJECT_RESPONSE_TOO_LONG,
    prompts.REJECT_TOO_FEW_ROUNDS,
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
    prompt = prompts.generation_chat(["{context}"], "{response}", "{emotion}", prompt_variant,
                                     max_words=max_response_words)
    fp = fingerprint({"settings": settings, "prompt": prompt, "sampling": sampling,
                      "completions_per_seed": completions_per_seed,
                      **(SEEDING if sampling.temperature > 0 else {})}, seeds,
                     ("sample_id", "emotion", "context", "response"))

    def work(part: pl.DataFrame, index: int) -> pl.DataFrame:
        rows = [row for row in part.iter_rows(named=True) for _ in range(completions_per_seed)]
        chats = [prompts.generation_chat(row["context"], row["response"], row["emotion"], prompt_variant,
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
        parsed = prompts.parse_rounds(raw, max_response_words=max_response_words, prefix=prompts.GENERATION_PREFILL)
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
