"""Synth-Empathy §3.4: judge the coherence, naturalness and empathy (1-3 each) of synthetic samples.

The paper scores the generated data before and after its quality and diversity selection with the
Figure 4 prompts (prompts.judge_chat) and reports the mean rising from 2.65 to 2.88, with more than
95% of the selected data at full marks. A reply without a readable score counts as unparseable, per
criterion, and stays out of the means.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from . import prompts
from .errors import PipelineError
from .llm.base import ChatBackend, Sampling, request_seed
from .llm_table import fingerprint, run_sharded

CRITERIA = tuple(prompts.JUDGE_CRITERIA)
SCORES = (1, 2, 3)


JUDGED_SCHEMA = {"sample_id": pl.String,
                 **{f"{c}_reply": pl.String for c in CRITERIA}}


def before_and_after(generated: pl.DataFrame, selected: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The generated samples before selection, and the selected ones with their generated text
    (the selected table may carry only ids)."""
    ids = selected.select("sample_id")
    after = generated.join(ids, on="sample_id", how="semi", maintain_order="left")
    if after.height != ids.height:
        raise PipelineError(f"selection: {ids.height - after.height} sample_id(s) not among the generated samples "
                            "(rerun the selection stages)")
    return generated, after


def judge(samples: pl.DataFrame, backend: ChatBackend, max_new_tokens: int, *, shard_dir: str | Path,
          shard_size: int, settings: dict, seed: int = 0, show_progress: bool = True) -> tuple[pl.DataFrame, dict]:
    """One row per sample: sample_id, <criterion> (Int8, null when unparseable), <criterion>_reply;
    and the shard counts. Resumable through llm_table.run_sharded."""
    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=0.0, seed=seed)
    fp = fingerprint({"settings": settings, "sampling": sampling, "prompt": prompts.JUDGE_PROMPT,
                      "criteria": prompts.JUDGE_CRITERIA}, samples, ("sample_id", "context", "response"))

    def work(part: pl.DataFrame, _: int) -> pl.DataFrame:
        pairs = part.select("context", "response").rows()
        columns = {"sample_id": part["sample_id"]}
        for criterion in CRITERIA:
            chats = [prompts.judge_chat(criterion, context, response) for context, response in pairs]
            # Greedy ignores seeds; keyed per sample and criterion all the same, should judging ever sample.
            seeds = [request_seed(seed, f"{sample_id}#{criterion}") for sample_id in part["sample_id"].to_list()]
            columns[f"{criterion}_reply"] = backend.generate(chats, sampling, seeds)
        return pl.DataFrame(columns, schema=JUDGED_SCHEMA)

    replies, counts = run_sharded(samples, work, shard_dir=shard_dir, shard_size=shard_size, fingerprint=fp,
                                  schema=JUDGED_SCHEMA, what="judge_quality", show_progress=show_progress)
    scores = [pl.Series(c, [prompts.parse_judge_score(r, c) for r in replies[f"{c}_reply"].to_list()], dtype=pl.Int8)
              for c in CRITERIA]
    return replies.with_columns(scores), counts


def summarize(judged: pl.DataFrame, prefix: str) -> dict[str, float | int]:
    """Flat metrics: n, per criterion mean / % at each score / unparseable count, overall mean, % full marks."""
    out: dict[str, float | int] = {f"{prefix}_n": judged.height}
    means = []
    for criterion in CRITERIA:
        scores = judged[criterion].drop_nulls()
        mean = round(float(scores.mean()), 3) if scores.len() else None
        out[f"{prefix}_{criterion}_mean"] = mean
        for score in SCORES:
            share = 100 * int((scores == score).sum()) / scores.len() if scores.len() else 0.0
            out[f"{prefix}_{criterion}_score{score}_pct"] = round(share, 2)
        out[f"{prefix}_{criterion}_unparseable"] = judged.height - scores.len()
        if mean is not None:
            means.append(mean)
    out[f"{prefix}_mean"] = round(sum(means) / len(means), 3) if means else None
    complete = judged.drop_nulls(list(CRITERIA))
    full = complete.filter(pl.all_horizontal(pl.col(c) == 3 for c in CRITERIA)).height
    out[f"{prefix}_full_marks_pct"] = round(100 * full / complete.height, 2) if complete.height else 0.0
    return out
