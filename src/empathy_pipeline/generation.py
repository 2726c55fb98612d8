"""Synth-Empathy §3.1: generate new multi-round empathetic dialogues from ED seeds.

    Synthetic Dataset = LLM(Prompt(ED Data))

Each seed (one ED train sample) is sent `completions_per_seed` times with the paper's Figure 6
prompt (prompts.generation_chat); each reply is parsed into rounds (prompts.parse_rounds) and turned
into one training sample (build_samples). Unusable replies go to the rejects table with a reason.

Generation is the expensive step, so it runs in shards of `shard_size` seeds. Each finished shard
(the raw replies only) is written atomically to the shard directory beside a fingerprint of
everything that decides its content; a rerun after a crash skips the shards already there, and
because every shard draws from its own seed (not from one global random stream) the final files are
byte-identical to those of an uninterrupted run. Parsing and sample building run after the last
shard, over all replies, so they can change without regenerating anything.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from . import prompts
from .ed import SAMPLES_SCHEMA
from .errors import PipelineError
from .io import write_parquet
from .llm.base import ChatBackend, Sampling
from .shards import prepare_shard_dir, read_shard, shard_path

SYNTH_SCHEMA = {
    **SAMPLES_SCHEMA,
    "seed_sample_id": pl.String,
    "round_count": pl.Int32,      # rounds the generator wrote (complete ones), not rounds in the context
    "generator": pl.String,
    "prompt_variant": pl.Int32,
}
REJECTS_SCHEMA = {"seed_sample_id": pl.String, "raw_text": pl.String, "reason": pl.String}
COMPLETIONS_SCHEMA = {"seed_sample_id": pl.String, "completion": pl.Int32, "raw_text": pl.String}
REJECT_REASONS = (
    prompts.REJECT_EMPTY, prompts.REJECT_NO_ROUNDS, prompts.REJECT_MISSING_CONTEXT,
    prompts.REJECT_MISSING_RESPONSE, prompts.REJECT_MALFORMED_ROUND, prompts.REJECT_RESPONSE_TOO_LONG,
    prompts.REJECT_TOO_FEW_ROUNDS,
)
MAX_CONTEXT_ROUNDS = 3


# ---- seeds --------------------------------------------------------------------------------------

def select_seeds(train: pl.DataFrame, seeds: int | float, seed: int) -> pl.DataFrame:
    """`seeds` ED train samples (an int count, or a float fraction in (0, 1]), drawn with `seed`, in file order."""
    if isinstance(seeds, bool) or not isinstance(seeds, (int, float)) or seeds <= 0:
        raise PipelineError(f"generate.seeds: {seeds!r} is not a positive count or a fraction in (0, 1]")
    if isinstance(seeds, float) and seeds <= 1:
        n = max(1, round(seeds * train.height))
    elif float(seeds).is_integer():
        n = int(seeds)
    else:
        raise PipelineError(f"generate.seeds: {seeds!r} is neither a whole count nor a fraction in (0, 1]")
    if n > train.height:
        raise PipelineError(f"generate.seeds: {n} seeds asked for, but the train split has {train.height} samples")
    picked = np.sort(np.random.default_rng(seed).choice(train.height, size=n, replace=False))
    return train[picked]


# ---- fingerprint: what decides the content of a shard ------------------------------------------

def model_fingerprint(model: str) -> str:
    """A local model directory by its files (name, size, first and last MiB); anything else by its name.

    Cheap even for 15 GB checkpoints, and it changes when the weights are replaced.
    """
    path = Path(model)
    if not path.is_dir():
        return f"name:{model}"
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path)}:{size}".encode())
        with file.open("rb") as fh:
            digest.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), 2)
                digest.update(fh.read())
    return f"dir:{digest.hexdigest()}"


def config_fingerprint(settings: dict, seeds: pl.DataFrame) -> str:
    """sha256 of the generation settings (params, model) and of the seed samples' content."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for row in seeds.select("sample_id", "emotion", "context", "response").iter_rows():
        digest.update(json.dumps(row).encode())
    return digest.hexdigest()


# ---- sharded, resumable generation ----------------------------------------------------------------

def _log(line: str) -> None:
    print(line, flush=True)  # flushed: DVC and CI pipe stdout, and a progress line must not wait in a buffer


def shard_seed(seed: int, shard_index: int) -> int:
    """Independent sampling seed of one shard: the same whether or not earlier shards ran in this process."""
    return int(np.random.SeedSequence([seed, shard_index]).generate_state(1)[0])


def generate_completions(
    seeds: pl.DataFrame,
    shard_dir: str | Path,
    make_backend: Callable[[], ChatBackend],
    *,
    prompt_variant: int,
    completions_per_seed: int,
    sampling: Sampling,
    max_response_words: int,
    shard_size: int,
    fingerprint: str,
    log: Callable[[str], None] = _log,
) -> pl.DataFrame:
    """Raw replies (seed_sample_id, completion, raw_text), `completions_per_seed` per seed, in seed order.

    Shards already on disk with the same fingerprint are reused; the model is loaded only when a
    shard is missing (`make_backend` is called at most once).
    """
    if shard_size < 1 or completions_per_seed < 1:
        raise PipelineError("generate.shard_size and generate.completions_per_seed must be >= 1")
    shard_dir = Path(shard_dir)
    prepare_shard_dir(shard_dir, fingerprint, log, "generate")
    n_shards = (seeds.height + shard_size - 1) // shard_size
    backend: ChatBackend | None = None
    shards: list[pl.DataFrame] = []
    done_before = 0
    for index in range(n_shards):
        part = seeds.slice(index * shard_size, shard_size)
        ids = [sid for sid in part["sample_id"].to_list() for _ in range(completions_per_seed)]
        path = shard_path(shard_dir, index)
        shard = read_shard(path, list(COMPLETIONS_SCHEMA), "seed_sample_id", ids)
        if shard is None and path.exists():
            log(f"generate: {path} is unreadable or holds other seeds; generating it again")
        if shard is not None:
            done_before += 1
            shards.append(shard)
            continue
        if backend is None:
            if done_before:
                log(f"generate: resuming after {done_before}/{n_shards} finished shards")
            backend = make_backend()
        started = time.time()
        chats = [
            prompts.generation_chat(row["context"], row["response"], row["emotion"], prompt_variant,
                                    max_words=max_response_words)
            for row in part.iter_rows(named=True)
            for _ in range(completions_per_seed)
        ]
        shard_sampling = Sampling(sampling.max_new_tokens, sampling.temperature, sampling.top_p,
                                  shard_seed(sampling.seed, index))
        replies = backend.generate(chats, shard_sampling)
        if len(replies) != len(chats):
            raise PipelineError(f"generate: backend returned {len(replies)} replies for {len(chats)} prompts")
        shard = pl.DataFrame(
            {"seed_sample_id": ids, "completion": [k % completions_per_seed for k in range(len(ids))],
             "raw_text": replies},
            schema=COMPLETIONS_SCHEMA,
        )
        write_parquet(shard, path)
        shards.append(shard)
        log(f"generate: shard {index + 1}/{n_shards} written ({part.height} seeds, {time.time() - started:.0f} s)")
    if backend is None and n_shards:
        log(f"generate: all {n_shards} shards already done")
    if not shards:
        return pl.DataFrame(schema=COMPLETIONS_SCHEMA)
    return pl.concat(shards)


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
