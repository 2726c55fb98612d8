"""`empathy claims` at a tiny scale: the arms run as real DVC experiments, the table is produced, and a
second run skips every finished arm (verdicts at this scale mean nothing and are not checked)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from projects import TINY, git, set_params

from empathy_pipeline.analysis import claims as claims_lib
from empathy_pipeline.core.errors import PipelineError

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}
# Claims 1 and 3 need three arms (Full F.T., the sensibility expert, the MoE) and no plan (that is for
# the Synth-Empathy claims' T sweep).
ONLY = "1,3"


def empathy(work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "empathy"), *args], cwd=work, env=ENV, capture_output=True, text=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("claims")
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(ROOT / name, work / name)
    for name in ("stages", "src", "configs"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data" / "sample", work / "data" / "sample")
    set_params(work / "params.yaml", {**TINY, "train_expert.max_samples": 4, "train_router.max_samples": 4})
    # A stage-metrics file no claims-1/3 arm depends on, as another arm would leave in the workspace.
    (work / "metrics").mkdir()
    (work / "metrics" / "selection.json").write_text('{"left_by": "another arm"}\n')
    (work / "profiles").mkdir()
    (work / "profiles" / "smoke.yaml").write_text("profile: smoke\nsplit:\n  threshold: 5\n")
    git(work, "init", "-q")
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=work, env=ENV, check=True)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "tiny project")
    return work


@pytest.fixture(scope="module")
def first_run(project: Path) -> subprocess.CompletedProcess:
    return empathy(project, "claims", "--profile", "smoke", "--seeds", "1", "--only", ONLY, "--n-resamples", "50")


@pytest.mark.slow
def test_claims_run_as_dvc_experiments_and_make_the_table(project, first_run):
    assert first_run.returncode == 0, first_run.stdout[-3000:] + first_run.stderr[-3000:]
    results = project / "benchmarks/results/claims"
    assert {p.name for p in results.iterdir() if p.is_dir()} == {"ee-full-s0", "ee-sens-t5-s0", "ee-moe-s0"}
    assert (results / "claims.md").read_text().startswith("| # | paper | claim |")
    for arm in ("ee-full-s0", "ee-sens-t5-s0", "ee-moe-s0"):
        info = json.loads((results / arm / "arm.json").read_text())
        assert (results / arm / "predictions.parquet").exists() and (results / arm / "metrics.json").exists()
        assert info["experiment"].startswith(f"claims-{arm}-")
        # the stage metrics of the arm's own upstream stages only
        assert {p.name for p in (results / arm).glob("*.json")} == {"arm.json", "metrics.json", "rate.json", "split.json"}
    assert json.loads((results / "ee-full-s0" / "arm.json").read_text())["params"]["experts.sensibility"] == "all"
    # The arms are DVC experiments of the project: `dvc exp show` lists them with their params.
    shown = subprocess.run([str(BIN / "dvc"), "exp", "show", "--json"], cwd=project, env=ENV,
                           capture_output=True, text=True, check=True).stdout
    for arm in ("ee-full-s0", "ee-sens-t5-s0", "ee-moe-s0"):
        assert f"claims-{arm}-" in shown
    # The file holds the whole table (the claims not run among it); --only chose what ran and what printed.
    table = json.loads((project / "benchmarks/results/claims.json").read_text())
    rows = {row["claim"]: row for row in table["claims"]}
    assert set(rows) == set(range(1, 10)) and rows[2]["verdict"] == rows[6]["verdict"] == "not run"
    assert "| 1 | EE Table 2 |" in first_run.stdout and "| 2 | EE Table 3 |" not in first_run.stdout
    for number in (1, 3):
        (part,) = rows[number]["parts"]
        assert part["status"] == "done"
        metrics = {m["metric"]: m for m in part["comparison"]["metrics"]}
        assert {"bleu1", "rouge1", "cider"} <= set(metrics)
        assert {"p_holm", "a_seed_std", "b_seed_std"} <= set(metrics["bleu1"])
        # one training seed a side: numbers, and no verdict whatever they say
        assert rows[number]["verdict"] == "needs seeds"
    assert "| 1 | EE Table 2 |" in first_run.stdout and "| ee-full → ee-sens-t5 | 0 / 0, " in first_run.stdout
    # The workspace's params.yaml is the committed one again.
    assert git(project, "status", "--porcelain", "params.yaml") == ""


@pytest.mark.slow
def test_a_second_run_skips_finished_arms(project, first_run):
    assert first_run.returncode == 0
    before = git(project, "for-each-ref", "refs/exps")
    again = empathy(project, "claims", "--profile", "smoke", "--seeds", "1", "--only", ONLY, "--n-resamples", "50")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "3 arm(s), 3 already in" in again.stdout
    assert "claims [" not in again.stdout
    assert git(project, "for-each-ref", "refs/exps") == before      # no new experiment


@pytest.mark.slow
def test_uncommitted_params_are_refused_in_one_line(project, first_run):
    params = project / "params.yaml"
    original = params.read_text()
    params.write_text(original + "\n# edited\n")
    try:
        result = empathy(project, "claims", "--profile", "smoke", "--only", ONLY)
    finally:
        params.write_text(original)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: params.yaml differs from the last commit")
    assert len(result.stderr.strip().splitlines()) == 1


def test_params_left_by_a_killed_arm_are_recovered_and_hand_edits_are_not(project):
    params = project / "params.yaml"
    committed = params.read_bytes()
    lines: list[str] = []
    killed = claims_lib.Runner(project, "smoke", project / "results", lines.append)
    killed.begin(claims_lib.Arm("ee-sens-t5", "expert_sensibility", {"split.threshold": 5}, seed=1))
    assert params.read_bytes() != committed and killed.marker.exists()
    # The process dies here: no restore. The next run puts the committed params back and says so.
    claims_lib.Runner(project, "smoke", project / "results", lines.append)
    assert params.read_bytes() == committed
    assert not killed.marker.exists()
    assert lines == ["claims: arm ee-sens-t5-s1 was killed mid-run; params.yaml is the committed one again and "
                     "the arm reruns (DVC's run cache and the stages' shards keep what it finished)"]
    # Params edited by hand after the kill are not the arm's: refused, as any uncommitted edit.
    killed.begin(claims_lib.Arm("ee-full", "expert_sensibility", {"experts.sensibility": "all"}, seed=1))
    params.write_bytes(params.read_bytes() + b"# edited\n")
    try:
        with pytest.raises(PipelineError, match="params.yaml differs from the last commit"):
            claims_lib.Runner(project, "smoke", project / "results", lines.append)
    finally:
        params.write_bytes(committed)
    assert len(lines) == 1


def test_verdicts_come_from_the_holm_p_and_need_three_seeds():
    assert claims_lib.verdict({"p_holm": 0.01, "diff": 2.0}, n_seeds=3) == "holds"
    assert claims_lib.verdict({"p_holm": 0.01, "diff": -2.0}, n_seeds=5) == "reversed"
    assert claims_lib.verdict({"p_holm": 0.2, "diff": 2.0}, n_seeds=3) == "no difference"
    # two seeds a side never decide, however small the p-value
    assert claims_lib.verdict({"p_holm": 1e-12, "diff": 50.0}, n_seeds=2) == "needs seeds"
    assert claims_lib.row_verdict(["holds", "holds", "no difference"]) == "holds"
    assert claims_lib.row_verdict(["holds", "no difference", "no difference"]) == "no difference"
    assert claims_lib.row_verdict(["holds", "reversed", "holds"]) == "mixed"
    assert claims_lib.row_verdict(["needs seeds"] * 3) == "needs seeds"
    # a claim of two pairs holds only when both do; a pair short of seeds leaves it short of seeds
    assert claims_lib.claim_verdict(["holds", "holds"]) == "holds"
    assert claims_lib.claim_verdict(["no difference", "holds"]) == "no difference"
    assert claims_lib.claim_verdict(["reversed", "holds"]) == "mixed"
    assert claims_lib.claim_verdict(["holds", "needs seeds"]) == "needs seeds"
    assert claims_lib.row_verdict(["reversed", "reversed", "no difference"]) == "reversed"


def test_arm_keys_follow_params_and_seed():
    params = {"split": {"threshold": 5}, "train": {"seed": 0}}
    sens = claims_lib.Arm("ee-sens-t5", "expert_sensibility", {"split.threshold": 5})
    assert claims_lib.arm_key(params, sens) == claims_lib.arm_key(json.loads(json.dumps(params)), sens)
    assert claims_lib.arm_key(params, sens) != claims_lib.arm_key({**params, "train": {"seed": 1}}, sens)
    assert claims_lib.arm_key(params, sens) != claims_lib.arm_key(params, claims_lib.Arm("ee-full", "moe"))


def test_a_param_added_at_its_neutral_value_keeps_finished_arms_valid():
    sens = claims_lib.Arm("ee-sens-t5", "expert_sensibility", {"split.threshold": 5})
    before = {"split": {"threshold": 5}, "train": {"seed": 0}}
    neutral = {"split": {"threshold": 5}, "train": {"seed": 0, "gradient_checkpointing": False}}
    on = {"split": {"threshold": 5}, "train": {"seed": 0, "gradient_checkpointing": True}}
    assert claims_lib.arm_key(neutral, sens) == claims_lib.arm_key(before, sens)
    assert claims_lib.arm_key(on, sens) != claims_lib.arm_key(before, sens)
    assert neutral["train"]["gradient_checkpointing"] is False      # the caller's dict is left alone
    # the committed arms were run before train.gradient_checkpointing existed: still found
    runner = claims_lib.Runner(ROOT, "real-mini", ROOT / "benchmarks/results/claims")
    assert runner.done(claims_lib.Arm("ee-sens-t5", "expert_sensibility", {"split.threshold": 5}, 0)) is not None


def test_every_arm_gets_every_seed_seed_by_seed_and_waits_for_its_seeds_subset_size():
    plan = {"thresholds": [10.0, 20.0, 30.0, 40.0, 50.0]}
    without_k = claims_lib.arms(plan, [0, 1, 2], k_main={})
    names = [a.name for a in without_k]
    assert not any(n.startswith("se-noquality") for n in names)
    # all of seed 0 before any seed 1, all of seed 1 before any seed 2
    assert max(i for i, a in enumerate(without_k) if a.seed == 0) < min(i for i, a in enumerate(without_k) if a.seed == 1)
    assert max(i for i, a in enumerate(without_k) if a.seed == 1) < min(i for i, a in enumerate(without_k) if a.seed == 2)
    assert {a.family for a in without_k if a.seed == 2} == {a.family for a in without_k if a.seed == 0}
    with_k = {a.name: a for a in claims_lib.arms(plan, [0, 1, 2], k_main={0: 7, 1: 9})}
    assert with_k["se-noquality-s0"].overrides == {"quality.threshold": -100, "diversity.k": 7}
    assert with_k["se-noquality-s1"].overrides == {"quality.threshold": -100, "diversity.k": 9}
    assert "se-noquality-s2" not in with_k
    assert claims_lib.families(plan, [7]) == {f"se-synth-t{t:g}" for t in plan["thresholds"]}
    # the A-vs-A control: the ED-only recipe again, at seeds no claim arm uses, after every claim arm
    control = [a for a in without_k if a.family == "se-ed-rerun"]
    assert [a.seed for a in control] == [100, 101, 102] and without_k[-3:] == control
    assert {(a.model, a.stage) for a in control} == {("discriminator", "evaluate@discriminator")}
    assert control[0].params() == {"train.seed": 100}
    assert claims_lib.families(plan, [0]) == {"se-ed", "se-ed-rerun"}


def _fake_arm(results: Path, family: str, seed: int, replies: list[str], references: list[str], **stage) -> None:
    """A finished arm as `empathy claims` writes it: predictions, the model's metrics, stage metrics."""
    from empathy_pipeline.evaluation.metrics import score_predictions

    folder = results / f"{family}-s{seed}"
    folder.mkdir(parents=True)
    import polars as pl

    pl.DataFrame({"sample_id": [f"test:{i}" for i in range(len(replies))], "prediction": replies,
                  "reference": references}).write_parquet(folder / "predictions.parquet")
    (folder / "metrics.json").write_text(json.dumps(score_predictions(replies, references, bertscore=False)))
    for name, values in stage.items():
        (folder / f"{name}.json").write_text(json.dumps(values))
    (folder / "arm.json").write_text(json.dumps({"arm": f"{family}-s{seed}", "family": family, "seed": seed}))


def test_the_table_from_finished_arms_alone(tmp_path):
    """--table-only: Synth-Empathy rows, the T sweep's rise-then-fall test, seeds resampled within arms."""
    results = tmp_path / "claims"
    references = [f"that sounds really hard , i am sorry about your {w} ." for w in
                  ("dog", "job", "exam", "car", "house", "friend", "mother", "phone", "trip", "team")] * 3
    good = list(references)                                    # the reference itself: the best possible reply
    bad = ["ok ." for _ in references]
    half = [r if i % 2 else "ok ." for i, r in enumerate(references)]
    ts = [10.0, 20.0, 30.0, 40.0, 50.0]
    results.mkdir()
    (results / "plan.json").write_text(json.dumps({"thresholds": ts, "quantiles": [0.1, 0.3, 0.5, 0.7, 0.9]}))
    for seed in range(3):
        for t, replies in zip(ts, (bad, half, good, half, bad), strict=True):
            _fake_arm(results, f"se-synth-t{t:g}", seed, replies, references, selection={"n_kept": int(100 - t)},
                      diversity={"k": int(90 - t)})
        _fake_arm(results, "se-ed", seed, bad, references)
    for seed in range(2):
        _fake_arm(results, "se-random", seed, bad, references)
    table = claims_lib.evaluate_claims(results, n_resamples=200)
    rows = {row["claim"]: row for row in table["claims"]}
    assert rows[6]["verdict"] == "holds"                        # ED + selection (good) beats ED only (bad)
    comparison = rows[6]["parts"][0]["comparison"]
    assert (comparison["seeds_a"], comparison["seeds_b"], comparison["n_items"]) == ([0, 1, 2], [0, 1, 2], 30)
    assert rows[7]["verdict"] == "holds"                        # bad, half, good, half, bad: up, then down
    assert [c["threshold"] for c in rows[7]["candidates"]] == ts[1:-1]
    assert [c["verdict"] for c in rows[7]["candidates"]] == ["holds", "holds", "holds"]
    assert [p["threshold"] for p in rows[7]["points"]] == ts and rows[7]["points"][0]["n_kept"] == 90
    # two seeds of se-random: a large gap, and still no verdict
    assert rows[9]["verdict"] == "needs seeds"
    assert _metric_of(rows[9], "bleu1")["diff"] > 10
    assert rows[8]["verdict"] == "not run" and rows[1]["verdict"] == "not run"
    # one Holm family for the table: every pair x headline metric, the pairs not run counting as p = 1
    n_pairs = sum(len(row["parts"]) for row in table["claims"])
    assert table["family"]["size"] == 3 * n_pairs and n_pairs == 1 + 2 + 1 + 1 + 1 + 1 + 6 + 1 + 1
    assert table["arms"]["se-ed"]["metrics"]["bleu1"]["std"] == 0.0 and table["arms"]["se-ed"]["seeds"] == [0, 1, 2]
    assert "se-random-s2" in table["cost"]["missing"] and "se-ed-s0" not in table["cost"]["missing"]
    assert table["control"]["verdict"] == "not run" and "se-ed-rerun-s100" in table["cost"]["missing"]
    text = claims_lib.render(table)
    assert "| 6 | SE Table 1 |" in text and "| se-ed → se-synth-t30 | 0,1,2 / 0,1,2, 30 |" in text
    assert "**needs seeds**" in text and "| 30 | 0,1,2 |" in text                # the sweep's table
    assert "se-synth-t10 → se-synth-t20" in text and "se-synth-t50 → se-synth-t40" in text
    claims_lib.write_outputs(table, tmp_path / "claims.json", results / "claims.md", results / "sweep.png")
    assert (results / "sweep.png").stat().st_size > 0 and json.loads((tmp_path / "claims.json").read_text())


def _metric_of(row: dict, key: str) -> dict:
    return next(m for m in row["parts"][0]["comparison"]["metrics"] if m["metric"] == key)


@pytest.mark.parametrize(("rerun", "expected"), [("same", "no difference"), ("better", "holds")])
def test_the_control_row_is_judged_alone_at_its_unadjusted_p(tmp_path, rerun, expected):
    """The A-vs-A row: outside the claims' Holm family, decided at its raw p; and it can fail, when the
    "rerun" side is in fact a better model."""
    references = [f"i am so sorry to hear about your {w} , that must be hard ." for w in
                  ("dog", "job", "exam", "car", "house", "friend", "mother", "phone", "trip", "team")] * 3
    bad = [f"oh no , your {r.split()[7]} ?" for r in references]
    for seed in range(3):
        _fake_arm(tmp_path, "se-ed", seed, bad, references)
        _fake_arm(tmp_path, "se-ed-rerun", 100 + seed, bad if rerun == "same" else references, references)
    table = claims_lib.evaluate_claims(tmp_path, only=[0], n_resamples=200)
    control = table["control"]
    assert table["claims"] == [] and table["family"]["size"] == 0       # no claim row, no Holm family
    assert control["verdict"] == expected and control["adjusted"] is False
    comparison = control["parts"][0]["comparison"]
    assert (comparison["seeds_a"], comparison["seeds_b"]) == ([0, 1, 2], [100, 101, 102])
    assert all(m["p_holm"] == m["p_value"] for m in comparison["metrics"])
    # the control's pair is no test of the claims' Holm family, which has every claim pair and nothing else
    whole = claims_lib.evaluate_claims(tmp_path, n_resamples=50)
    assert whole["family"]["size"] == 3 * sum(len(row["parts"]) for row in whole["claims"])
    assert whole["control"]["verdict"] == expected and all(row["verdict"] == "not run" for row in whole["claims"])
    assert "| 7 | SE Table 2 / Fig. 8 |" in claims_lib.render(whole)   # the sweep's row without a plan: not run
    text = claims_lib.render(table)
    assert "The A-vs-A control" in text and "| se-ed → se-ed-rerun | 0,1,2 / 100,101,102, 30 |" in text
    assert "B-1 Δ [95 % CI] p; seed sd A/B" in text


def test_claim_numbers_that_are_not_claims_get_one_line(tmp_path):
    out = empathy(tmp_path, "claims", "--only", "1,x", "--table-only", "--results", str(tmp_path))
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == ["error: --only: '1,x' is not a list of claim numbers (0-9, e.g. 1,3)"]
    out = empathy(tmp_path, "claims", "--only", "3,12", "--table-only", "--results", str(tmp_path))
    assert out.stderr.strip().splitlines() == ["error: --only: no claim 12 (the claims are 1-9; 0 is the A-vs-A control)"]
