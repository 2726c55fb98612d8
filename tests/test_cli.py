"""The `empathy` command: profiles, score, data fetch — run as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from dvc_spec import lookup

from empathy_pipeline.core.profiles import load_profile

ROOT = Path(__file__).resolve().parents[1]
PAPER_PROFILES = ("synth-empathy", "efficient-empathy")
EMPATHY = str(Path(sys.executable).parent / "empathy")


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([EMPATHY, *args], cwd=cwd, capture_output=True, text=True)


def test_demo_profile_covers_every_key_of_the_paper_profiles_and_is_params_yaml():
    demo = load_profile("demo")
    for name in (*PAPER_PROFILES, "real-mini"):
        missing = sorted(load_profile(name).keys() - demo.keys())
        assert not missing, f"profiles/demo.yaml lacks {missing}: `empathy profile demo` would not switch back"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in demo.items():
        assert lookup(params, dotted) == value, f"profiles/demo.yaml {dotted}={value!r} but params.yaml differs"


@pytest.mark.parametrize("name", PAPER_PROFILES)
def test_profile_switch_round_trips_and_keeps_comments(tmp_path, name):
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    result = run("profile", name, "--params-file", str(params))
    assert result.returncode == 0, result.stderr
    switched = yaml.safe_load(params.read_text())
    assert switched["llm"]["backend"] == "vllm" and switched["evaluate"]["max_samples"] is None
    assert switched["profile"] == name and "# keep S > T" in params.read_text()
    assert run("profile", "demo", "--params-file", str(params)).returncode == 0
    assert yaml.safe_load(params.read_text()) == yaml.safe_load((ROOT / "params.yaml").read_text())
    bad = run("profile", "nope", "--params-file", str(params))
    assert bad.returncode == 1 and bad.stderr.strip() == (
        "error: unknown profile 'nope' (known: demo, efficient-empathy, real-mini, synth-empathy)")


def test_score_prints_the_metrics_json(tmp_path):
    path = tmp_path / "preds.jsonl"
    rows = [{"prediction": "i am so sorry to hear that .", "reference": "i am sorry to hear that ."},
            {"prediction": "that sounds great !", "reference": "that is great news !"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run("score", str(path), "--no-bertscore")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["n"] == 2 and 0 < scores["bleu1"] < 100 and "bertscore_f1" not in scores
    pl.DataFrame(rows).write_parquet(tmp_path / "preds.parquet")
    assert json.loads(run("score", str(tmp_path / "preds.parquet"), "--no-bertscore").stdout) == scores
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    failed = run("score", str(empty), "--no-bertscore")
    assert failed.returncode == 1 and failed.stderr.strip() == f"error: {empty}: no predictions to score"


def test_version_names_the_packages_that_make_the_numbers():
    from importlib.metadata import version

    result = run("--version")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"empathy-pipeline {version('empathy-pipeline')}"
    assert f"  torch {version('torch')}" in lines and f"  transformers {version('transformers')}" in lines
