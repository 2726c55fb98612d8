"""Two-level paired bootstrap of B − A over training seeds and test items; Holm; the length check.

`empathy compare` (compare.py) resamples test items only: it answers "is the gap bigger than the
noise of this test set?" for two fixed models. A claim is about *recipes*: retrain with another seed
and the gap moves (docs/results.md: seed-to-seed spreads of B-1 up to 0.5). This module puts that
noise into the interval:

- one replicate resamples each arm's training seeds with replacement (independently: the arms are
  separate trainings), then one set of test items with replacement, shared by both arms (paired by
  item); each side's value is the corpus metric of the resampled items — BLEU, Distinct, CIDEr
  recomputed on them by compare.CorpusStats, the one implementation — averaged over the resampled
  seeds; the replicate's statistic is B − A;
- the interval is the percentile interval of the replicates; the p-value is two-sided from the
  bootstrap standard error, p = 2·Φ(−|Δ| / SE*): a tail count of R replicates cannot go below
  2/(R+1), and Holm over a table of a few dozen tests needs smaller p-values than 1000 resamples can
  count; the power note (docs/results.md) uses the same normal approximation;
- beside Δ: each arm's seed-to-seed spread (sample std of the full-set metric over its seeds).

An arm with fewer than MIN_SEEDS seeds gets numbers but no verdict: resampling 1 or 2 seeds says
nothing about the seed variance (claims.py turns that into "needs seeds").

The length check: ED replies of these models are shorter than the references (about 11 against 16
tokens), so BLEU's brevity penalty rewards whichever arm talks longer. For every comparison: each
arm's mean reply length (BLEU's tokens) against the references', its corpus brevity penalty, and Δ
again on the items where the two arms' replies (mean over seeds) are within LENGTH_TOLERANCE tokens
of each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy import stats

from empathy_pipeline.analysis.compare import (
    BERTSCORE_KEYS,
    CORPUS_KEYS,
    LABELS,
    CorpusStats,
    bertscore_items,
)
from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.evaluation.metrics import check_pairs

MIN_SEEDS = 3           # below this a seed resample is no estimate of the seed variance: no verdict
LENGTH_TOLERANCE = 2    # tokens: an item is length-matched when the arms' replies differ by at most this
LENGTH_KEYS = ("length", "bp")   # mean reply length (BLEU tokens) and BLEU's brevity penalty
KEY_LABELS = {**LABELS, "length": "length", "bp": "BP"}


# ---- inputs: one arm = its seeds' replies to the same items -------------------------------------


@dataclass
class SeedReplies:
    """An arm's replies, one list per training seed, aligned with `references` (and `sample_ids`)."""

    name: str
    seeds: list[int]
    replies: list[list[str]]
    references: list[str]
    sample_ids: list[str] | None = None


def align(a_name: str, a: dict[int, pl.DataFrame], b_name: str, b: dict[int, pl.DataFrame]
          ) -> tuple[SeedReplies, SeedReplies]:
    """Both arms' seeds on the items every table has: by sample_id when all have it, else row by row."""
    tables = [(f"{name} seed {s}", df) for name, side in ((a_name, a), (b_name, b)) for s, df in sorted(side.items())]
    for label, df in tables:
        if df.height == 0:
            raise PipelineError(f"{label}: no predictions")
    if all("sample_id" in df.columns for _, df in tables):
        for label, df in tables:
            if df["sample_id"].is_duplicated().any():
                raise PipelineError(f"{label}: a sample_id occurs more than once")
        shared = set.intersection(*(set(df["sample_id"].to_list()) for _, df in tables))
        ids = [i for i in tables[0][1]["sample_id"].to_list() if i in shared]
        if len(ids) < 2:
            raise PipelineError(f"{a_name} and {b_name} share {len(ids)} sample_id(s): a bootstrap needs two")
        order = pl.DataFrame({"sample_id": ids})
        tables = [(label, order.join(df.select("sample_id", "prediction", "reference"), on="sample_id",
                                     how="left", maintain_order="left")) for label, df in tables]
    else:
        ids = None
        if len({df.height for _, df in tables}) != 1:
            raise PipelineError(f"{a_name} and {b_name}: tables of different lengths and no sample_id on all: "
                                "items can only be paired row by row")
    references = tables[0][1]["reference"].to_list()
    for label, df in tables:
        if df["reference"].to_list() != references:
            raise PipelineError(f"{label}: references differ from {tables[0][0]}'s (not the same test items)")
        try:
            check_pairs(df["prediction"].to_list(), references)
        except PipelineError as exc:
            raise PipelineError(f"{label}: {exc}") from None
    replies = [df["prediction"].to_list() for _, df in tables]
    return (SeedReplies(a_name, sorted(a), replies[:len(a)], references, ids),
            SeedReplies(b_name, sorted(b), replies[len(a):], references, ids))


# ---- per-seed scores under item weightings --------------------------------------------------------


class SeedScores:
    """Every metric of each of an arm's seeds, for any weighting of the test items: (seeds, batch, keys)."""

    def __init__(self, arm: SeedReplies, keys: Sequence[str], bertscore_options: dict | None = None):
        self.arm, self.keys = arm, tuple(keys)
        # BLEU's per-item token counts are where the lengths come from
        groups = [k for k in self.keys if k in CORPUS_KEYS] + ["bleu1"]
        self.stats = [CorpusStats(replies, arm.references, groups=groups) for replies in arm.replies]
        self.item_values: list[dict[str, np.ndarray]] = [{} for _ in arm.seeds]
        if set(self.keys) & set(BERTSCORE_KEYS):
            n = len(arm.references)
            # one scorer pass over all seeds' replies
            prf = bertscore_items([r for replies in arm.replies for r in replies], arm.references * len(arm.seeds),
                                  **(bertscore_options or {}))
            for s in range(len(arm.seeds)):
                self.item_values[s] = {k: prf[s * n:(s + 1) * n, i] for i, k in enumerate(BERTSCORE_KEYS)}

    @property
    def item_lengths(self) -> np.ndarray:
        """Each item's reply length in BLEU tokens, mean over seeds."""
        return np.mean([s.hyp_len for s in self.stats], axis=0)

    @property
    def reference_length(self) -> float:
        return float(self.stats[0].ref_len.mean())

    def values(self, weights: np.ndarray) -> np.ndarray:
        out = np.empty((len(self.stats), len(weights), len(self.keys) + len(LENGTH_KEYS)))
        for s, (corpus_stats, items) in enumerate(zip(self.stats, self.item_values, strict=True)):
            corpus = corpus_stats.corpus_batch(weights)
            for j, k in enumerate(self.keys):
                out[s, :, j] = corpus[k] if k in corpus else weights @ items[k] / weights.sum(axis=1)
            out[s, :, len(self.keys):] = np.stack(corpus_stats.lengths(weights), axis=1)
        return out


def item_weights(n_items: int, n_resamples: int, seed: int, subset: np.ndarray | None = None) -> np.ndarray:
    """(n_resamples, n_items) counts: each row one bootstrap sample of the items (of `subset` if given)."""
    pool = np.arange(n_items) if subset is None else np.asarray(subset)
    draws = pool[np.random.default_rng(seed).integers(0, len(pool), size=(n_resamples, len(pool)))]
    flat = draws + n_items * np.arange(n_resamples)[:, None]
    return np.bincount(flat.ravel(), minlength=n_resamples * n_items).reshape(n_resamples, n_items)


def seed_weights(n_seeds: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n_seeds) weights summing to 1: each row one resample of the seeds with replacement."""
    draws = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    return np.stack([np.bincount(row, minlength=n_seeds) for row in draws]) / n_seeds


def p_from_se(diff: np.ndarray, se: np.ndarray) -> np.ndarray:
    """Two-sided normal p of diff / se; a degenerate bootstrap (se 0) gives 1 for diff 0, else 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * stats.norm.sf(np.abs(diff) / se)
    return np.where(se > 0, p, np.where(diff == 0, 1.0, 0.0))


# ---- the two-level comparison ---------------------------------------------------------------------


@dataclass
class TwoLevel:
    """Two-level paired bootstraps with one item resampling per item set, shared by every comparison
    (each arm's seeds are scored once per item set, whatever it is compared with)."""

    keys: tuple[str, ...]
    n_resamples: int = 2000
    seed: int = 0
    confidence: float = 0.95
    bertscore_options: dict | None = None
    _scores: dict = field(default_factory=dict, repr=False)
    _weights: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.n_resamples < 2:
            raise PipelineError(f"n_resamples must be at least 2, got {self.n_resamples}")
        if not 0 < self.confidence < 1:
            raise PipelineError(f"confidence must be between 0 and 1, got {self.confidence}")
        unknown = [k for k in self.keys if k not in (*CORPUS_KEYS, *BERTSCORE_KEYS)]
        if unknown:
            raise PipelineError(f"unknown metric(s) {', '.join(unknown)}")
        self.keys = tuple(self.keys)

    def _seed_scores(self, arm: SeedReplies) -> tuple[SeedScores, np.ndarray]:
        """The arm's scores and their values under the shared item resamples (cached per item set)."""
        memo = (arm.name, tuple(arm.seeds), tuple(arm.sample_ids or ()), len(arm.references))
        if memo not in self._scores:
            scores = SeedScores(arm, self.keys, self.bertscore_options)
            self._scores[memo] = (scores, scores.values(self._item_weights(len(arm.references))))
        return self._scores[memo]

    def _item_weights(self, n: int) -> np.ndarray:
        if n not in self._weights:
            self._weights[n] = item_weights(n, self.n_resamples, self.seed)
        return self._weights[n]

    def compare(self, a: SeedReplies, b: SeedReplies) -> dict:
        """B − A per metric over the seeds and items of both, with the length check."""
        (a_scores, a_boot), (b_scores, b_boot) = self._seed_scores(a), self._seed_scores(b)
        n = len(a.references)
        full = self._summary(a_scores, a_boot, b_scores, b_boot, np.ones((1, n), dtype=np.int64))
        matched = np.flatnonzero(np.abs(a_scores.item_lengths - b_scores.item_lengths) <= LENGTH_TOLERANCE)
        out = {"a": a.name, "b": b.name, "difference": "B - A", "seeds_a": a.seeds, "seeds_b": b.seeds,
               "n_items": n, "paired_by": "sample_id" if a.sample_ids is not None else "row",
               "n_resamples": self.n_resamples, "seed": self.seed, "confidence": self.confidence,
               "ci_method": "percentile of a two-level bootstrap (seeds within each arm, then items, paired)",
               "p_value_method": "two-sided normal, 2·Φ(−|Δ|/SE) with SE the bootstrap standard error",
               "metrics": full["metrics"], "length": {**full["length"], "reference": a_scores.reference_length}}
        if len(matched) >= 2:
            # a fresh item resampling of the matched items only: these scores are not the shared ones
            weights = item_weights(n, self.n_resamples, self.seed, matched)
            indicator = np.zeros((1, n), dtype=np.int64)
            indicator[0, matched] = 1
            sub = self._summary(a_scores, a_scores.values(weights), b_scores, b_scores.values(weights), indicator)
            out["length_matched"] = {"tolerance": LENGTH_TOLERANCE, "n_items": len(matched),
                                     "metrics": sub["metrics"], "length": sub["length"]}
        else:
            out["length_matched"] = {"tolerance": LENGTH_TOLERANCE, "n_items": len(matched), "metrics": []}
        return out

    def _summary(self, a_scores: SeedScores, a_boot: np.ndarray, b_scores: SeedScores, b_boot: np.ndarray,
                 observed_weights: np.ndarray) -> dict:
        rng = np.random.default_rng([self.seed, 1])
        a_seeds = seed_weights(a_boot.shape[0], self.n_resamples, rng)
        b_seeds = seed_weights(b_boot.shape[0], self.n_resamples, rng)
        delta = np.einsum("rs,srk->rk", b_seeds, b_boot) - np.einsum("rs,srk->rk", a_seeds, a_boot)
        # the item part alone (every seed once): the power note's item variance
        item_delta = b_boot.mean(axis=0) - a_boot.mean(axis=0)
        a_obs, b_obs = a_scores.values(observed_weights)[:, 0, :], b_scores.values(observed_weights)[:, 0, :]
        diff = b_obs.mean(axis=0) - a_obs.mean(axis=0)
        tail = (1 - self.confidence) / 2
        low, high = np.quantile(delta, [tail, 1 - tail], axis=0)
        se = delta.std(axis=0, ddof=1)
        p = p_from_se(diff, se)
        a_std, b_std = _seed_std(a_obs), _seed_std(b_obs)
        keys = (*self.keys, *LENGTH_KEYS)
        metrics = [{"metric": k, "label": KEY_LABELS[k], "a": float(a_obs[:, j].mean()), "b": float(b_obs[:, j].mean()),
                    "diff": float(diff[j]), "ci_low": float(low[j]), "ci_high": float(high[j]), "se": float(se[j]),
                    "item_se": float(item_delta[:, j].std(ddof=1)), "p_value": float(p[j]),
                    "a_seed_std": a_std[j], "b_seed_std": b_std[j]} for j, k in enumerate(keys)]
        return {"metrics": [m for m in metrics if m["metric"] not in LENGTH_KEYS],
                "length": {m["metric"]: m for m in metrics if m["metric"] in LENGTH_KEYS}}


def _seed_std(values: np.ndarray) -> list[float | None]:
    """Sample std over seeds (rows) per metric; None with one seed."""
    if len(values) < 2:
        return [None] * values.shape[1]
    return [float(x) for x in values.std(axis=0, ddof=1)]


def compare_seeds(a_name: str, a: dict[int, pl.DataFrame], b_name: str, b: dict[int, pl.DataFrame],
                  keys: Sequence[str], n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95,
                  bertscore_options: dict | None = None) -> dict:
    """One two-level comparison of two arms given as {seed: predictions table}."""
    two_level = TwoLevel(tuple(keys), n_resamples, seed, confidence, bertscore_options)
    return two_level.compare(*align(a_name, a, b_name, b))


# ---- the family and the design's power ---------------------------------------------------------


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error over all of them), in the input order."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, stepped)
    return adjusted.tolist()


def minimum_detectable(seed_var: float, item_var: float, n_seeds: int, alpha: float, power: float = 0.8) -> float:
    """The smallest true B − A that a two-sided test at `alpha` detects with probability `power`, when each
    arm has `n_seeds` seeds: (z_{1−α/2} + z_power) · sqrt(2·seed_var/n_seeds + item_var). The item part
    is taken at its measured value with the seeds then at hand (conservative: more seeds shrink its
    seed-by-item share too)."""
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(z * np.sqrt(2 * seed_var / n_seeds + item_var))
