"""Efficient-Empathy Eq. 1–3: split the rated ED train set at threshold T into D_s, D_r and D_d."""

from __future__ import annotations

import polars as pl

from empathy_pipeline.core.errors import PipelineError

SUBSETS = ("sensibility", "rationality", "discard")


def split_by_threshold(ratings: pl.DataFrame, threshold: float) -> tuple[pl.DataFrame, dict]:
    """Label each rated sample with its subset; return (ratings + `subset` column, counts).

    Paper Eq. 1–3 with strict inequalities:
        D_s (sensibility) = {R < T and S > T}
        D_d (discard)     = {R > T and S < T}
        D_r (rationality) = everything else, ties with T included
    A sample missing either score goes to no subset (subset null) and is counted as `missing`.

    The authors' selection script (data/split_sensible_rational.py in their repository) uses the
    same strict inequalities but names the sets differently: it calls the {R > T and S < T} set
    "rational" and the rest "neuro", while §3.2 discards {R > T and S < T} and trains the
    rationality expert on the rest. We follow the paper. With the released test ratings this
    rule gives the counts in data/efficient-empathy/SOURCE.md (T=5: 3,268 / 300 / 1,687).
    """
    r, s = pl.col("rationality"), pl.col("sensibility")
    subset = (
        pl.when(r.is_null() | s.is_null()).then(None)
        .when((r < threshold) & (s > threshold)).then(pl.lit("sensibility"))
        .when((r > threshold) & (s < threshold)).then(pl.lit("discard"))
        .otherwise(pl.lit("rationality"))
    )
    labelled = ratings.with_columns(subset.alias("subset"))
    counts = {name: int((labelled["subset"] == name).sum()) for name in SUBSETS}
    counts["missing"] = int(labelled["subset"].is_null().sum())
    return labelled, counts


def split_samples(samples: pl.DataFrame, ratings: pl.DataFrame, threshold: float
                  ) -> tuple[dict[str, pl.DataFrame], pl.DataFrame, dict]:
    """({subset: its samples in file order, and `all`: every rated one}, ratings labelled with their subset, metrics)."""
    unknown = ratings.join(samples, on="sample_id", how="anti")
    if unknown.height:
        raise PipelineError(f"ratings: {unknown.height} rating(s) for samples not in the rated pool "
                            f"(first: {unknown['sample_id'][0]}); rerun the rate stage")
    labelled, counts = split_by_threshold(ratings, threshold)
    tables = {name: samples.join(labelled.filter(labelled["subset"] == name).select("sample_id"),
                                 on="sample_id", how="semi", maintain_order="left")
              for name in SUBSETS}
    # Every rated sample, for the Full F.T. baseline (EE Table 2) that the subsets are measured against.
    tables["all"] = samples.join(labelled.filter(labelled["subset"].is_not_null()).select("sample_id"),
                                 on="sample_id", how="semi", maintain_order="left")
    rated = labelled.height - counts["missing"]
    metrics = {"threshold": threshold, "samples": samples.height, "rated": rated,
               "unrated": samples.height - ratings.height, **counts}
    for name in SUBSETS:
        metrics[f"{name}_pct"] = round(100 * counts[name] / rated, 2) if rated else 0.0
    return tables, labelled, metrics
