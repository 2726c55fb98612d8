"""Synth-Empathy §3.4: judge the coherence, naturalness and empathy (1-3 each) of synthetic samples.

The paper scores the generated data before and after its quality and diversity selection with the
Figure 4 prompts (prompts.judge_chat) and reports the mean rising from 2.65 to 2.88, with more than
95% of the selected data at full marks. A reply without a readable score counts as unparseable, per
criterion, and stays out of the means.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from . import prompts
from .llm.base import ChatBackend, Sampling

CRITERIA = tuple(prompts.JUDGE_CRITERIA)
SCORES = (1, 2, 3)


def sample_rows(df: pl.DataFrame, size: int | None, seed: int) -> pl.DataFrame:
    """`size` rows drawn with `seed` (all rows when size is None or larger), in file order."""
    if size is None or size >= df.height:
        return df
    return df[np.sort(np.random.default_rng(seed).choice(df.height, size=int(size), replace=False))]


def judge(samples: pl.DataFrame, backend: ChatBackend, max_new_tokens: int, seed: int = 0) -> pl.DataFrame:
    """One row per sample: sample_id, <criterion> (Int8, null when unparseable), <criterion>_reply."""
    chats = [prompts.judge_chat(criterion, context, response)
             for criterion in CRITERIA
             for context, response in samples.select("context", "response").iter_rows()]
    replies = backend.generate(chats, Sampling(max_new_tokens=max_new_tokens, temperature=0.0, seed=seed)) if chats else []
    n = samples.height
    columns: dict[str, pl.Series] = {"sample_id": samples["sample_id"]}
    for k, criterion in enumerate(CRITERIA):
        chunk = replies[k * n:(k + 1) * n]
        columns[criterion] = pl.Series(criterion, [prompts.parse_judge_score(r, criterion) for r in chunk], dtype=pl.Int8)
        columns[f"{criterion}_reply"] = pl.Series(f"{criterion}_reply", chunk, dtype=pl.String)
    return pl.DataFrame(columns)


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
