"""Synth-Empathy §3.2: the similarity S = 100 * cos(E_D, E_G) of the discriminator's reply and the
generated reply, which quality selection thresholds at T."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.progress import progress
from empathy_pipeline.modeling.encoders import chunks, encode


def similarity_scores(model, disc_replies: Sequence[str], generated_replies: Sequence[str],
                      batch_size: int = 64, show_progress: bool = True) -> np.ndarray:
    """S = 100 * cos(E_D, E_G) row by row (paper §3.2 step 3), float64."""
    if len(disc_replies) != len(generated_replies):
        raise PipelineError(f"similarity: {len(disc_replies)} discriminator replies vs "
                            f"{len(generated_replies)} generated replies")
    scores = np.empty(len(disc_replies), dtype=np.float64)
    chunk = batch_size * 16
    for start, end in progress(chunks(len(scores), chunk), desc="embed replies", enabled=show_progress):
        e_disc = encode(model, disc_replies[start:end], batch_size).astype(np.float64)
        e_gen = encode(model, generated_replies[start:end], batch_size).astype(np.float64)
        scores[start:end] = 100.0 * np.einsum("ij,ij->i", e_disc, e_gen)
    return scores


def sample_text(context: Sequence[str], response: str) -> str:
    """What a synthetic sample "is" for diversity: every context turn and the reply, one per line."""
    return "\n".join([*context, response])


def scoring_table(generated: pl.DataFrame, discriminated: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Generated rows joined with their discriminator reply, in generated order.

    Rows whose discriminator reply is missing or empty cannot be scored: they are dropped and
    counted (second return value) so the stage can report them.
    """
    for name, df, cols in (("generated", generated, ("sample_id", "context", "response")),
                           ("discriminated", discriminated, ("sample_id", "disc_response"))):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise PipelineError(f"{name} table: missing column(s) {', '.join(missing)}")
        dupes = df.height - df["sample_id"].n_unique()
        if dupes:
            raise PipelineError(f"{name} table: {dupes} duplicated sample_id value(s)")
    joined = generated.join(discriminated.select("sample_id", "disc_response"), on="sample_id",
                            how="left", maintain_order="left")
    usable = joined.filter(pl.col("disc_response").is_not_null()
                           & (pl.col("disc_response").str.strip_chars() != ""))
    return usable, joined.height - usable.height
