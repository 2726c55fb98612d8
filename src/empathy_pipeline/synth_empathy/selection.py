"""Synth-Empathy §3.2, quality selection: keep a generated sample when S > T.

The discriminator's reply r_D and the generated reply r_G are embedded (synth_empathy/similarity.py) and
S = 100 * cos(E_D, E_G); the diversity selection that follows is in kcenter.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from empathy_pipeline.core.errors import PipelineError

# ---- quality selection (§3.2) ----------------------------------------------------------------------


def quality_select(scores: np.ndarray | Sequence[float], threshold: float) -> np.ndarray:
    """Indices of the rows with S > T (strictly: S == T is dropped, as in the paper's "S > T")."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise PipelineError("quality selection: no scored samples")
    if np.isnan(s).any():
        raise PipelineError(f"quality selection: similarity is NaN at row {int(np.flatnonzero(np.isnan(s))[0])}")
    kept = np.flatnonzero(s > threshold)
    if kept.size == 0:
        raise PipelineError(f"quality selection kept nothing: highest similarity S = {s.max():.10g} is not "
                            f"above quality.threshold T = {threshold} (lower T)")
    return kept


def quality_table(generated: pl.DataFrame, scores: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """Generated rows with S > T, plus `similarity` and `embedding_row` (row of sample_embeddings.npy)."""
    missing = [c for c in ("sample_id", "similarity") if c not in scores.columns]
    if missing:
        raise PipelineError(f"scores table: missing column(s) {', '.join(missing)}")
    scored = scores.select("sample_id", "similarity").with_row_index("embedding_row")
    joined = scored.join(generated, on="sample_id", how="inner", maintain_order="left")
    if joined.height != scored.height:
        raise PipelineError(f"scores table: {scored.height - joined.height} sample_id(s) not in generated "
                            "table (stale scores: rerun embed)")
    kept = quality_select(joined["similarity"].to_numpy(), threshold)
    cols = [*generated.columns, "similarity", "embedding_row"]
    return joined[kept].select(cols)


def selection_metrics(n_generated: int, similarity: np.ndarray, n_kept: int, threshold: float) -> dict:
    s = np.asarray(similarity, dtype=np.float64)
    return {
        "n_generated": n_generated,
        "n_scored": int(s.size),
        "n_kept": n_kept,
        "kept_fraction": round(n_kept / s.size, 4) if s.size else 0.0,
        "threshold": threshold,
        "similarity_mean": round(float(s.mean()), 3),
        "similarity_min": round(float(s.min()), 3),
        "similarity_max": round(float(s.max()), 3),
    }
