"""The two-level bootstrap (bootstrap.py), Holm, the length check and the seed rule of the claims table.

Synthetic replies for the procedures; the committed real-mini arms (benchmarks/results/claims/) for the
A-vs-A checks, since those are about real seed-to-seed noise.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from empathy_pipeline.analysis import claims as claims_lib
from empathy_pipeline.analysis.bootstrap import (
    TwoLevel,
    align,
    compare_seeds,
    holm,
    item_weights,
    minimum_detectable,
)
from empathy_pipeline.analysis.compare import CORPUS_KEYS, CorpusStats, Paired, compare

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "benchmarks/results/claims"
HEADLINE = ("bleu1", "rouge1", "cider")
WORDS = "i am so sorry to hear that it is great you must be proud what happened oh no my dog was sick".split()


def _table(replies: list[str], references: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"sample_id": [f"t{i}" for i in range(len(replies))], "prediction": replies,
                         "reference": references})


def _references(n: int, seed: int = 0, length: int = 16) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=length)) for _ in range(n)]


def _committed(arm: str) -> pl.DataFrame:
    return pl.read_parquet(COMMITTED / arm / "predictions.parquet")


# ---- the procedure ---------------------------------------------------------------------------------


def test_batched_corpus_metrics_equal_one_multiset_at_a_time():
    refs = _references(25, seed=1)
    hyps = [" ".join(r.split()[: 3 + i % 9]) + (" dog" if i % 3 else "") for i, r in enumerate(refs)]
    stats = CorpusStats(hyps, refs)
    weights = item_weights(25, 7, seed=3)
    batch = stats.corpus_batch(weights, chunk=3)               # several chunks
    for r, w in enumerate(weights):
        one = stats.corpus(np.repeat(np.arange(25), w))
        for key in CORPUS_KEYS:
            assert batch[key][r] == pytest.approx(one[key], abs=1e-9), key


def test_with_one_seed_a_side_the_difference_is_the_item_comparisons():
    """One seed each: the same Δ as `empathy compare` (the same CorpusStats), an interval of similar width."""
    refs = _references(60, seed=2)
    a = [" ".join(r.split()[:6]) for r in refs]
    b = [" ".join(r.split()[:6]) if i % 2 else r for i, r in enumerate(refs)]
    two = compare_seeds("A", {0: _table(a, refs)}, "B", {0: _table(b, refs)}, HEADLINE, n_resamples=500)
    one = compare(Paired("A", "B", a, b, refs, "row"), HEADLINE, n_resamples=500, method="percentile")
    for m2, m1 in zip(two["metrics"], one["metrics"], strict=True):
        assert m2["diff"] == pytest.approx(m1["diff"], abs=1e-9)
        assert m2["ci_high"] - m2["ci_low"] == pytest.approx(m1["ci_high"] - m1["ci_low"], rel=0.25)
        assert m2["a_seed_std"] is None and m2["se"] == pytest.approx(m2["item_se"])   # no seed part


def test_seed_noise_widens_the_interval_beyond_the_item_part():
    refs = _references(80, seed=3)
    # B's seeds differ from each other far more than the items do: a good and a bad training run
    a = {s: _table([" ".join(r.split()[:8]) for r in refs], refs) for s in range(3)}
    b = {s: _table([r if s == 0 else " ".join(r.split()[:4]) for r in refs], refs) for s in range(3)}
    result = compare_seeds("A", a, "B", b, ("bleu1",), n_resamples=400)
    (bleu1,) = result["metrics"]
    assert bleu1["b_seed_std"] > 10 and bleu1["a_seed_std"] == 0.0
    assert bleu1["se"] > 3 * bleu1["item_se"]


def test_the_same_items_are_resampled_for_every_pair_and_seeded():
    refs = _references(20, seed=4)
    arms = {name: {s: _table([" ".join(r.split()[: k + s]) for r in refs], refs) for s in range(3)}
            for name, k in (("x", 3), ("y", 6), ("z", 9))}
    two_level = TwoLevel(("bleu1",), 100, seed=5)
    first = two_level.compare(*align("x", arms["x"], "y", arms["y"]))
    two_level.compare(*align("x", arms["x"], "z", arms["z"]))
    assert len(two_level._weights) == 1 and len(two_level._scores) == 3        # x scored once
    again = TwoLevel(("bleu1",), 100, seed=5).compare(*align("x", arms["x"], "y", arms["y"]))
    assert again["metrics"] == first["metrics"]


def test_holm_step_down():
    # by hand: sorted 0.01, 0.02, 0.04, 0.3 -> 4*0.01, 3*0.02, max(0.06, 2*0.04), max(0.08, 0.3)
    assert holm([0.04, 0.01, 0.3, 0.02]) == pytest.approx([0.08, 0.04, 0.3, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and holm([]) == []


def test_minimum_detectable_difference():
    # 2.8 = z_{0.975} + z_{0.8}; SE^2 = 2 * 1 / 2 + 0 = 1
    assert minimum_detectable(1.0, 0.0, 2, 0.05) == pytest.approx(2.8016, abs=1e-3)
    assert minimum_detectable(0.1, 0.2, 5, 0.05 / 45) > minimum_detectable(0.1, 0.2, 5, 0.05)


# ---- the length check ------------------------------------------------------------------------------


def _length_arms(results: Path, b_prefix: int, b_words_right: bool) -> None:
    refs = _references(60, seed=6)
    for seed in range(3):
        a = [" ".join(r.split()[: 6 + seed % 2]) for r in refs]
        b = [" ".join(r.split()[: b_prefix + seed % 2]) if b_words_right else " ".join(["zz"] * (6 + seed % 2))
             for r in refs]
        for family, replies in (("ee-full", a), ("ee-sens-t5", b)):
            folder = results / f"{family}-s{seed}"
            folder.mkdir(parents=True)
            _table(replies, refs).write_parquet(folder / "predictions.parquet")
            (folder / "metrics.json").write_text("{}")
            (folder / "arm.json").write_text(json.dumps({"family": family, "seed": seed}))


def test_an_effect_of_reply_length_alone_is_reported_as_such(tmp_path):
    # B's replies are longer prefixes of the references: every word right on both sides, B-1 higher for B
    # only through BLEU's brevity penalty, and no item where the two are within 2 tokens of each other
    _length_arms(tmp_path, b_prefix=11, b_words_right=True)
    table = claims_lib.evaluate_claims(tmp_path, only=[1], n_resamples=300)
    (row,) = table["claims"]
    (part,) = row["parts"]
    comparison = part["comparison"]
    assert comparison["length"]["length"]["diff"] == pytest.approx(5.0)
    assert comparison["length"]["bp"]["b"] > comparison["length"]["bp"]["a"]
    assert comparison["length_matched"]["n_items"] == 0
    assert claims_lib.length_only(comparison, "bleu1")
    assert (row["verdict"], row["length_only"]) == ("holds", True)
    rendered = claims_lib.render(table)
    assert "**holds (length only)**" in rendered
    assert "holds, length only; sd" in rendered      # the B-1 cell too


def test_an_effect_of_the_words_at_equal_length_is_not(tmp_path):
    # the same lengths, A's words right and B's wrong: every item is length-matched and the effect stays
    _length_arms(tmp_path, b_prefix=6, b_words_right=False)
    table = claims_lib.evaluate_claims(tmp_path, only=[1], n_resamples=300)
    (row,) = table["claims"]
    comparison = row["parts"][0]["comparison"]
    assert comparison["length_matched"]["n_items"] == 60
    assert (row["verdict"], row["length_only"]) == ("reversed", False)
    rendered = claims_lib.render(table)
    assert "reversed; sd" in rendered and "length only" not in rendered.split("\n\n")[0]


# ---- the seed rule and A against A, on the committed real-mini arms ---------------------------------


def _pseudo_arms(results: Path, a: list[str], b: list[str]) -> None:
    """Committed arms' predictions as the seeds of claim 1's two families (A = ee-full, B = ee-sens-t5)."""
    for family, sources in (("ee-full", a), ("ee-sens-t5", b)):
        for seed, source in enumerate(sources):
            folder = results / f"{family}-s{seed}"
            folder.mkdir(parents=True)
            for name in ("predictions.parquet", "metrics.json"):
                shutil.copy(COMMITTED / source / name, folder / name)
            (folder / "arm.json").write_text(json.dumps({"family": family, "seed": seed, "from": source}))


@pytest.mark.skipif(not (COMMITTED / "ee-full-s1").exists(), reason="the committed real-mini arms")
def test_one_recipe_split_into_two_arms_of_one_seed_needs_seeds(tmp_path):
    # ee-full's two training seeds as two pseudo-arms: the seed-to-seed gap is all there is to see,
    # and with one seed a side the table must not call it anything
    _pseudo_arms(tmp_path, ["ee-full-s0"], ["ee-full-s1"])
    (row,) = claims_lib.evaluate_claims(tmp_path, only=[1], n_resamples=300)["claims"]
    assert row["verdict"] == "needs seeds"


@pytest.mark.skipif(not (COMMITTED / "ee-full-s1").exists(), reason="the committed real-mini arms")
def test_two_seeds_never_hold_even_with_a_large_gap(tmp_path):
    # the committed claim-1 arms reversed (ee-sens-t5 -> ee-full is +1.7 B-1, +4.4 CIDEr): two seeds a side
    _pseudo_arms(tmp_path, ["ee-sens-t5-s0", "ee-sens-t5-s1"], ["ee-full-s0", "ee-full-s1"])
    (row,) = claims_lib.evaluate_claims(tmp_path, only=[1], n_resamples=300)["claims"]
    assert row["verdict"] == "needs seeds"
    assert next(m for m in row["parts"][0]["comparison"]["metrics"] if m["metric"] == "cider")["diff"] > 3


@pytest.mark.skipif(not (COMMITTED / "se-synth-t35.6-s1").exists(), reason="the committed real-mini arms")
def test_a_against_a_with_three_seeds_is_no_difference(tmp_path):
    """A against A from real training noise, as a mixture (the true one, one recipe at six seeds, is the
    control below): each pseudo-arm is the same mix of three recipes (ee-full, ee-sens-t5,
    se-synth-t35.6), A taking one seed of each and B another. Both sides have the same expected value;
    what separates them is training-seed noise (plus the recipe spread inside each side, which makes the
    seed part of the interval wider than a single recipe's would be: a weak test, but not a rigged one)."""
    _pseudo_arms(tmp_path, ["ee-full-s0", "ee-sens-t5-s1", "se-synth-t35.6-s0"],
                 ["ee-full-s1", "ee-sens-t5-s0", "se-synth-t35.6-s1"])
    (row,) = claims_lib.evaluate_claims(tmp_path, only=[1], n_resamples=1000)["claims"]
    assert row["verdict"] == "no difference", row["parts"][0]["comparison"]["metrics"]
    assert all(m["p_holm"] > 0.05 for m in row["parts"][0]["comparison"]["metrics"] if m["metric"] in HEADLINE)


CONTROL_ARMS = [COMMITTED / f"se-ed-rerun-s{seed}" for seed in (100, 101, 102)]


@pytest.mark.skipif(not all(arm.exists() for arm in CONTROL_ARMS), reason="the committed A-vs-A control arms")
def test_the_committed_a_against_a_control_is_no_difference():
    """The true A-vs-A: the ED-only recipe at seeds 0-2 against itself retrained at seeds 100-102 (real
    runs, `empathy claims --only 0`), at the unadjusted p. An interval blind to training seeds is the one
    that would see a difference here."""
    control = claims_lib.evaluate_claims(COMMITTED, only=[0], n_resamples=1000)["control"]
    comparison = control["parts"][0]["comparison"]
    assert (comparison["seeds_a"], comparison["seeds_b"]) == ([0, 1, 2], [100, 101, 102])
    assert control["verdict"] == "no difference", comparison["metrics"]
    assert all(m["p_value"] > 0.05 for m in comparison["metrics"] if m["metric"] in HEADLINE)


@pytest.mark.skipif(not (COMMITTED / "se-synth-t35.6-s1").exists(), reason="the committed real-mini arms")
def test_the_same_three_seeds_on_both_sides_differ_by_exactly_zero(tmp_path):
    # the degenerate A-vs-A: the same three tables a side. Δ is exactly 0 and p = 1; the interval is not
    # a point, as each side draws its own seeds (the spread of a seed mean of three runs)
    seeds = ["se-synth-t35.6-s0", "se-synth-t35.6-s1", "se-ed-s0"]
    _pseudo_arms(tmp_path, seeds, seeds)
    (row,) = claims_lib.evaluate_claims(tmp_path, only=[1], n_resamples=200)["claims"]
    for m in row["parts"][0]["comparison"]["metrics"]:
        assert m["diff"] == 0.0 and m["p_value"] == 1.0 and m["ci_low"] < 0 < m["ci_high"], m
    assert row["verdict"] == "no difference" and row["length_only"] is False
