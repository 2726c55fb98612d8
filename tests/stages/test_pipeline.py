"""The whole DAG through real `dvc repro`, at a tiny scale, in a copy of the project.

Proves the wiring the researchers rely on: every stage runs on CPU with the real SmolLM2, a second
repro does nothing, and each sweep parameter invalidates exactly the stages downstream of it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from projects import TINY, git, set_params, wait_for_queue

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# Small enough for CI (a few minutes on 2 cores), large enough that every stage has data.

MODEL_STAGES = ["synth_base", "discriminator", "synth", "efficient_base", "expert_sensibility", "expert_rationality",
                "moe"]


def dvc(work: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run([str(BIN / "dvc"), *args], cwd=work, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def stale_stages(work: Path) -> set[str]:
    out = dvc(work, "status", "--json").stdout
    return set(json.loads(out or "{}"))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("pipeline")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, work / name)
    for name in ("stages", "src", "configs"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data" / "sample", work / "data" / "sample")
    # The project's ignores, so git holds what it holds in the project (not the shard directories):
    # the queued sweep below then meets what a user's queued sweep meets.
    shutil.copy(ROOT / ".gitignore", work / ".gitignore")
    set_params(work / "params.yaml", TINY)
    git(work, "init", "-q")
    dvc(work, "init", "-q")
    dvc(work, "config", "core.analytics", "false")
    dvc(work, "repro")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "tiny run")
    return work


@pytest.mark.slow
def test_every_stage_ran_and_wrote_its_metrics(demo_run):
    scores = {name: json.loads((demo_run / "metrics" / f"{name}.json").read_text()) for name in MODEL_STAGES}
    for name, got in scores.items():
        assert got["n"] == 6 and {"bleu1", "bleu4", "rouge1", "rougeL", "dist1", "dist2", "cider"} <= set(got), name
    # Both branches start from the same embedded model here: their base evaluations must agree exactly.
    assert scores["synth_base"] == scores["efficient_base"]
    for name in ("prepare", "generate", "selection", "diversity", "data_quality", "rate", "split", "epitome"):
        assert (demo_run / "metrics" / f"{name}.json").exists(), name
    config = json.loads((demo_run / "models" / "moe" / "config.json").read_text())
    assert config["architectures"] == ["MixtralForCausalLM"] and config["num_local_experts"] == 2
    assert (demo_run / "models" / "discriminator" / "adapter_config.json").exists()


@pytest.mark.slow
def test_the_demo_needs_nothing_beside_the_repository(demo_run):
    """The scratch copy has no ../shared beside it (a newcomer's clone): every file a stage read is inside."""
    lock = yaml.safe_load((demo_run / "dvc.lock").read_text())
    outside = sorted({dep["path"] for stage in lock["stages"].values() for dep in stage.get("deps", [])
                      if Path(dep["path"]).is_absolute() or dep["path"].startswith("..")})
    assert not outside, f"stages read files outside the project: {outside}"
    assert not (demo_run.parent / "shared").exists()


@pytest.mark.slow
def test_second_repro_runs_nothing(demo_run):
    assert stale_stages(demo_run) == {"environment"}  # always_changed: it rewrites the same bytes
    out = dvc(demo_run, "repro").stdout
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {"environment"}


@pytest.mark.slow
def test_metrics_hold_results_only_and_a_rerun_changes_none(demo_run):
    """Metrics change only when results do: no wall times in them, and forcing the data, selection,
    split and base-model evaluation stages to run again leaves `dvc metrics diff` empty."""
    for path in (demo_run / "metrics").glob("*.json"):
        keys = json.dumps(json.loads(path.read_text()))
        assert "seconds" not in keys and "_time" not in keys, path.name
    for stage in ("prepare", "rate", "split", "quality_select", "diversity_select", "evaluate@synth_base"):
        dvc(demo_run, "repro", "-f", "-s", stage)
    assert dvc(demo_run, "metrics", "diff", "--json").stdout.strip() in ("", "{}")
    assert git(demo_run, "status", "--porcelain", "--", "metrics", "dvc.lock") == ""


# What a queued experiment must be given: the git-ignored, uncached shard directories (docs/experiments.md).
QUEUE_COPY = ("-C", "data/synth/shards", "-C", "data/ratings/shards", "-C", "outputs/shards")
UPSTREAM = {"models@synth", "models@efficient", "prepare", "generate", "train_discriminator", "discriminate",
            "embed", "rate", "split"}


@pytest.mark.slow
def test_a_queued_threshold_sweep_runs_only_the_tail(demo_run):
    """`dvc exp run --queue -S quality.threshold=A,B` + `dvc queue start`: each experiment reruns
    quality_select and its tail in a temp clone, never generation, discrimination, embedding or
    rating, and `dvc exp show --json` / `empathy report --exp` list both experiments."""
    import polars as pl

    similarities = sorted(pl.read_parquet(demo_run / "data/synth/scores.parquet")["similarity"].to_list())
    assert len(similarities) >= 2, "the tiny run should score at least two synthetic samples"
    # A cut that keeps every sample and one that drops the lowest (not at test_sweeps_rerun_only_the_tail's
    # midpoint, which would then come from the run cache instead of running).
    values = [round(similarities[0] - 1, 3), round(similarities[0] + (similarities[1] - similarities[0]) / 4, 3)]
    dvc(demo_run, "exp", "run", "--queue", "-S", f"quality.threshold={values[0]},{values[1]}", *QUEUE_COPY)
    try:
        dvc(demo_run, "queue", "start", "-j", "1")
        wait_for_queue(lambda: dvc(demo_run, "queue", "status").stdout)
    finally:
        dvc(demo_run, "queue", "stop")
    names, kept = {}, {}
    for entry in json.loads(dvc(demo_run, "exp", "show", "--json").stdout):
        for group in entry.get("experiments") or []:
            for exp in group["revs"]:
                threshold = exp["data"]["params"]["params.yaml"]["data"]["quality"]["threshold"]
                names[threshold] = exp["name"]
                kept[threshold] = exp["data"]["metrics"]["metrics/selection.json"]["data"]["n_kept"]
    assert sorted(names) == sorted(values), names
    for dropped, value in enumerate(values):
        assert kept[value] == len(similarities) - dropped, (value, kept)  # each experiment has its own cut
        ran = ran_stages(dvc(demo_run, "queue", "logs", names[value]).stdout)
        print(f"queued quality.threshold={value}: ran {sorted(ran)}")
        assert "quality_select" in ran and ran <= SYNTH_TAIL | {"quality_select"}, sorted(ran)
        assert not ran & UPSTREAM, sorted(ran & UPSTREAM)
    report = subprocess.run([str(BIN / "empathy"), "report", "--no-workspace", "--model", "synth", "--format", "json",
                             *(a for v in values for a in ("--exp", names[v]))],
                            cwd=demo_run, capture_output=True, text=True, env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
    assert report.returncode == 0, report.stderr
    rows = {row["source"]: row for row in json.loads(report.stdout)}
    assert set(rows) == set(names.values())
    # #data of synth = ED train + the diverse subset, which shrinks as T drops more samples.
    assert rows[names[values[0]]]["n_data"] >= rows[names[values[1]]]["n_data"]


def ran_stages(output: str) -> set[str]:
    """Stages `dvc repro` ran, but for the always-changed environment record."""
    return set(re.findall(r"Running stage '([^']+)'", output)) - {"environment"}


SYNTH_TAIL = {"diversity_select", "train_synth", "evaluate@synth", "judge_quality"}
MOE_TAIL = {"train_expert@sensibility", "train_expert@rationality", "btx_merge", "train_router",
            "evaluate@expert_sensibility", "evaluate@expert_rationality", "evaluate@moe"}


@pytest.mark.slow
def test_sweeps_rerun_only_the_tail(demo_run):
    """What `dvc exp run -S key=value` reruns: the swept stage and, where its output changed, its tail."""
    import polars as pl

    similarities = sorted(pl.read_parquet(demo_run / "data/synth/scores.parquet")["similarity"].to_list())
    assert len(similarities) >= 2, "the tiny run should keep at least two synthetic samples"
    # k=1 of two kept samples, then a threshold between the two lowest scores: both change data.
    sweeps = [
        ("diversity.k", 1, "diversity_select", SYNTH_TAIL - {"diversity_select"}),
        ("quality.threshold", round((similarities[0] + similarities[1]) / 2, 3), "quality_select", SYNTH_TAIL),
        ("split.threshold", 6, "split", MOE_TAIL),
        ("evaluate.max_new_tokens", 9, None, {f"evaluate@{m}" for m in MODEL_STAGES}),
    ]
    for key, value, first, tail in sweeps:
        set_params(demo_run / "params.yaml", {key: value})
        ran = ran_stages(dvc(demo_run, "repro").stdout)
        print(f"{key}={value}: ran {sorted(ran)}")
        must_run = {first} if first else tail
        assert must_run <= ran <= must_run | tail, (key, sorted(ran))
        if key == "quality.threshold":  # a real cut, end to end: exactly the lowest-scored sample goes
            selection = json.loads((demo_run / "metrics/selection.json").read_text())
            assert selection["n_kept"] == selection["n_scored"] - 1 == len(similarities) - 1
            assert json.loads((demo_run / "metrics/diversity.json").read_text())["n_in"] == selection["n_kept"]


@pytest.mark.slow
def test_editing_a_library_module_reruns_exactly_its_stages(demo_run):
    """The deps that cannot drift, end to end: an edit to the split rule makes `split` stale and nothing
    else; one to K-Center-Greedy makes diversity_select stale and not embed; one to a judge's prompt
    reruns no training (the pairwise judge's: nothing at all; the data-quality judge's: judge_quality)."""
    for module, expected in (("efficient_empathy/split.py", {"split"}), ("synth_empathy/kcenter.py", {"diversity_select"}),
                             ("judges/pairwise.py", set()), ("synth_empathy/data_quality.py", {"judge_quality"})):
        path = demo_run / "src" / "empathy_pipeline" / module
        path.write_text(path.read_text() + "\n# an edit\n")
        assert stale_stages(demo_run) - {"environment"} == expected, module
        ran = ran_stages(dvc(demo_run, "repro").stdout)
        assert expected <= ran, (module, sorted(ran))
        if module.startswith("judges/") or module.endswith("data_quality.py"):
            assert ran == expected, (module, sorted(ran))  # no fine-tune, no merge, no evaluation
