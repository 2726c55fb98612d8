"""Efficient-Empathy rating and split: parser, the released ratings, resumable judging with the real model."""

from __future__ import annotations

import json

import polars as pl
import pytest
from killing import KillAfterShards, Killed

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.data.ed import SAMPLES_SCHEMA, read_ed_csv, read_paper_json
from empathy_pipeline.efficient_empathy.rating import (
    RATING_FORM_PREFIX,
    RatingScores,
    import_ratings,
    parse_rating,
    rate_samples,
    rating_chat,
)
from empathy_pipeline.efficient_empathy.split import split_by_threshold
from empathy_pipeline.llm.backends import load_backend
from empathy_pipeline.llm.base import Sampling

# ---- parser ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("reply, sensibility, rationality", [
    ("Evaluation Form (scores ONLY):\n- Rationality: 8\n- Sensibility: 5", 5, 8),
    ("- Rationality: 2\n- Sensibility: 8\n \n", 8, 2),                      # released form, trailing blanks
    ("Evaluation Form (scores ONLY):\n- Rationalality: 7\n- Sensibility: 3", 3, 7),  # the authors' typo
    ("- Sensibility: 9\n- Rationality: 1", 9, 1),                             # reversed order
    ("RATIONALITY:6   sensibility :   4", 4, 6),                              # case and spacing
    ("**Rationality**: 8/10\n**Sensibility**: 6/10", 6, 8),                   # markdown, "8/10"
    ("Sure! Here is my evaluation.\nRationality: 3\nSensibility: 10\nThe response is warm.", 10, 3),
    ("Rationality: 11\nSensibility: 4", 4, None),                              # out of range
    ("Rationality: -1\nSensibility: 4/5", None, None),                         # negative; another scale
    ("Rationality: 7.5\nSensibility: 6", 6, None),                              # not a whole score
    ("- Rationality:\n- Sensibility:", None, None),                            # empty form copied back
    ("I think the listener is kind.", None, None),                             # no form at all
    ("Rating 0-5\n\nThis is a very honest and empathetic response", None, None),  # other words, real reply
])
def test_parse_rating(reply, sensibility, rationality):
    assert parse_rating(reply) == RatingScores(sensibility=sensibility, rationality=rationality)


def test_rating_chat_shows_the_conversation_and_prefill():
    chat = rating_chat(["my dog died .", "oh no , i am sorry .", "thanks , it was hard ."], "how old was he ?",
                       prefill=RATING_FORM_PREFIX)
    assert [m["role"] for m in chat] == ["system", "user", "assistant"]
    assert "Speaker: my dog died .\nListener: oh no , i am sorry .\nSpeaker: thanks" in chat[1]["content"]
    assert "Listener's response:\n\nhow old was he ?" in chat[1]["content"]
    assert chat[2]["content"] == RATING_FORM_PREFIX


# ---- the authors' released ratings --------------------------------------------------------------------

@pytest.fixture(scope="module")
def released(paper_data_dir):
    path = paper_data_dir / "test_results.json"
    samples, _ = read_paper_json(path, "test")
    ratings, counts = import_ratings(path, samples)
    return samples, ratings, counts


def test_released_ratings_all_import(released):
    samples, ratings, counts = released
    assert counts["imported"] == counts["parsed"] == samples.height == 5255
    assert counts["unmatched_items"] == counts["missing"] == counts["bad_items"] == 0
    assert ratings["sample_id"].to_list() == samples["sample_id"].to_list()


@pytest.mark.parametrize("threshold, sensibility, discard, rationality", [
    (4, 2893, 258, 2104),
    (5, 3268, 300, 1687),
    (6, 3387, 308, 1560),
])
def test_released_split_counts(released, threshold, sensibility, discard, rationality):
    """The paper's Eq. 1-3 on the authors' test ratings give the counts of SOURCE.md."""
    _, ratings, _ = released
    labelled, counts = split_by_threshold(ratings, threshold)
    assert counts == {"sensibility": sensibility, "rationality": rationality, "discard": discard, "missing": 0}
    assert labelled.height == ratings.height


def test_import_matches_other_tokenisation_and_counts_the_rest(tmp_path):
    items = [
        {"context": "i did n't get the job . </s> oh no ! </s> yeah , i am sad .", "response": "sorry to hear that .",
         "evaluation": "- Rationality: 3\n- Sensibility: 9"},
        {"context": "i won !", "response": "congrats !", "evaluation": "- Rationality: 4\n- Sensibility: 8"},
        {"context": "i won !", "response": "congrats !", "evaluation": "- Rationality: 6\n- Sensibility: 2"},
        {"context": "nobody has this", "response": "unmatched", "evaluation": "- Rationality: 1\n- Sensibility: 1"},
        {"context": "no evaluation here", "response": "bad item"},
    ]
    path = tmp_path / "ratings.json"
    path.write_text(json.dumps(items))
    samples = pl.DataFrame([
        {"sample_id": "a", "context": ["I didn't get the job.", "Oh no!", "Yeah, I am sad."],
         "response": "Sorry to hear that."},
        {"sample_id": "b", "context": ["I won!"], "response": "Congrats!"},
        {"sample_id": "c", "context": ["I won!"], "response": "Congrats!"},  # same text: next item in file order
        {"sample_id": "d", "context": ["never rated"], "response": "no rating"},
    ], schema={k: SAMPLES_SCHEMA[k] for k in ("sample_id", "context", "response")})
    ratings, counts = import_ratings(path, samples)
    assert ratings.select("sensibility", "rationality").rows() == [(9, 3), (8, 4), (2, 6), (None, None)]
    assert counts == {"rated": 4, "imported": 3, "parsed": 3, "missing": 1, "unparseable_imported": 0,
                      "unmatched_items": 1, "bad_items": 1}


def test_import_of_the_wrong_file_is_an_error(tmp_path):
    path = tmp_path / "ratings.json"
    path.write_text(json.dumps([{"context": "x", "response": "y", "evaluation": "- Rationality: 1\n- Sensibility: 1"}]))
    samples = pl.DataFrame({"sample_id": ["a"], "context": [["hello"]], "response": ["hi"]})
    with pytest.raises(PipelineError, match="none of its 1 items matches"):
        import_ratings(path, samples)


def test_split_follows_strict_inequalities_and_skips_missing():
    ratings = pl.DataFrame({
        "sample_id": list("abcdefg"),
        "rationality": [4, 6, 5, 4, 8, None, 2],
        "sensibility": [6, 4, 8, 5, 8, 7, None],
    }, schema_overrides={"rationality": pl.Int64, "sensibility": pl.Int64})
    labelled, counts = split_by_threshold(ratings, 5)
    assert labelled["subset"].to_list() == ["sensibility", "discard", "rationality", "rationality", "rationality",
                                            None, None]
    assert counts == {"sensibility": 1, "rationality": 3, "discard": 1, "missing": 2}


def test_split_writes_all_rated_samples_for_the_full_data_baseline():
    """`all` (EE Table 2's Full F.T. set) is every sample with both scores, in pool order."""
    from empathy_pipeline.efficient_empathy.split import split_samples

    samples = pl.DataFrame({"sample_id": list("abcdefgh"), "context": [["x"]] * 8, "response": list("ABCDEFGH")})
    ratings = pl.DataFrame({
        "sample_id": list("gfedcba"),
        "rationality": [2, None, 8, 4, 5, 6, 4],
        "sensibility": [None, 7, 8, 5, 8, 4, 6],
    }, schema_overrides={"rationality": pl.Int64, "sensibility": pl.Int64})
    tables, _, metrics = split_samples(samples, ratings, 5)
    assert tables["all"]["sample_id"].to_list() == ["a", "b", "c", "d", "e"]
    parts = sorted(x for name in ("sensibility", "rationality", "discard") for x in tables[name]["sample_id"])
    assert parts == tables["all"]["sample_id"].sort().to_list()
    assert metrics["rated"] == 5 and metrics["unrated"] == 1 and metrics["missing"] == 2


# ---- judging with the real model: resumable shards and retries ----------------------------------------

@pytest.fixture(scope="module")
def judge(base_model_dir):
    return load_backend({"backend": "transformers", "batch_size": 8, "show_progress": False}, model=str(base_model_dir))


@pytest.fixture(scope="module")
def ed_samples(ed_dir):
    samples, _ = read_ed_csv(ed_dir / "train.csv", "train", max_conversations=4)
    return samples.head(6)


@pytest.mark.slow
def test_rating_shards_of_other_settings_are_not_reused(judge, ed_samples, tmp_path):
    """A kill after the first shard, then a rerun with another model: the finished shard is discarded.
    (The kill-and-resume of the rate stage itself is in tests/stages/test_resume.py.)"""
    settings = dict(retries=1, shard_size=2, sampling=Sampling(max_new_tokens=12), prefill=RATING_FORM_PREFIX,
                    show_progress=False)
    full, full_counts = rate_samples(judge, ed_samples, shard_dir=tmp_path / "full", settings={"model": "smollm2"},
                                     **settings)
    assert full.height == 6 and full_counts["shards"] == 3
    assert full_counts["parsed"] == 6  # the prefilled form makes SmolLM2 write both numbers
    assert all(reply.startswith(RATING_FORM_PREFIX) for reply in full["raw_reply"])

    run = tmp_path / "run"
    with pytest.raises(Killed):
        rate_samples(KillAfterShards(judge, run), ed_samples, shard_dir=run, settings={"model": "smollm2"}, **settings)
    resumed, counts = rate_samples(judge, ed_samples, shard_dir=run, settings={"model": "smollm2"}, **settings)
    assert counts == full_counts and resumed.equals(full)
    with pytest.raises(Killed):
        rate_samples(KillAfterShards(judge, run), ed_samples, shard_dir=run, settings={"model": "another"}, **settings)
    assert sorted(p.name for p in run.glob("shard-*.parquet")) == ["shard-00000.parquet"]


@pytest.mark.slow
def test_unparseable_replies_are_retried_then_missing(judge, ed_samples, tmp_path):
    # Without the prefill the 135M judge does not fill the form in (measured: 0 of 30 parse), greedy
    # or sampled, so both samples are asked twice and end up missing.
    ratings, counts = rate_samples(judge, ed_samples.head(2), retries=1, shard_dir=tmp_path, shard_size=2,
                                   sampling=Sampling(max_new_tokens=16), prefill=None, show_progress=False)
    assert counts["retried"] == 2 and counts["judge_calls"] == 4
    assert counts["missing"] == 2 and counts["parsed"] == 0
    assert ratings.height == 2 and ratings["raw_reply"].null_count() == 0  # the last reply is kept
