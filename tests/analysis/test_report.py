"""`empathy report` over a real git + DVC repository: commits, an experiment, a stale lock, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from empathy_pipeline.analysis.report import collect, render, seed_summaries
from empathy_pipeline.core.errors import PipelineError

BIN = Path(sys.executable).parent
WRITER = """import json, pathlib, yaml
params = yaml.safe_load(open("params.yaml"))
score, seed = params["score"], params["train"]["seed"]
out = pathlib.Path("metrics")
out.mkdir(exist_ok=True)
for model, offset in (("synth_base", 0.0), ("synth", 1.0)):
    bleu1 = score + offset + 0.25 * seed
    (out / f"{model}.json").write_text(json.dumps({"bleu1": bleu1, "cider": 10 * score, "n": 3}))
(out / "prepare.json").write_text(json.dumps({"train": {"samples": 10}}))
(out / "diversity.json").write_text(json.dumps({"k": 2}))
"""
PIPELINE = """stages:
  score:
    cmd: python writer.py
    deps: [writer.py]
    params: [score, train]
    metrics:
      - metrics/synth_base.json: {cache: false}
      - metrics/synth.json: {cache: false}
      - metrics/prepare.json: {cache: false}
      - metrics/diversity.json: {cache: false}
"""


def run(repo: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run(list(args), cwd=repo, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr[-2000:]}"
    return proc.stdout.strip()


def commit(repo: Path, message: str) -> str:
    run(repo, "git", "add", "-A")
    run(repo, "git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci", "commit", "-q", "-m", message)
    return run(repo, "git", "rev-parse", "--short", "HEAD")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("report")
    run(root, "git", "init", "-q")
    run(root, str(BIN / "dvc"), "init", "-q")
    (root / "README").write_text("no metrics yet\n")
    empty = commit(root, "no pipeline")
    (root / "writer.py").write_text(WRITER)
    (root / "dvc.yaml").write_text(PIPELINE)
    (root / "params.yaml").write_text("score: 1.0\ntrain:\n  seed: 0\n")
    run(root, str(BIN / "dvc"), "repro", "-q")
    first = commit(root, "score 1")
    (root / "params.yaml").write_text("score: 2.0\ntrain:\n  seed: 0\n")
    run(root, str(BIN / "dvc"), "repro", "-q")
    second = commit(root, "score 2")
    run(root, str(BIN / "dvc"), "exp", "run", "-q", "-S", "score=5.0", "-n", "five")
    for seed in (1, 2):  # the same recipe under other training seeds
        run(root, str(BIN / "dvc"), "exp", "run", "-q", "-S", "score=5.0", "-S", f"train.seed={seed}",
            "-n", f"five-s{seed}")
    run(root, "git", "checkout", "-q", "--", ".")
    run(root, str(BIN / "dvc"), "checkout", "-q")
    return {"root": root, "empty": empty, "first": first, "second": second}


def test_relative_revisions_and_branch_names_resolve(repo):
    rows = collect(repo["root"], revs=["HEAD~1", "HEAD"], workspace=False)
    assert [r.metrics["bleu1"] for r in rows if r.model == "synth_base"] == [1.0, 2.0]


def test_report_shows_commits_and_experiments_with_the_best_marked(repo):
    rows = collect(repo["root"], revs=[repo["first"], repo["second"]], exps=["five"], workspace=False)
    by = {(r.source, r.model): r for r in rows}
    assert by[(repo["first"], "synth_base")].metrics["bleu1"] == 1.0
    assert by[(repo["second"], "synth")].metrics["bleu1"] == 3.0
    assert by[("five", "synth")].metrics["bleu1"] == 6.0 and not by[("five", "synth")].stale
    assert by[(repo["first"], "synth")].n_data == 12  # ED train 10 + the 2 selected
    assert not any(r.stale for r in rows)
    table = render(rows)
    assert "| five | synth | **6.00** |" in table and "**50.00**" in table
    assert json.loads(render(rows, "json"))[0]["source"] == repo["first"]
    assert render(rows, "csv").splitlines()[0].startswith("source,model,B-1,")


def test_rows_differing_only_in_the_training_seed_get_mean_and_std(repo):
    rows = collect(repo["root"], revs=[repo["first"], repo["second"]], exps=["five", "five-s1", "five-s2"],
                   workspace=False)
    summaries = {s.model: s for s in seed_summaries(rows)}
    assert set(summaries) == {"synth_base", "synth"}  # the two commits are other recipes, not a replicate
    synth = summaries["synth"]
    assert sorted(synth.sources) == ["five", "five-s1", "five-s2"]
    assert sorted(synth.seeds) == ["train.seed=0", "train.seed=1", "train.seed=2"]
    assert synth.mean["bleu1"] == pytest.approx(6.25) and synth.std["bleu1"] == pytest.approx(0.25)
    assert synth.mean["cider"] == pytest.approx(50.0) and synth.std["cider"] == 0.0
    assert "| 6.25 ± 0.25 |" in render(rows)
    [aggregate] = [e for e in json.loads(render(rows, "json")) if e.get("aggregate") and e["model"] == "synth"]
    assert aggregate["bleu1"] == pytest.approx(6.25) and aggregate["std"]["bleu1"] == pytest.approx(0.25)
    assert any(line.startswith("mean over ") and ",synth," in line for line in render(rows, "csv").splitlines())
    # one seed of each recipe: no summary
    assert seed_summaries(collect(repo["root"], revs=[repo["first"], repo["second"]], workspace=False)) == []


def test_a_commit_that_changed_code_without_repro_is_marked_stale(repo, tmp_path):
    root = repo["root"]
    (root / "writer.py").write_text(WRITER + "# changed, not reproduced\n")
    stale = commit(root, "edit without repro")
    try:
        rows = collect(root, revs=[stale, repo["second"]], workspace=False)
        assert {r.source for r in rows if r.stale} == {stale}
        assert "(stale lock)" in render(rows)
    finally:
        run(root, "git", "reset", "-q", "--hard", "HEAD~1")


@pytest.mark.parametrize("kwargs, message", [
    ({"revs": ["no-such-branch"]}, "no-such-branch"),
    ({"exps": ["nine"]}, "experiment(s) nine: not found"),
    ({"revs": ["EMPTY"]}, "no metrics/<model>.json there"),
])
def test_unknown_or_empty_sources_are_one_line_errors(repo, kwargs, message):
    kwargs = {k: [repo["empty"] if v == "EMPTY" else v for v in vs] for k, vs in kwargs.items()}
    with pytest.raises(PipelineError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        collect(repo["root"], workspace=False, **kwargs)
    assert "\n" not in str(err.value)
