"""EPITOME (Sharma et al., EMNLP 2020): its Reddit (seeker post, response) pairs with 0/1/2 levels on
three empathy mechanisms, Emotional Reactions (ER), Interpretations (IP) and Explorations (EX).

Read from the three `*-reddit.csv` files of behavioral-data/Empathy-Mental-Health (`empathy data
fetch epitome`; the demo's hand-written sample is data/sample/epitome), one row per distinct
response, and split by seeker post. The level classifiers (evaluation/epitome_levels.py) and the
LLM level judge (judges/levels.py) both read it here, so they score the same held-out pairs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from empathy_pipeline.core.errors import PipelineError

MECHANISMS = ("ER", "IP", "EX")
FILES = {"ER": "emotional-reactions-reddit.csv", "IP": "interpretations-reddit.csv",
         "EX": "explorations-reddit.csv"}
LEVELS = (0, 1, 2)
COLUMNS = ("sp_id", "rp_id", "seeker_post", "response_post", "level")


def load_pairs(source: str | Path) -> tuple[pl.DataFrame, dict]:
    """One row per distinct response: sp_id, rp_id, seeker_post, response_post, ER, IP, EX.

    The three files hold the same rows in the same order (checked). A response that appears more
    than once (same rp_id, same text) is kept once; where its copies disagree on a level the most
    common level wins, ties to the lower one (the cautious reading). The stats count both.
    """
    source = Path(source)
    if not source.is_dir():
        raise PipelineError(f"{source}: EPITOME directory not found (epitome.source; the Reddit CSVs of "
                            "behavioral-data/Empathy-Mental-Health)")
    tables = {}
    for mechanism, name in FILES.items():
        path = source / name
        if not path.is_file():
            raise PipelineError(f"{path}: EPITOME file not found")
        try:
            table = pl.read_csv(path, columns=list(COLUMNS), schema_overrides={"sp_id": pl.String, "rp_id": pl.String})
        except (pl.exceptions.PolarsError, ValueError) as exc:
            raise PipelineError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None
        bad = table.filter(~pl.col("level").is_in(LEVELS) | pl.col("response_post").is_null()
                           | pl.col("seeker_post").is_null()).height
        if bad:
            raise PipelineError(f"{path}: {bad} row(s) without both posts or with a level outside 0/1/2")
        tables[mechanism] = table
    first = tables["ER"]
    for mechanism, table in tables.items():
        if table.height != first.height or not table["rp_id"].equals(first["rp_id"]):
            raise PipelineError(f"{source / FILES[mechanism]}: rows differ from {FILES['ER']} (expected the same pairs in the same order)")
    rows = first.select("sp_id", "rp_id", "seeker_post", "response_post").with_columns(
        **{m: tables[m]["level"] for m in MECHANISMS})
    # Majority level per duplicated response; ties go to the lower level (sort, then pick the mode).
    agg = [pl.col(m).sort().mode().sort().first().alias(m) for m in MECHANISMS]
    conflicts = rows.group_by("rp_id").agg(*(pl.col(m).n_unique().alias(m) for m in MECHANISMS), pl.len())
    deduped = (rows.group_by("rp_id", maintain_order=True)
               .agg(pl.col("sp_id", "seeker_post", "response_post").first(), *agg)
               .select("sp_id", "rp_id", "seeker_post", "response_post", *MECHANISMS))
    stats = {"rows": rows.height, "pairs": deduped.height, "duplicates_dropped": rows.height - deduped.height,
             "duplicate_groups": conflicts.filter(pl.col("len") > 1).height,
             **{f"conflicting_groups_{m.lower()}": conflicts.filter(pl.col(m) > 1).height for m in MECHANISMS}}
    return deduped, stats


def group_split(pairs: pl.DataFrame, held_out_fraction: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, held-out) with every seeker post on one side only (scikit-learn GroupShuffleSplit)."""
    from sklearn.model_selection import GroupShuffleSplit

    splitter = GroupShuffleSplit(n_splits=1, test_size=held_out_fraction, random_state=seed)
    train_idx, held_idx = next(splitter.split(np.zeros(pairs.height), groups=pairs["sp_id"].to_numpy()))
    return pairs[np.sort(train_idx)], pairs[np.sort(held_idx)]
