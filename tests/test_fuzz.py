"""Fuzz (hypothesis, bounded to seconds): every reader of outside text and every LLM-reply parser
returns a result or raises PipelineError with a one-line message — never anything else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.data import ed
from empathy_pipeline.efficient_empathy import rating
from empathy_pipeline.synth_empathy import data_quality, generation

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Text shaped like what the parsers look for, so the search reaches their branches, not only noise.
WORDS = st.sampled_from(["Round 1", "Round 2", "Round 3", "Context:", "Response:", "- Rationality:",
                         "- Sensibility:", "- Coherence:", "10", "3/3", "7/10", "-1", "2.5", "**", "\n", " ",
                         "I am sorry .", "_comma_", ",", "\"", "</s>", "hit:1_conv:2", "sad"])
LLM_TEXT = st.one_of(st.text(max_size=300), st.lists(WORDS, max_size=40).map(" ".join))


def one_line(exc: PipelineError) -> None:
    assert "\n" not in str(exc) and str(exc).strip()


@FUZZ
@given(LLM_TEXT)
def test_round_parser(text):
    try:
        parsed = generation.parse_rounds(text, max_response_words=30)
    except PipelineError as exc:
        one_line(exc)
        return
    assert parsed.reject_reason is not None or len(parsed.rounds) >= 3  # parsed means three rounds at least
    assert all(isinstance(c, str) and isinstance(r, str) for c, r in parsed.rounds)


@FUZZ
@given(LLM_TEXT)
def test_rating_parser(text):
    scores = rating.parse_rating(text)
    assert all(s is None or (isinstance(s, int) and 0 <= s <= 10) for s in scores)


@FUZZ
@given(LLM_TEXT, st.sampled_from(sorted(data_quality.JUDGE_CRITERIA)))
def test_judge_score_parser(text, criterion):
    score = data_quality.parse_judge_score(text, criterion)
    assert score is None or score in (1, 2, 3)


CSV_HEADER = "conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags"
CSV_FIELD = st.one_of(st.sampled_from(["hit:1_conv:1", "hit:2_conv:2", "1", "2", "x", "", "sad", "a_comma_b"]),
                      st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]),
                              max_size=12))
CSV_ROW = st.lists(CSV_FIELD, min_size=0, max_size=10).map(",".join)


@FUZZ
@given(st.booleans(), st.lists(CSV_ROW, max_size=12))
def test_ed_csv_reader(tmp_path_factory, with_header, rows):
    path = Path(tmp_path_factory.mktemp("csv")) / "test.csv"
    path.write_text("\n".join(([CSV_HEADER] if with_header else []) + rows) + "\n")
    try:
        samples, report = ed.read_ed_csv(path, "test")
    except PipelineError as exc:
        one_line(exc)
        return
    assert samples.height == report.samples and report.bad_rows >= 0


JSON_VALUE = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
                          lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                  st.dictionaries(st.sampled_from(["context", "response",
                                                                                   "evaluation", "x"]),
                                                                  inner, max_size=4)), max_leaves=12)


@FUZZ
@given(st.one_of(JSON_VALUE, st.lists(st.fixed_dictionaries(
    {"context": st.text(max_size=40), "response": st.text(max_size=20)},
    optional={"evaluation": st.text(max_size=20)}), max_size=6)), st.booleans())
@example([{"context": None, "response": None, "evaluation": False}], False)  # found by this test: was a TypeError
def test_paper_json_reader(tmp_path_factory, value, broken):
    path = Path(tmp_path_factory.mktemp("json")) / "test_results.json"
    text = json.dumps(value)
    path.write_text(text[: len(text) // 2] if broken else text)
    try:
        samples, report = ed.read_paper_json(path, "test")
    except PipelineError as exc:
        one_line(exc)
        return
    assert samples.height == report.samples


@pytest.mark.parametrize("text", ["Round 1\nContext: hi\nResponse: " + "word " * 40, "", "Round\n"])
def test_parser_rejects_carry_a_reason(text):
    assert generation.parse_rounds(text, max_response_words=30).reject_reason is not None
