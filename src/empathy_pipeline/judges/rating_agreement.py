"""How far a substitute judge is from the papers' ChatGPT ratings (Efficient-Empathy §3.2).

`empathy judge-agreement` rates the papers' paper-format test set (or a seeded subset) with the
configured judge (params `rate` and `llm`, the same rating prompt and parser as the rate stage)
and compares its scores with the authors' released ratings: Spearman's rho and the mean absolute
error per score, the unparsed share, and the 3x3 confusion of D_s / D_r / D_d membership at
`split.threshold` with Cohen's kappa. A user who replaces ChatGPT with an open judge reads here
what the substitution costs before spending GPU days on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import sample_rows
from empathy_pipeline.data.ed import read_paper_json
from empathy_pipeline.efficient_empathy.rating import RATING_FORM_PREFIX, parse_rating, rate_samples
from empathy_pipeline.efficient_empathy.split import SUBSETS, split_by_threshold
from empathy_pipeline.llm.base import ChatBackend, Sampling

SCORES = ("sensibility", "rationality")


def released_ratings(path: Path, n: int | None, seed: int) -> pl.DataFrame:
    """Samples of the papers' JSON (sample_id, context, response) with the authors' two scores."""
    samples, _ = read_paper_json(path, "test")
    if "evaluation" not in samples.columns:
        raise PipelineError(f"{path}: items carry no `evaluation` (the authors' rating text)")
    parsed = [parse_rating(text or "") for text in samples["evaluation"].to_list()]
    samples = samples.with_columns(pl.Series("ref_sensibility", [p.sensibility for p in parsed]),
                                   pl.Series("ref_rationality", [p.rationality for p in parsed]))
    return sample_rows(samples, n, seed)


def compare(reference: pl.DataFrame, judged: pl.DataFrame, threshold: float) -> dict:
    """The agreement figures of judge scores (sample_id, sensibility, rationality) with the reference."""
    from scipy.stats import spearmanr
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    both = reference.join(judged.select("sample_id", *SCORES), on="sample_id", how="inner")
    out: dict = {"n": reference.height, "threshold": threshold}
    for score in SCORES:
        pairs = both.drop_nulls([score, f"ref_{score}"])
        out[f"{score}_unparsed_pct"] = round(100 * both[score].null_count() / max(both.height, 1), 2)
        ours, theirs = pairs[score].to_numpy(), pairs[f"ref_{score}"].to_numpy()
        rho = spearmanr(ours, theirs).statistic if len(pairs) > 1 and ours.std() and theirs.std() else None
        out[f"{score}_spearman"] = None if rho is None or np.isnan(rho) else round(float(rho), 4)
        out[f"{score}_mae"] = round(float(np.abs(ours - theirs).mean()), 4) if len(pairs) else None
    ref_sets, _ = split_by_threshold(both.select("sample_id", sensibility="ref_sensibility",
                                                 rationality="ref_rationality"), threshold)
    our_sets, _ = split_by_threshold(both.select("sample_id", *SCORES), threshold)
    sets = ref_sets.select("sample_id", ref="subset").join(our_sets.select("sample_id", judge="subset"),
                                                           on="sample_id").drop_nulls()
    out["split_pairs"] = sets.height
    if sets.height:
        matrix = confusion_matrix(sets["ref"].to_list(), sets["judge"].to_list(), labels=list(SUBSETS))
        out["split_confusion"] = {ref: dict(zip(SUBSETS, map(int, row), strict=True))
                                  for ref, row in zip(SUBSETS, matrix, strict=True)}  # rows: authors' sets
        kappa = cohen_kappa_score(sets["ref"].to_list(), sets["judge"].to_list(), labels=list(SUBSETS))
        out["split_kappa"] = None if np.isnan(kappa) else round(float(kappa), 4)
        out["split_agreement_pct"] = round(100 * float(np.trace(matrix)) / sets.height, 2)
    return out


def judge_agreement(path: Path, backend: ChatBackend, rate, threshold: float, *, n: int | None, seed: int,
                    shard_dir: Path, settings: dict) -> tuple[dict, pl.DataFrame]:
    """Rate the released test items with `backend` as the rate stage would; (figures, per-item table)."""
    reference = released_ratings(path, n, seed)
    judged, counts = rate_samples(backend, reference.select("sample_id", "context", "response"),
                                  retries=rate.retries, shard_dir=shard_dir, shard_size=rate.shard_size,
                                  sampling=Sampling(max_new_tokens=rate.max_new_tokens, seed=rate.seed),
                                  retry_temperature=rate.retry_temperature,
                                  prefill=RATING_FORM_PREFIX if rate.prefill else None, settings=settings)
    figures = {**compare(reference, judged, threshold), "judge_calls": counts["judge_calls"]}
    table = reference.select("sample_id", "ref_sensibility", "ref_rationality").join(
        judged.select("sample_id", *SCORES), on="sample_id", how="left")
    return figures, table
