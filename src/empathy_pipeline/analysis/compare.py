"""`empathy compare A B`: paired significance of B − A for every metric, on the same test items.

(With several training seeds a side, `empathy compare A0,A1,A2 B0,B1,B2`, the comparison is the
two-level bootstrap of bootstrap.py: seeds, then items; what follows is the one-model-a-side case.)

The question a reviewer asks of two rows of the papers' tables is whether the gap is bigger than
the noise of the test set. We answer it by resampling test items (the unit the two models share):

- confidence interval: `scipy.stats.bootstrap(..., paired=True, vectorized=False)` resamples item
  indices with replacement; for each resample both sides are scored on the *same* items and the
  statistic is B − A. BLEU, Distinct and CIDEr are corpus metrics (not means of per-item values),
  so each resample recomputes the corpus metric; ROUGE and BERTScore are means of per-item scores,
  so their statistic is the mean of per-item differences (BERTScore is run once, never per resample).
- p-value: `scipy.stats.permutation_test(..., permutation_type='samples')`, the paired test: under
  H0 "A and B are exchangeable", each item's two replies may be swapped between the sides; the
  p-value is two-sided, with scipy's +1 correction for a random (not exhaustive) set of swaps.

Each resample must be cheap, so the per-item ingredients of every corpus metric are computed once
(`CorpusStats`): BLEU's clipped n-gram counts and lengths (the corpus score is a function of their
sums), Distinct's per-item n-gram sets (a resample's unique count is the size of their union),
CIDEr's tf vectors and reference document sets (its idf depends on the resampled corpus: document
frequencies are re-summed per resample and the CIDEr-D formula of pycocoevalcap re-evaluated, so
nothing is approximated). `CorpusStats.corpus(rows)` equals the `metrics` functions on those rows
(duplicates included) to floating-point rounding; the tests check it.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from scipy import sparse, stats

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import read_predictions
from empathy_pipeline.evaluation.metrics import (
    BLEU_ORDERS,
    DISTINCT_ORDERS,
    ROUGE_TYPES,
    RougeTokenizer,
    check_pairs,
    tokenize,
)

PREDICTION_SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".csv")
BLEU_KEYS = tuple(f"bleu{n}" for n in range(1, BLEU_ORDERS + 1))
DISTINCT_KEYS = tuple(f"dist{n}" for n in range(1, DISTINCT_ORDERS + 1))
BERTSCORE_KEYS = ("bertscore_p", "bertscore_r", "bertscore_f1")
CORPUS_KEYS = (*BLEU_KEYS, *ROUGE_TYPES, *DISTINCT_KEYS, "cider")
METRICS = (*CORPUS_KEYS, *BERTSCORE_KEYS)
LABELS = {"bleu1": "B-1", "bleu2": "B-2", "bleu3": "B-3", "bleu4": "B-4", "rouge1": "R-1", "rouge2": "R-2",
          "rougeL": "R-L", "dist1": "D-1", "dist2": "D-2", "cider": "CIDEr", "bertscore_p": "BERT-P",
          "bertscore_r": "BERT-R", "bertscore_f1": "BERT-F1"}
# metrics that are means of per-item values: their paired statistic is the mean per-item difference
MEAN_KEYS = (*ROUGE_TYPES, *BERTSCORE_KEYS)
BLEU_EPSILON = 1e-12     # metrics.bleu's SmoothingFunction(epsilon=1e-12).method1
CIDER_ORDERS, CIDER_SIGMA = 4, 6.0  # pycocoevalcap's Cider() defaults


# ---- inputs -------------------------------------------------------------------------------------


@dataclass
class Paired:
    """The items both sides answered: row k of `a` and of `b` reply to the same context/reference."""

    a_name: str
    b_name: str
    a: list[str]
    b: list[str]
    references: list[str]
    paired_by: str                      # "sample_id" or "row"
    only_a: int = 0                     # items of A without a partner in B (sample_id pairing)
    only_b: int = 0


def resolve(spec: str, predictions_dir: Path) -> tuple[str, pl.DataFrame]:
    """A predictions file (by suffix or because it exists), else an evaluated model's per-item file."""
    path = Path(spec)
    if path.suffix.lower() in PREDICTION_SUFFIXES or path.exists():
        return path.stem, read_predictions(path)
    file = predictions_dir / f"{spec}.parquet"
    if not file.exists():
        raise PipelineError(f"{spec}: neither a predictions file nor an evaluated model ({file} not found)")
    return spec, read_predictions(file)


def pair(a_name: str, a: pl.DataFrame, b_name: str, b: pl.DataFrame) -> Paired:
    """Pair items by sample_id when both tables have it, else row by row; references must agree."""
    for name, df in ((a_name, a), (b_name, b)):
        if df.height == 0:
            raise PipelineError(f"{name}: no predictions")
    if "sample_id" in a.columns and "sample_id" in b.columns:
        for name, df in ((a_name, a), (b_name, b)):
            dup = df["sample_id"].is_duplicated()
            if dup.any():
                raise PipelineError(f"{name}: sample_id {df['sample_id'].filter(dup)[0]!r} occurs more than once")
        cols = ["sample_id", "prediction", "reference"]
        joined = a.select(cols).join(b.select(cols), on="sample_id", how="inner", suffix="_b",
                                     maintain_order="left")
        if joined.height == 0:
            raise PipelineError(f"{a_name} and {b_name} share no sample_id: nothing to compare")
        differ = joined.filter(pl.col("reference") != pl.col("reference_b"))
        if differ.height:
            raise PipelineError(f"{a_name} and {b_name}: references differ for {differ.height} shared sample_id(s), "
                                f"first {differ['sample_id'][0]!r}")
        result = Paired(a_name, b_name, joined["prediction"].to_list(), joined["prediction_b"].to_list(),
                        joined["reference"].to_list(), "sample_id", a.height - joined.height, b.height - joined.height)
    else:
        if a.height != b.height:
            raise PipelineError(f"{a_name} has {a.height} rows and {b_name} {b.height}, and without sample_id "
                                "on both sides items can only be paired row by row")
        ra, rb = a["reference"].to_list(), b["reference"].to_list()
        bad = next((i for i, (x, y) in enumerate(zip(ra, rb, strict=True)) if x != y), None)
        if bad is not None:
            raise PipelineError(f"{a_name} and {b_name}: references differ at row {bad} (not the same test items)")
        result = Paired(a_name, b_name, a["prediction"].to_list(), b["prediction"].to_list(), ra, "row")
    for name, preds in ((a_name, result.a), (b_name, result.b)):
        try:
            check_pairs(preds, result.references)
        except PipelineError as exc:
            raise PipelineError(f"{name}: {exc}") from None
    if len(result.references) < 2:
        raise PipelineError(f"{a_name} and {b_name} share one item: a bootstrap needs at least two")
    return result


# ---- per-item ingredients of the corpus metrics ----------------------------------------------------


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


class CorpusStats:
    """Per-row statistics of (hypothesis, reference) rows; `corpus(rows)` scores any multiset of rows."""

    def __init__(self, hypotheses: Sequence[str], references: Sequence[str], groups: Sequence[str] = CORPUS_KEYS):
        check_pairs(hypotheses, references)
        self.size = len(hypotheses)
        self.groups = set(groups)
        hyp_tok = [tokenize(h) for h in hypotheses]
        ref_tok = [tokenize(r) for r in references]
        if self.groups & set(BLEU_KEYS):
            self._init_bleu(hyp_tok, ref_tok)
        if self.groups & set(ROUGE_TYPES):
            self._init_rouge(hypotheses, references)
        if self.groups & set(DISTINCT_KEYS):
            self._init_distinct(hyp_tok)
        if "cider" in self.groups:
            # metrics.cider joins the tokens and pycocoevalcap splits the string again
            self._init_cider([" ".join(t).split() for t in hyp_tok], [" ".join(t).split() for t in ref_tok])

    # BLEU: nltk corpus_bleu sums, per order, clipped matches and max(1, hypothesis n-grams) over items
    def _init_bleu(self, hyp_tok, ref_tok) -> None:
        matches = np.zeros((self.size, BLEU_ORDERS), dtype=np.int64)
        totals = np.zeros((self.size, BLEU_ORDERS), dtype=np.int64)
        for r, (hyp, ref) in enumerate(zip(hyp_tok, ref_tok, strict=True)):
            for n in range(1, BLEU_ORDERS + 1):
                counts = Counter(_ngrams(hyp, n))
                ref_counts = Counter(_ngrams(ref, n))
                matches[r, n - 1] = sum(min(c, ref_counts[g]) for g, c in counts.items())
                totals[r, n - 1] = max(1, sum(counts.values()))
        self.bleu_matches, self.bleu_totals = matches, totals
        self.hyp_len = np.array([len(t) for t in hyp_tok], dtype=np.int64)
        self.ref_len = np.array([len(t) for t in ref_tok], dtype=np.int64)

    def _bleu(self, w: np.ndarray) -> np.ndarray:
        """BLEU-1..4 of each weighting: (batch, rows) multiplicities in, (batch, orders) out."""
        num, den = w @ self.bleu_matches, w @ self.bleu_totals
        bp = brevity_penalty(w @ self.hyp_len, w @ self.ref_len)
        p = np.where(num == 0, (num + BLEU_EPSILON) / den, num / np.maximum(den, 1))
        # order n is the geometric mean of p_1..p_n (uniform cumulative weights)
        cumulative = np.cumsum(np.log(p), axis=1) / np.arange(1, BLEU_ORDERS + 1)
        out = 100.0 * bp[:, None] * np.exp(cumulative)
        out[num[:, 0] == 0] = 0.0
        return out

    def lengths(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean reply length in BLEU's tokens and BLEU's brevity penalty, per weighting (batch, rows)."""
        hyp = w @ self.hyp_len
        return hyp / w.sum(axis=1), brevity_penalty(hyp, w @ self.ref_len)

    # ROUGE: metrics.rouge averages per-item F-measures
    def _init_rouge(self, hypotheses, references) -> None:
        from rouge_score.rouge_scorer import RougeScorer

        scorer = RougeScorer(list(ROUGE_TYPES), tokenizer=RougeTokenizer())
        self.rouge_items = np.array([[s[name].fmeasure for name in ROUGE_TYPES]
                                     for s in (scorer.score(target=r, prediction=h)
                                               for h, r in zip(hypotheses, references, strict=True))]) * 100.0

    # Distinct: unique n-grams of the pooled predictions over all their n-grams
    def _init_distinct(self, hyp_tok) -> None:
        self.dist_presence, self.dist_counts = [], []
        for n in range(1, DISTINCT_ORDERS + 1):
            per_row = [_ngrams(t, n) for t in hyp_tok]
            self.dist_presence.append(_presence([set(g) for g in per_row]).T.tocsr())  # vocab x rows
            self.dist_counts.append(np.array([len(g) for g in per_row], dtype=np.int64))

    def _distinct(self, w: np.ndarray) -> np.ndarray:
        present = (w > 0).T.astype(np.float64)                                  # rows x batch
        out = []
        for matrix, counts in zip(self.dist_presence, self.dist_counts, strict=True):
            total = w @ counts
            unique = np.asarray((matrix @ present) != 0).sum(axis=0)
            out.append(np.divide(100.0 * unique, total, out=np.zeros(len(w)), where=total != 0))
        return np.stack(out, axis=1)

    # CIDEr-D as pycocoevalcap computes it, with tf vectors precomputed and idf per resampled corpus
    def _init_cider(self, hyp_words, ref_words) -> None:
        vocab: dict[tuple[str, ...], int] = {}

        def cook(words):
            counts = Counter(g for n in range(1, CIDER_ORDERS + 1) for g in _ngrams(words, n))
            return {vocab.setdefault(g, len(vocab)): (len(g) - 1, c) for g, c in counts.items()}, \
                sum(c for g, c in counts.items() if len(g) == 2)  # pycocoevalcap's "length": bigram count

        hyps = [cook(w) for w in hyp_words]
        refs = [cook(w) for w in ref_words]
        # per order: sum_g idf_g^2 * x_g gives the clipped dot product, |hyp|^2 and |ref|^2
        rows, cols, dot, hyp_sq, ref_sq, orders_h, orders_r = [[] for _ in range(7)]
        r_rows, r_cols, r_vals = [], [], []
        for r, ((h, _), (ref, _)) in enumerate(zip(hyps, refs, strict=True)):
            for g, (order, tf) in h.items():
                rows.append(order * self.size + r)
                cols.append(g)
                tf_ref = ref[g][1] if g in ref else 0
                dot.append(min(tf, tf_ref) * tf_ref)  # min(h, r) * r with h = tf*idf, r = tf_ref*idf
                hyp_sq.append(tf * tf)
            for g, (order, tf) in ref.items():
                r_rows.append(order * self.size + r)
                r_cols.append(g)
                r_vals.append(tf * tf)
        shape = (CIDER_ORDERS * self.size, max(len(vocab), 1))
        self.cider_dot = sparse.csr_matrix((np.array(dot, float), (rows, cols)), shape=shape)
        self.cider_hyp = sparse.csr_matrix((np.array(hyp_sq, float), (rows, cols)), shape=shape)
        self.cider_ref = sparse.csr_matrix((np.array(r_vals, float), (r_rows, r_cols)), shape=shape)
        self.cider_docs = _presence([set(ref) for ref, _ in refs], len(vocab)).T.tocsr()  # vocab x rows
        delta = np.array([float(h[1] - ref[1]) for h, ref in zip(hyps, refs, strict=True)])
        self.cider_penalty = np.array([np.e ** (-(d ** 2) / (2 * CIDER_SIGMA ** 2)) for d in delta])
        self.ref_empty = np.array([not w for w in ref_words])

    def _cider(self, w: np.ndarray) -> np.ndarray:
        n_rows = w.sum(axis=1).astype(np.float64)
        df = np.asarray(self.cider_docs @ w.T.astype(np.float64))                # vocab x batch
        idf2 = (np.log(n_rows)[None, :] - np.log(np.maximum(1.0, df))) ** 2
        dot, hyp, ref = (np.asarray(m @ idf2).reshape(CIDER_ORDERS, self.size, len(w))
                         for m in (self.cider_dot, self.cider_hyp, self.cider_ref))
        norms = np.sqrt(hyp) * np.sqrt(ref)
        val = np.divide(dot, norms, out=dot.copy(), where=norms != 0) * self.cider_penalty[None, :, None]
        item = val.mean(axis=0) * 10.0                                            # rows x batch
        out = 100.0 * (w * item.T).sum(axis=1) / n_rows
        # metrics.cider: no reference n-grams in the corpus, no idf
        out[((w > 0) & ~self.ref_empty).sum(axis=1) == 0] = 0.0
        return out

    def corpus(self, rows: np.ndarray) -> dict[str, float]:
        """The corpus metrics (x100, unrounded) of the rows `rows` (repeats count as separate items)."""
        w = np.bincount(np.asarray(rows, dtype=np.int64), minlength=self.size)[None, :]
        return {k: float(v[0]) for k, v in self.corpus_batch(w).items()}

    def corpus_batch(self, weights: np.ndarray, chunk: int = 128) -> dict[str, np.ndarray]:
        """The corpus metrics of many row multisets at once: `weights` (batch, rows) counts how often each
        row is in each multiset; one value per multiset and metric. Chunked: CIDEr's idf is vocab x chunk."""
        weights = np.atleast_2d(np.asarray(weights, dtype=np.int64))
        parts = [self._corpus_chunk(weights[i:i + chunk]) for i in range(0, len(weights), chunk)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _corpus_chunk(self, w: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if self.groups & set(BLEU_KEYS):
            out |= dict(zip(BLEU_KEYS, self._bleu(w).T, strict=True))
        if self.groups & set(ROUGE_TYPES):
            out |= dict(zip(ROUGE_TYPES, (w @ self.rouge_items / w.sum(axis=1)[:, None]).T, strict=True))
        if self.groups & set(DISTINCT_KEYS):
            out |= dict(zip(DISTINCT_KEYS, self._distinct(w).T, strict=True))
        if "cider" in self.groups:
            out["cider"] = self._cider(w)
        return out


def brevity_penalty(hyp_tokens: np.ndarray, ref_tokens: np.ndarray) -> np.ndarray:
    """nltk's corpus BLEU brevity penalty of total hypothesis / reference lengths (elementwise)."""
    hyp, ref = np.asarray(hyp_tokens, dtype=np.float64), np.asarray(ref_tokens, dtype=np.float64)
    short = np.exp(1.0 - np.divide(ref, hyp, out=np.ones_like(hyp), where=hyp > 0))
    return np.where(hyp > ref, 1.0, np.where(hyp == 0, 0.0, short))


def _presence(sets: Sequence[set], width: int | None = None) -> sparse.csr_matrix:
    """rows x vocabulary 0/1 matrix of the given sets (items need not be ints: they are numbered here)."""
    ids: dict = {}
    rows, cols = [], []
    for r, s in enumerate(sets):
        for g in s:
            rows.append(r)
            cols.append(g if width is not None else ids.setdefault(g, len(ids)))
    shape = (len(sets), max(width if width is not None else len(ids), 1))
    return sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)


def bertscore_items(hypotheses: Sequence[str], references: Sequence[str], model: str | None = None,
                    num_layers: int | None = None, batch_size: int = 64, rescale: bool = False,
                    baseline: str | None = None) -> np.ndarray:
    """Per-item BERTScore P/R/F1 x100 (rows x 3); its mean is `metrics.bertscore_prf`."""
    from empathy_pipeline.evaluation.metrics import bert_scorer, bertscore_baseline_file
    from empathy_pipeline.modeling.encoders import EMBEDDED_EMBEDDING_MODEL

    name = model or EMBEDDED_EMBEDDING_MODEL
    baseline_path = (Path(baseline) if baseline else bertscore_baseline_file(name)) if rescale else None
    if baseline_path is not None and not baseline_path.is_file():
        raise PipelineError(f"BERTScore baseline {baseline_path} not found")
    scorer = bert_scorer(name, num_layers, batch_size, baseline_path)
    # the same rule as metrics.bertscore_prf: a pair with an empty side scores 0 (rescaled like any score)
    out = np.zeros((len(hypotheses), 3))
    if baseline_path is not None:
        out[:] = [(0.0 - b) / (1.0 - b) for b in scorer.baseline_vals.tolist()]
    scored = [i for i, (h, r) in enumerate(zip(hypotheses, references, strict=True)) if h.strip() and r.strip()]
    if scored:
        prf = scorer.score([hypotheses[i] for i in scored], [references[i] for i in scored], batch_size=batch_size)
        out[scored] = np.stack([s.double().numpy() for s in prf], axis=1)
    return out * 100.0


# ---- the paired statistic and the two resampling procedures -------------------------------------


@dataclass
class PairedStatistic:
    """B − A per metric for paired item rows: rows 0..n-1 are A's replies, n..2n-1 B's, same references.

    Rows with the same (reply, reference) text share one physical row (`row_map`), so a model
    compared with itself gives bit-identical sides: a difference of exactly 0, not rounding noise
    that a permutation test would count as a non-zero effect.
    """

    stats: CorpusStats
    keys: tuple[str, ...]
    row_map: np.ndarray
    item_values: dict[str, np.ndarray] = field(default_factory=dict)  # per physical row, the MEAN_KEYS

    def side(self, rows: np.ndarray) -> dict[str, float]:
        rows = self.row_map[np.asarray(rows, dtype=np.int64)]
        corpus = self.stats.corpus(rows)
        return {k: corpus[k] if k in corpus else float(self.item_values[k][rows].mean()) for k in self.keys}

    def __call__(self, a_rows: np.ndarray, b_rows: np.ndarray) -> np.ndarray:
        a_rows = self.row_map[np.asarray(a_rows, dtype=np.int64)]
        b_rows = self.row_map[np.asarray(b_rows, dtype=np.int64)]
        corpus_a = self.stats.corpus(a_rows)
        corpus_b = self.stats.corpus(b_rows)
        out = []
        for k in self.keys:
            if k in MEAN_KEYS:
                values = self.item_values[k]
                out.append(float(np.mean(values[b_rows] - values[a_rows])))
            else:
                out.append(corpus_b[k] - corpus_a[k])
        return np.array(out)

    def batched(self, a_rows: np.ndarray, b_rows: np.ndarray, axis: int = -1) -> np.ndarray:
        """The vectorized form permutation_test calls: (batch, n) rows in, (batch, metrics) out."""
        a_rows, b_rows = np.moveaxis(a_rows, axis, -1), np.moveaxis(b_rows, axis, -1)
        if a_rows.ndim == 1:
            return self(a_rows, b_rows)
        flat = [self(x, y) for x, y in zip(a_rows.reshape(-1, a_rows.shape[-1]), b_rows.reshape(-1, b_rows.shape[-1]),
                                           strict=True)]
        return np.stack(flat).reshape(*a_rows.shape[:-1], len(self.keys))


def build_statistic(paired: Paired, keys: Sequence[str], bertscore_options: dict | None = None) -> PairedStatistic:
    """Precompute everything per item once (tokens, n-grams, ROUGE and BERTScore per item)."""
    keys = tuple(keys)
    physical: dict[tuple[str, str], int] = {}
    row_map = np.array([physical.setdefault(pr, len(physical))
                        for pr in zip(paired.a + paired.b, paired.references + paired.references, strict=True)],
                       dtype=np.int64)
    rows_text, refs = [h for h, _ in physical], [r for _, r in physical]
    corpus_groups = [k for k in keys if k in CORPUS_KEYS]
    stats_ = CorpusStats(rows_text, refs, groups=corpus_groups)
    item_values = {k: stats_.rouge_items[:, i] for i, k in enumerate(ROUGE_TYPES) if k in keys}
    if set(keys) & set(BERTSCORE_KEYS):
        prf = bertscore_items(rows_text, refs, **(bertscore_options or {}))
        item_values |= {k: prf[:, i] for i, k in enumerate(BERTSCORE_KEYS) if k in keys}
    return PairedStatistic(stats_, keys, row_map, item_values)


def compare(paired: Paired, keys: Sequence[str] = METRICS, *, n_resamples: int = 1000, seed: int = 0,
            confidence: float = 0.95, method: str = "BCa", bertscore_options: dict | None = None) -> dict:
    """Per metric: A, B, B − A, its paired-bootstrap CI and the paired permutation p-value."""
    unknown = [k for k in keys if k not in METRICS]
    if unknown:
        raise PipelineError(f"unknown metric(s) {', '.join(unknown)} (choose from {', '.join(METRICS)})")
    if n_resamples < 1:
        raise PipelineError(f"n_resamples must be positive, got {n_resamples}")
    if not 0 < confidence < 1:
        raise PipelineError(f"confidence must be between 0 and 1, got {confidence}")
    statistic = build_statistic(paired, keys, bertscore_options)
    n = len(paired.references)
    a_rows, b_rows = np.arange(n), np.arange(n, 2 * n)
    observed = statistic(a_rows, b_rows)
    with warnings.catch_warnings():
        # a degenerate bootstrap distribution (e.g. a model against itself) makes BCa NaN; handled below
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # BCa's acceleration is 0/0 there
        boot = stats.bootstrap((a_rows, b_rows), statistic, paired=True, vectorized=False,
                               n_resamples=n_resamples, confidence_level=confidence, method=method,
                               rng=np.random.default_rng(seed))
    low, high = np.atleast_1d(boot.confidence_interval.low), np.atleast_1d(boot.confidence_interval.high)
    dist = np.atleast_2d(boot.bootstrap_distribution)
    constant = np.ptp(dist, axis=-1) == 0
    low, high = np.where(constant, dist[:, 0], low), np.where(constant, dist[:, 0], high)
    perm = stats.permutation_test((a_rows, b_rows), statistic.batched, permutation_type="samples",
                                  vectorized=True, n_resamples=n_resamples, alternative="two-sided",
                                  batch=50, rng=np.random.default_rng(seed))
    pvalues = np.atleast_1d(perm.pvalue)
    side_a, side_b = statistic.side(a_rows), statistic.side(b_rows)
    metrics = [{"metric": k, "label": LABELS[k], "a": side_a[k], "b": side_b[k], "diff": float(observed[i]),
                "ci_low": float(low[i]), "ci_high": float(high[i]), "p_value": float(pvalues[i])}
               for i, k in enumerate(keys)]
    return {"a": paired.a_name, "b": paired.b_name, "difference": "B - A", "n_items": n,
            "paired_by": paired.paired_by, "only_in_a": paired.only_a, "only_in_b": paired.only_b,
            "n_resamples": n_resamples, "seed": seed, "confidence": confidence, "ci_method": method,
            "p_value_method": "paired permutation (swap A/B per item), two-sided", "metrics": metrics}


def render(result: dict, fmt: str = "md") -> str:
    """Markdown table (metric | A | B | diff | CI | p, and the seed spreads of a two-level result) or JSON."""
    if fmt == "json":
        return json.dumps(result, indent=2)
    if fmt != "md":
        raise PipelineError(f"unknown format {fmt!r} (md or json)")
    pct = f"{100 * result['confidence']:g} %"
    seeds = "seeds_a" in result                       # bootstrap.TwoLevel's result: seeds, then items
    if seeds:
        how = (f"seeds {len(result['seeds_a'])} / {len(result['seeds_b'])}; {result['n_resamples']} two-level "
               f"resamples (seeds, then items), seed {result['seed']}, percentile interval, normal p-value")
    else:
        how = (f"{result['n_resamples']} resamples, seed {result['seed']}, {result['ci_method']} interval, "
               "permutation p-value")
    lines = [f"{result['b']} − {result['a']} on {result['n_items']} paired test items "
             f"(paired by {result['paired_by']}; {how})", "",
             f"| metric | A: {result['a']} | B: {result['b']} | B − A | {pct} CI | p |" + (" seed sd A / B |" if seeds else ""),
             "| --- | --- | --- | --- | --- | --- |" + (" --- |" if seeds else "")]
    rows = [*result["metrics"], *result.get("length", {}).values()] if seeds else result["metrics"]
    for m in rows:
        if not isinstance(m, dict):
            continue                                  # the length block's reference length
        line = (f"| {m['label']} | {m['a']:.2f} | {m['b']:.2f} | {m['diff']:+.2f} | "
                f"[{m['ci_low']:+.2f}, {m['ci_high']:+.2f}] | {m['p_value']:.3f} |")
        if seeds:
            line += " " + " / ".join("—" if x is None else f"{x:.2f}" for x in (m["a_seed_std"], m["b_seed_std"])) + " |"
        lines.append(line)
    if seeds:
        matched = result["length_matched"]
        lines += ["", f"Reference length {result['length']['reference']:.2f} tokens; {matched['n_items']} items with "
                  f"replies within {matched['tolerance']} tokens of each other" +
                  "".join(f"; there {m['label']} {m['diff']:+.2f} [{m['ci_low']:+.2f}, {m['ci_high']:+.2f}]"
                          for m in matched["metrics"][:1])]
    elif result["only_in_a"] or result["only_in_b"]:
        lines += ["", f"(unpaired items left out: {result['only_in_a']} only in A, {result['only_in_b']} only in B)"]
    return "\n".join(lines)


def compare_specs(a: str, b: str, predictions_dir: Path, **options) -> dict:
    """`empathy compare A B`: resolve both sides (model names or files), pair them, compare. A side given
    as a comma-separated list is one recipe's training seeds: then the comparison is bootstrap.py's
    two-level one (seeds within each side, then items), and `method` does not apply (percentile)."""
    if "," in a or "," in b:
        return _compare_seed_lists(a, b, predictions_dir, **options)
    a_name, a_df = resolve(a, predictions_dir)
    b_name, b_df = resolve(b, predictions_dir)
    if a_name == b_name and a != b:
        a_name, b_name = a, b
    return compare(pair(a_name, a_df, b_name, b_df), **options)


def _compare_seed_lists(a: str, b: str, predictions_dir: Path, keys: Sequence[str] = METRICS,
                        n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95, method: str | None = None,
                        bertscore_options: dict | None = None) -> dict:
    from empathy_pipeline.analysis.bootstrap import compare_seeds

    sides = []
    for spec in (a, b):
        resolved = [resolve(part.strip(), predictions_dir) for part in spec.split(",") if part.strip()]
        sides.append(("+".join(name for name, _ in resolved), dict(enumerate(df for _, df in resolved))))
    (a_name, a_tables), (b_name, b_tables) = sides
    if a_name == b_name:
        a_name, b_name = a, b
    return compare_seeds(a_name, a_tables, b_name, b_tables, keys, n_resamples, seed, confidence, bertscore_options)
