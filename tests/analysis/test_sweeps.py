"""Sweeps the DVC way, in a small real git + DVC repository shaped like the pipeline.

The repository has an "expensive" stage whose resumable shard directory is a persist, uncached,
git-ignored output (as generate's and rate's are) and a cheap threshold stage after it. Queued
experiments run in a temp clone of HEAD: without `-C` for the shard directory the expensive stage
reruns in every experiment, with it only the tail runs (docs/experiments.md). Then `empathy
sweep-plot` turns the experiments into the CSV that dvc.yaml's own top-level plots draw.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from projects import wait_for_queue

from empathy_pipeline.analysis.sweeps import collect, points_from_exp_show
from empathy_pipeline.core.errors import PipelineError

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GENERATE = """import pathlib
shards = pathlib.Path("data/shards")
shards.mkdir(parents=True, exist_ok=True)
(shards / "0.json").write_text("[1, 2, 3, 4, 5, 6, 7, 8, 9]")
pathlib.Path("data/generated.txt").write_text((shards / "0.json").read_text())
"""
SELECT = """import json, pathlib, yaml
t = yaml.safe_load(open("params.yaml"))["quality"]["threshold"]
kept = [x for x in json.loads(pathlib.Path("data/generated.txt").read_text()) if x > t]
out = pathlib.Path("metrics")
out.mkdir(exist_ok=True)
(out / "selection.json").write_text(json.dumps({"n_kept": len(kept)}))
(out / "diversity.json").write_text(json.dumps({"k": max(len(kept) - 1, 0)}))
(out / "synth.json").write_text(json.dumps({"cider": 10.0 - t, "bleu1": 2.0 * t, "n": 3}))
"""
STAGES = {
    "generate": {"cmd": "python generate.py", "deps": ["generate.py"],
                 "outs": ["data/generated.txt", {"data/shards": {"persist": True, "cache": False}}]},
    "quality_select": {"cmd": "python select.py", "deps": ["select.py", "data/generated.txt"],
                       "params": ["quality"],
                       "metrics": [{f"metrics/{name}.json": {"cache": False}}
                                   for name in ("selection", "diversity", "synth")]},
}
# As in the project: DVC's own outputs and the shard directories are git-ignored.
GITIGNORE = "/data/\n/dvc_plots/\n"


def run(repo: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run(list(args), cwd=repo, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


def dvc(repo: Path, *args: str) -> str:
    return run(repo, str(BIN / "dvc"), *args)


def experiments(repo: Path) -> dict[str, float]:
    """Experiment name -> its quality.threshold, from `dvc exp show --json`."""
    found = {}
    for entry in json.loads(dvc(repo, "exp", "show", "--json")):
        for group in entry.get("experiments") or []:
            for exp in group["revs"]:
                found[exp["name"]] = exp["data"]["params"]["params.yaml"]["data"]["quality"]["threshold"]
    return found


def ran(repo: Path, name: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", dvc(repo, "queue", "logs", name)))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweeps")
    run(root, "git", "init", "-q")
    dvc(root, "init", "-q")
    dvc(root, "config", "core.analytics", "false")
    (root / "generate.py").write_text(GENERATE)
    (root / "select.py").write_text(SELECT)
    (root / ".gitignore").write_text(GITIGNORE)
    # The project's own top-level plots definitions, so the test renders what a user renders.
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": STAGES, "plots": plots}, sort_keys=False))
    (root / "params.yaml").write_text("quality:\n  threshold: 3\n")
    dvc(root, "repro", "-q")
    run(root, "git", "add", "-A")
    run(root, "git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci", "commit", "-q", "-m", "base")
    try:
        # The pitfall first: no -C, so the temp clone lacks the git-ignored shards.
        dvc(root, "exp", "run", "--queue", "-q", "-S", "quality.threshold=4")
        # The recipe: the shard directory copied in, so generate is up to date.
        dvc(root, "exp", "run", "--queue", "-q", "-S", "quality.threshold=5,7", "-C", "data/shards")
        dvc(root, "queue", "start", "-j", "1")
        wait_for_queue(lambda: dvc(root, "queue", "status"))
    finally:
        dvc(root, "queue", "stop")
    return root


def test_queued_experiments_rerun_the_expensive_stage_only_without_its_shards(repo):
    names = experiments(repo)
    assert sorted(names.values()) == [4, 5, 7]
    for name, threshold in names.items():
        expected = {"generate", "quality_select"} if threshold == 4 else {"quality_select"}
        assert ran(repo, name) == expected, (name, threshold)
    # The workspace is left as it was: a queued sweep runs elsewhere.
    assert yaml.safe_load((repo / "params.yaml").read_text())["quality"]["threshold"] == 3


def test_sweep_plot_writes_one_sorted_row_per_experiment(repo, tmp_path):
    out = tmp_path / "plots" / "sweeps" / "quality.csv"
    png = tmp_path / "quality.png"
    printed = run(repo, str(BIN / "empathy"), "sweep-plot", "--param", "quality.threshold", "--metric", "cider",
                  "--metric", "bleu1", "--count", "selection.n_kept", "--count", "diversity.k", "--with-baseline",
                  "--out", str(out), "--png", str(png))
    assert "4 experiment(s)" in printed
    rows = list(csv.DictReader(out.open()))
    assert [r["quality_threshold"] for r in rows] == ["3", "4", "5", "7"]
    assert [float(r["cider"]) for r in rows] == [7.0, 6.0, 5.0, 3.0]
    assert [int(r["selection_n_kept"]) for r in rows] == [6, 5, 4, 2]
    assert [int(r["diversity_k"]) for r in rows] == [5, 4, 3, 1]
    assert rows[0]["exp"] == "master" or rows[0]["exp"] == "main"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_the_projects_top_level_plot_renders_the_sweep_csv(repo):
    run(repo, str(BIN / "empathy"), "sweep-plot", "--param", "quality.threshold", "--metric", "cider",
        "--metric", "bleu1", "--count", "selection.n_kept", "--count", "diversity.k",
        "--out", "plots/sweeps/quality.csv")
    shown = json.loads(dvc(repo, "plots", "show", "--json"))["data"]
    # One vega spec per top-level plot; its rows are the CSV's, one per (experiment, y field).
    rows = shown["quality_sweep"][0]["content"]["data"]["values"]
    got = {(row["field"], float(row["quality_threshold"]), float(row["dvc_inferred_y_value"])) for row in rows}
    assert got == {("cider", 4, 6.0), ("cider", 5, 5.0), ("cider", 7, 3.0),
                   ("bleu1", 4, 8.0), ("bleu1", 5, 10.0), ("bleu1", 7, 14.0)}
    counts = shown["quality_sweep_data"][0]["content"]["data"]["values"]
    assert {(row["field"], row["dvc_inferred_y_value"]) for row in counts if row["quality_threshold"] == "7"} == {
        ("selection_n_kept", "2"), ("diversity_k", "1")}
    html = dvc(repo, "plots", "show", "-o", "dvc_plots")
    assert "index.html" in html and (repo / "dvc_plots" / "index.html").read_text().count("quality_threshold") > 0


@pytest.fixture(scope="module")
def exp_show(repo) -> list:
    return json.loads(dvc(repo, "exp", "show", "--json"))


@pytest.mark.parametrize("kwargs, message", [
    ({"exps": ["no-such-exp"]}, "experiment(s) no-such-exp: not found"),
    ({"metrics": ["nosuch"]}, "no quality.threshold or metric in experiment(s)"),
    ({"metrics": []}, "name at least one --metric"),
    ({"param": "train.seed"}, "no train.seed or metric"),
])
def test_bad_requests_are_one_line_errors(exp_show, kwargs, message):
    args = {"param": "quality.threshold", "metrics": ["cider"], "model": "synth", **kwargs}
    with pytest.raises(PipelineError, match=re.escape(message)) as err:
        points_from_exp_show(exp_show, args.pop("param"), args.pop("metrics"), **args)
    assert "\n" not in str(err.value)


def test_a_named_experiment_must_have_the_metric_and_the_section_a_default_model(repo, exp_show):
    name = next(exp["name"] for entry in exp_show for group in entry.get("experiments") or [] for exp in group["revs"])
    with pytest.raises(PipelineError, match=re.escape(f"experiment(s) {name} (bleu4)")):
        points_from_exp_show(exp_show, "quality.threshold", ["bleu4"], "synth", exps=[name])
    with pytest.raises(PipelineError, match="no default model for section 'evaluate'"):
        collect(repo, "evaluate.seed", ["cider"])
