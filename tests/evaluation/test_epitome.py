"""EPITOME level classifiers: the train_epitome stage on the real Reddit data, its split and dedupe,
the levels it gives replies, and the ER/IP/EX keys in evaluate's and `empathy score`'s metrics.

The data is read from ../shared/data/epitome (never copied into the repo); the tests skip without it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from dvc_spec import ROOT, stage_argv

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.data import epitome as epitome_data
from empathy_pipeline.evaluation import epitome_levels as epitome

EMPATHY = str(Path(sys.executable).parent / "empathy")
EMPATHIC = "I'm so sorry, that sounds terrifying. I feel really sad for you. Are you feeling alone right now?"
FLAT = "Submit the form by Monday."


@pytest.fixture(scope="module")
def trained(epitome_dir, tmp_path_factory) -> tuple[Path, dict]:
    """The stage run as dvc runs it, in a scratch project: (models/epitome, metrics/epitome.json)."""
    project = tmp_path_factory.mktemp("epitome")
    shutil.copy(ROOT / "params.yaml", project / "params.yaml")
    done = subprocess.run(stage_argv("train_epitome", source=str(epitome_dir)), cwd=project,
                          capture_output=True, text=True, timeout=2400)  # ~2 min idle; far more on a loaded box
    assert done.returncode == 0, done.stderr[-2000:]
    assert "held-out" in done.stdout
    return project / "models" / "epitome", json.loads((project / "metrics" / "epitome.json").read_text())


def test_stage_beats_the_majority_baseline_on_every_mechanism(trained):
    model_dir, metrics = trained
    assert {"config.json", "heads.npz"} <= {p.name for p in model_dir.iterdir()}
    assert metrics["method"] == "frozen_head"
    for m in ("er", "ip", "ex"):
        # Measured (seed 0, C 1): ER 59.8 / IP 52.5 / EX 49.0 against the majority baseline's 26.7 / 23.1 / 30.4.
        assert metrics[f"{m}_macro_f1"] > metrics[f"{m}_majority_macro_f1"] + 10, (m, metrics)
        assert 0 <= metrics[f"{m}_accuracy"] <= 100
    assert metrics["n_train"] + metrics["n_held_out"] == metrics["pairs"]


def test_dedupe_counts_match_the_source(epitome_dir):
    pairs, stats = epitome_data.load_pairs(epitome_dir)
    # SOURCE.md: 3,084 rows; 60 responses appear 2-3 times (121 rows); 10 of them disagree on ER.
    assert stats["rows"] == 3084 and stats["duplicate_groups"] == 60
    assert stats["duplicates_dropped"] == 121 - 60 and pairs.height == 3084 - 61
    assert stats["conflicting_groups_er"] == 10
    assert pairs["rp_id"].n_unique() == pairs.height
    assert set(pairs["ER"].unique()) | set(pairs["IP"].unique()) | set(pairs["EX"].unique()) <= {0, 1, 2}


def test_duplicates_take_the_majority_level_ties_to_the_lower(tmp_path):
    rows = [("s1", "r1", "post", "reply", 2), ("s1", "r1", "post", "reply", 2), ("s1", "r1", "post", "reply", 0),
            ("s2", "r2", "other", "answer", 1), ("s2", "r2", "other", "answer", 2), ("s3", "r3", "x", "y", 0)]
    for name in epitome_data.FILES.values():
        pl.DataFrame(rows, schema=["sp_id", "rp_id", "seeker_post", "response_post", "level"], orient="row") \
            .with_columns(rationales=pl.lit("")).write_csv(tmp_path / name)
    pairs, stats = epitome_data.load_pairs(tmp_path)
    assert pairs["ER"].to_list() == [2, 1, 0] and pairs["rp_id"].to_list() == ["r1", "r2", "r3"]
    assert stats["duplicates_dropped"] == 3 and stats["duplicate_groups"] == 2 and stats["conflicting_groups_ip"] == 2


def test_group_split_keeps_each_seeker_post_on_one_side(epitome_dir):
    pairs, _ = epitome_data.load_pairs(epitome_dir)
    train, held = epitome_data.group_split(pairs, 0.2, seed=0)
    assert not set(train["sp_id"]) & set(held["sp_id"])
    assert not set(train["seeker_post"]) & set(held["seeker_post"])
    assert train.height + held.height == pairs.height and 0.15 < held.height / pairs.height < 0.25


def test_missing_source_is_one_line(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    done = subprocess.run(stage_argv("train_epitome", source=str(tmp_path / "no-such-dir")), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: train_epitome: ") and "no-such-dir" in lines[0], done.stderr


def test_levels_of_replies(trained):
    model_dir, _ = trained
    levels = epitome.levels(model_dir, ["I lost my job today and I can't stop crying."] * 2, [EMPATHIC, FLAT])
    assert set(levels) == {"ER", "IP", "EX"}
    assert all(len(v) == 2 and set(v) <= {0, 1, 2} for v in levels.values())
    # The codebook's own examples of a strong reaction and interpretation outrank an errand. (EX is
    # left out: with MiniLM features it gives the question here 1 and the errand 1, as measured.)
    assert levels["ER"][0] > levels["ER"][1] and levels["IP"][0] > levels["IP"][1], levels
    summary = epitome.level_summary(levels)
    assert summary["epitome_er_mean"] == pytest.approx(sum(levels["ER"]) / 2)
    assert sum(summary[f"epitome_ex_pct{i}"] for i in range(3)) == pytest.approx(100)


def test_evaluate_metrics_carry_the_levels_and_old_predictions_fail_in_one_line(trained):
    from empathy_pipeline.evaluation.evaluate import epitome_summary

    model_dir, _ = trained
    table = pl.DataFrame({"sample_id": ["a", "b"], "model": ["m", "m"],
                          "context": [["my dog died .", "oh no .", "i miss him so much ."], ["i got the job !"]],
                          "prediction": [EMPATHIC, FLAT], "reference": ["so sorry .", "congrats !"]})
    summary = epitome_summary(table, model_dir)
    assert set(summary) == {f"epitome_{m}_{k}" for m in ("er", "ip", "ex") for k in ("mean", "pct0", "pct1", "pct2")}
    with pytest.raises(PipelineError, match="no context column"):
        epitome_summary(table.drop("context"), model_dir)


def test_empathy_score_reports_levels_with_a_context_column(trained, tmp_path):
    model_dir, _ = trained
    path = tmp_path / "preds.jsonl"
    rows = [{"context": ["i failed my exam and feel awful ."], "prediction": EMPATHIC, "reference": "that is rough ."},
            {"context": ["we are moving next week ."], "prediction": FLAT, "reference": "good luck !"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = subprocess.run([EMPATHY, "score", str(path), "--no-bertscore", "--epitome", str(model_dir)],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["n"] == 2 and 0 <= result["epitome_er_mean"] <= 2 and "epitome_ex_pct2" in result
    # Without --epitome and no models/epitome here: the n-gram metrics only.
    plain = json.loads(subprocess.run([EMPATHY, "score", str(path), "--no-bertscore"], cwd=tmp_path,
                                      capture_output=True, text=True).stdout)
    assert not any(k.startswith("epitome_") for k in plain)
    # Asked for the levels of a file without a context column: one line naming the file.
    path.write_text("".join(json.dumps({k: r[k] for k in ("prediction", "reference")}) + "\n" for r in rows))
    bad = subprocess.run([EMPATHY, "score", str(path), "--no-bertscore", "--epitome", str(model_dir)],
                         cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "context" in bad.stderr


def test_fine_tune_method_trains_saves_and_reloads(tmp_path):
    """The fine_tune path end to end on a small synthetic EPITOME (seconds): the encoder is saved
    beside the heads and the reloaded classifier gives the same levels."""
    from empathy_pipeline.core.params import Epitome

    texts = [("I lost my job.", "I'm so sorry, that must be awful. How are you coping?", 2, 2, 2),
             ("My cat is sick.", "Check the vet's opening hours.", 0, 0, 0),
             ("I feel so alone.", "That sounds really lonely, I've felt that too.", 2, 2, 0)]
    rows = [(f"s{i}", f"r{i}", f"{post} ({i})", reply, er, ip, ex)
            for i, (post, reply, er, ip, ex) in enumerate(texts * 8)]
    for mechanism, name in epitome_data.FILES.items():
        column = 4 + epitome_data.MECHANISMS.index(mechanism)
        pl.DataFrame([(r[0], r[1], r[2], r[3], r[column]) for r in rows],
                     schema=["sp_id", "rp_id", "seeker_post", "response_post", "level"], orient="row") \
            .with_columns(rationales=pl.lit("")).write_csv(tmp_path / name)
    p = Epitome(source=str(tmp_path), method="fine_tune", epochs=1, held_out_fraction=0.25)
    classifier, metrics = epitome.train(tmp_path, p)
    assert metrics["method"] == "fine_tune" and metrics["n_train"] + metrics["n_held_out"] == 24
    classifier.save(tmp_path / "model")
    assert (tmp_path / "model" / "encoder").is_dir()
    replies = [t[1] for t in texts]
    contexts = [t[0] for t in texts]
    again = epitome.levels(tmp_path / "model", contexts, replies)
    assert again == classifier.levels(contexts, replies)
    assert all(set(v) <= {0, 1, 2} for v in again.values())
