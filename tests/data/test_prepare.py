"""prepare: the official ED layout, the papers' JSON, the papers' normalisation, and bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import polars as pl
import pytest
import yaml
from dvc_spec import stage_argv

from empathy_pipeline.data import ed

HEADER = "conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags"


def ed_rows(conv: str, turns: list[str], emotion: str = "sad", prompt: str = "my cat ran away_comma_ sadly") -> list[str]:
    return [f"{conv},{i},{emotion},{prompt},{1 + i % 2},{t},," for i, t in enumerate(turns, start=1)]


def write_split(d: Path, name: str, lines: list[str], header: str = HEADER) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.csv"
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def run_prepare(tmp_path: Path, source: Path, **overrides) -> subprocess.CompletedProcess:
    """Run the real stage script in tmp_path with a params.yaml pointing at `source`."""
    p = {"source": str(source), "format": "ed_csv", "splits": ["test"], "preprocess": "none",
         "max_conversations": {}, "max_bad_fraction": 0.5, **overrides}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"prepare": p}))
    return subprocess.run(stage_argv("prepare", source=source), cwd=tmp_path,
                          capture_output=True, text=True)


def test_listener_turns_become_samples(tmp_path):
    path = write_split(tmp_path, "test", ed_rows("hit:1_conv:2", ["I lost my cat.", "Oh no_comma_ when?", "Yesterday.",
                                                                   "That is hard.", 'She was "the best"']))
    df, report = ed.read_ed_csv(path, "test")
    assert df["sample_id"].to_list() == ["hit:1_conv:2:2", "hit:1_conv:2:4"]
    assert df["context"].to_list() == [["I lost my cat."], ["I lost my cat.", "Oh no, when?", "Yesterday."]]
    assert df["response"].to_list() == ["Oh no, when?", "That is hard."]
    assert df["situation"][0] == "my cat ran away, sadly" and df["emotion"][0] == "sad"
    assert report.conversations == 1 and report.samples == 2 and report.bad_rows == 0


def test_bad_rows_are_reported_with_file_line_and_counted(tmp_path):
    src = tmp_path / "ed"
    good = ed_rows("hit:1_conv:1", ["a", "b", "c", "d"])
    lines = good + [
        "hit:2_conv:3,1,sad,x,1,too,many,fields,here",      # line 6: field count
        "hit:2_conv:3,one,sad,x,1,hello,,",                 # line 7: utterance_idx
        "hit:2_conv:3,2,sad,x,1,   ,,",                     # line 8: empty utterance
        *ed_rows("hit:3_conv:4", ["only the speaker"]),     # line 9: no listener turn
    ]
    write_split(src, "test", lines)
    result = run_prepare(tmp_path, src)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{src}/test.csv:6: expected 8 fields, found 9" in out
    assert f"{src}/test.csv:7: utterance_idx 'one' is not an integer" in out
    assert f"{src}/test.csv:8: empty utterance" in out
    assert f"{src}/test.csv:9: conversation hit:3_conv:4 has no listener turn" in out
    metrics = json.loads((tmp_path / "metrics" / "prepare.json").read_text())["test"]
    assert metrics["rows"] == 8 and metrics["bad_rows"] == 3
    assert metrics["bad_field_count"] == 1 and metrics["bad_utterance_idx"] == 1
    assert metrics["bad_empty_utterance"] == 1 and metrics["skipped_conversations"] == 1
    assert metrics["samples"] == 2 and metrics["conversations"] == 1
    assert pl.read_parquet(tmp_path / "data/prepared/test.parquet").height == 2


@pytest.mark.parametrize("case, expected", [
    ("missing_column", "test.csv:1: missing column(s) utterance in header"),
    ("missing_file", "test.csv: required file not found"),
    ("too_many_bad", "2 of 4 rows are bad (50.0% > prepare.max_bad_fraction 10.0%)"),
    ("bad_source", "prepare.source: '{src}' is not allowed (no such directory"),
])
def test_fatal_input_fails_with_one_line(tmp_path, case, expected):
    src = tmp_path / "ed"
    overrides = {}
    if case == "missing_column":
        write_split(src, "test", ["hit:1_conv:1,1,sad,x,1,,"], header=HEADER.replace("utterance,", ""))
    elif case == "missing_file":
        src.mkdir()
    elif case == "too_many_bad":
        write_split(src, "test", ed_rows("hit:1_conv:1", ["a", "b"]) + ["x,1", "y,2"])
        overrides["max_bad_fraction"] = 0.1
    else:
        src = tmp_path / "nowhere"
    result = run_prepare(tmp_path, src, **overrides)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: prepare: ") and expected.format(src=src) in lines[0]


def test_caps_and_deterministic_order(tmp_path):
    lines = [row for n in range(5) for row in ed_rows(f"hit:{n}_conv:{n}", ["s", "l"])]
    path = write_split(tmp_path, "train", lines)
    df, _ = ed.read_ed_csv(path, "train", max_conversations=3)
    assert df["conv_id"].to_list() == ["hit:0_conv:0", "hit:1_conv:1", "hit:2_conv:2"]
    again, _ = ed.read_ed_csv(path, "train", max_conversations=3)
    assert df.equals(again)


def test_paper_normalisation_matches_the_papers_text():
    assert ed.paper_normalize("No I wasn't hit. It was 100% their fault_comma_ right?") == \
        "no i was not hit . it was 100 % their fault , right ?"
    # Only the CEM table is expanded; other contractions are split the treebank way.
    assert ed.paper_normalize("People really shouldn't drive drunk.") == "people really should n't drive drunk ."
    assert ed.paper_normalize('It is actually "Scream."') == "it is actually scream ."


def test_real_ed_test_split(ed_dir, paper_data_dir):
    df, report = ed.read_ed_csv(ed_dir / "test.csv", "test", normalize=ed.paper_normalize)
    assert report.rows == 10_973 and report.bad_rows == 0
    assert report.conversations == 2_547
    assert df.height == 5_259  # listener turns; the papers' file has 5,255 (MoEL drops the last conversation)
    paper = json.loads((paper_data_dir / "test_results.json").read_text())
    theirs = {(item["context"], item["response"]) for item in paper}
    ours = [(ed.PAPER_TURN_SEPARATOR.join(c), r) for c, r in zip(df["context"].to_list(), df["response"].to_list())]
    exact = sum(pair in theirs for pair in ours)
    # The rest differ only where the trained punkt model splits sentences differently.
    assert exact >= 5_200, exact


def test_paper_json_goes_through_unchanged(paper_data_dir):
    path = paper_data_dir / "test_results.json"
    df, report = ed.read_paper_json(path, "test")
    items = json.loads(path.read_text())
    assert df.height == len(items) == 5_255 and report.bad_rows == 0
    assert [ed.PAPER_TURN_SEPARATOR.join(c) for c in df["context"].to_list()] == [i["context"] for i in items]
    assert df["response"].to_list() == [i["response"] for i in items]
    assert df["evaluation"].to_list() == [i["evaluation"] for i in items]
    # Consecutive items extend one conversation: the first two share conv_id.
    assert df["conv_id"][0] == df["conv_id"][1] != df["conv_id"][2]
