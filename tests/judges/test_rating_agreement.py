"""Judge agreement with the papers' ChatGPT ratings: the figures on known inputs, and the released file."""

from __future__ import annotations

import polars as pl
import pytest

from empathy_pipeline.judges.rating_agreement import compare, released_ratings

REFERENCE = pl.DataFrame({
    "sample_id": [f"s{i}" for i in range(6)],
    "ref_sensibility": [8, 7, 2, 9, 3, 6],
    "ref_rationality": [2, 3, 8, 9, 7, 6],
})


def judged(sensibility, rationality) -> pl.DataFrame:
    return pl.DataFrame({"sample_id": REFERENCE["sample_id"], "sensibility": sensibility,
                         "rationality": rationality}, schema={"sample_id": pl.String, "sensibility": pl.Int64,
                                                              "rationality": pl.Int64})


def test_a_judge_that_agrees_scores_perfectly():
    got = compare(REFERENCE, judged(REFERENCE["ref_sensibility"], REFERENCE["ref_rationality"]), threshold=5)
    assert got["sensibility_spearman"] == 1.0 and got["rationality_mae"] == 0.0
    assert got["split_kappa"] == 1.0 and got["split_agreement_pct"] == 100.0
    assert got["split_confusion"]["sensibility"] == {"sensibility": 2, "rationality": 0, "discard": 0}
    assert got["split_confusion"]["discard"]["discard"] == 2  # s2 (R 8, S 2) and s4 (R 7, S 3)


def test_a_judge_that_always_says_r10_s5_is_caught():
    """What the embedded 135M judge does without a prefilled form: one constant answer."""
    got = compare(REFERENCE, judged([5] * 6, [10] * 6), threshold=5)
    assert got["sensibility_spearman"] is None  # a constant has no rank correlation
    assert got["sensibility_mae"] == pytest.approx((3 + 2 + 3 + 4 + 2 + 1) / 6, abs=1e-4)
    assert got["split_kappa"] == 0.0  # everything in one set: no agreement beyond chance
    assert sum(got["split_confusion"]["sensibility"].values()) == 2


def test_unparsed_replies_are_counted_not_scored():
    got = compare(REFERENCE, judged([8, None, 2, 9, 3, 6], [2, 3, 8, 9, None, 6]), threshold=5)
    assert got["sensibility_unparsed_pct"] == pytest.approx(100 / 6, abs=0.01)
    assert got["sensibility_mae"] == 0.0 and got["split_pairs"] == 4


def test_released_test_ratings_all_parse(paper_data_dir):
    rows = released_ratings(paper_data_dir / "test_results.json", n=300, seed=0)
    assert rows.height == 300 and rows["ref_sensibility"].null_count() == 0
    assert rows["sample_id"].equals(released_ratings(paper_data_dir / "test_results.json", 300, 0)["sample_id"])
