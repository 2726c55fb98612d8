"""`empathy compare` and `empathy report --ci`: paired bootstrap and permutation test over test items.

Small synthetic prediction files (seeded), the real metric code, the real scipy procedures, the
CLI as a subprocess, and a scratch git + DVC repository for the report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from empathy_pipeline.analysis.compare import (
    CORPUS_KEYS,
    METRICS,
    CorpusStats,
    Paired,
    build_statistic,
    compare,
    pair,
    render,
)
from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.evaluation import metrics

BIN = Path(sys.executable).parent
EMPATHY = str(BIN / "empathy")
WORDS = ("i am so sorry to hear that . it is great you must be proud ! what happened ? oh no that sounds "
         "hard , my dog was sick and i felt bad about my job").split()


def sentence(rng: np.random.Generator, low: int = 2, high: int = 14) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(low, high))))


def synthetic(n: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    """(references, predictions of A, predictions of B): random sentences over one small vocabulary."""
    rng = np.random.default_rng(seed)
    refs = [sentence(rng) for _ in range(n)]
    return refs, [sentence(rng) for _ in range(n)], [sentence(rng) for _ in range(n)]


def paired(a: list[str], b: list[str], refs: list[str]) -> Paired:
    return Paired("A", "B", list(a), list(b), list(refs), "row")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run([EMPATHY, *args], cwd=cwd, capture_output=True, text=True, env=env)


# ---- the resampled corpus metrics are the metrics ---------------------------------------------


def test_corpus_stats_equal_the_metric_functions_on_resampled_multisets():
    refs, a, b = synthetic(40, seed=1)
    a[3] = ""                                     # an empty reply: no n-grams, BLEU's max(1, 0) denominator
    refs[5] = refs[6]                             # a repeated reference changes CIDEr's document frequency
    hyps, all_refs = a + b, refs + refs
    corpus = CorpusStats(hyps, all_refs)
    rng = np.random.default_rng(0)
    subsets = [np.arange(80), np.array([3, 3, 3, 7]), *(rng.integers(0, 80, size=int(rng.integers(2, 80)))
                                                        for _ in range(6))]
    for rows in subsets:
        h, r = [hyps[i] for i in rows], [all_refs[i] for i in rows]
        expected = {**metrics.bleu(h, r), **metrics.rouge(h, r), **metrics.distinct(h), **metrics.cider(h, r)}
        got = corpus.corpus(rows)
        assert set(got) == set(CORPUS_KEYS)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-9), (key, rows.tolist())
        rounded = metrics.score_predictions(h, r, bertscore=False)
        for key in CORPUS_KEYS:                   # score_predictions rounds to 2 decimals
            assert abs(rounded[key] - got[key]) <= 0.005 + 1e-9, key


# ---- the procedures -------------------------------------------------------------------------------


def test_a_model_against_itself_differs_by_zero_with_p_one():
    refs, a, _ = synthetic(30, seed=2)
    result = compare(paired(a, a, refs), CORPUS_KEYS, n_resamples=200, seed=0)
    for m in result["metrics"]:
        assert m["a"] == pytest.approx(m["b"], abs=1e-9)
        assert m["diff"] == pytest.approx(0.0, abs=1e-9), m
        assert m["ci_low"] <= 1e-9 and m["ci_high"] >= -1e-9, m
        assert m["p_value"] == 1.0, m


def test_the_interval_is_scipys_bootstrap_of_the_per_item_differences():
    """For a mean metric (ROUGE-1), our CI is scipy.stats.bootstrap on the per-item differences, exactly."""
    from rouge_score.rouge_scorer import RougeScorer

    refs, a, b = synthetic(25, seed=3)
    scorer = RougeScorer(["rouge1"], tokenizer=metrics.RougeTokenizer())
    f_a = np.array([scorer.score(target=r, prediction=p)["rouge1"].fmeasure for p, r in zip(a, refs)]) * 100.0
    f_b = np.array([scorer.score(target=r, prediction=p)["rouge1"].fmeasure for p, r in zip(b, refs)]) * 100.0
    for method in ("BCa", "percentile"):
        ours = compare(paired(a, b, refs), ("rouge1", "bleu1"), n_resamples=300, seed=7, method=method)
        direct = stats.bootstrap((f_b - f_a,), np.mean, vectorized=False, n_resamples=300, method=method,
                                 rng=np.random.default_rng(7))
        rouge1 = ours["metrics"][0]
        assert rouge1["diff"] == np.mean(f_b - f_a)
        assert (rouge1["ci_low"], rouge1["ci_high"]) == (direct.confidence_interval.low,
                                                          direct.confidence_interval.high)


def test_the_multi_metric_permutation_test_equals_scipys_per_metric_one():
    """permutation_test takes a scalar statistic; ours returns all metrics at once: same p-values."""
    refs, a, b = synthetic(20, seed=4)
    b[:6] = refs[:6]
    keys = ("bleu1", "rouge1", "dist2", "cider")
    result = compare(paired(a, b, refs), keys, n_resamples=150, seed=3)
    statistic = build_statistic(paired(a, b, refs), keys)
    rows = (np.arange(20), np.arange(20, 40))
    for i, m in enumerate(result["metrics"]):
        direct = stats.permutation_test(rows, lambda x, y, i=i: statistic(x, y)[i], permutation_type="samples",
                                        vectorized=False, n_resamples=150, rng=np.random.default_rng(3))
        assert m["p_value"] == direct.pvalue, m["metric"]


def test_copying_the_reference_for_half_the_items_is_a_significant_gain():
    refs, a, b = synthetic(60, seed=5)
    b = [r if i % 2 == 0 else p for i, (r, p) in enumerate(zip(refs, b))]
    result = compare(paired(a, b, refs), CORPUS_KEYS, n_resamples=500, seed=0)
    by = {m["metric"]: m for m in result["metrics"]}
    for key in ("bleu1", "bleu2", "bleu4", "rouge1", "rougeL", "cider"):
        assert by[key]["diff"] > 0 and by[key]["ci_low"] > 0, by[key]
        assert by[key]["p_value"] < 0.01, by[key]
    # the other direction is the same difference, negated, and also excludes 0
    reverse = {m["metric"]: m for m in compare(paired(b, a, refs), CORPUS_KEYS, n_resamples=500, seed=0)["metrics"]}
    assert reverse["cider"]["diff"] == pytest.approx(-by["cider"]["diff"], abs=1e-9)
    assert reverse["cider"]["ci_high"] < 0


def test_the_same_seed_gives_the_same_numbers_and_another_seed_others():
    refs, a, b = synthetic(20, seed=6)
    one = compare(paired(a, b, refs), ("bleu1", "cider"), n_resamples=100, seed=1)
    assert one == compare(paired(a, b, refs), ("bleu1", "cider"), n_resamples=100, seed=1)
    other = compare(paired(a, b, refs), ("bleu1", "cider"), n_resamples=100, seed=2)
    assert one["metrics"][1]["ci_low"] != other["metrics"][1]["ci_low"]


def test_bertscore_is_scored_once_per_item_and_averages_like_the_metric():
    refs, a, b = synthetic(6, seed=8)
    b[:3] = refs[:3]
    result = compare(paired(a, b, refs), ("bertscore_f1", "bertscore_p"), n_resamples=50, seed=0,
                     bertscore_options={"num_layers": 6})
    # one scorer load: the mean over A's and B's items together is the mean of the two sides' means
    expected = metrics.bertscore_prf(a + b, refs + refs, num_layers=6)
    for m in result["metrics"]:
        assert (m["a"] + m["b"]) / 2 == pytest.approx(expected[m["metric"]], abs=1e-4), m
    assert result["metrics"][0]["diff"] > 0


# ---- pairing ----------------------------------------------------------------------------------------


def test_pairing_by_sample_id_keeps_the_overlap_and_rejects_other_references():
    a = pl.DataFrame({"sample_id": ["x", "y", "z"], "prediction": ["p1", "p2", "p3"], "reference": ["r1", "r2", "r3"]})
    b = pl.DataFrame({"sample_id": ["z", "x", "w"], "prediction": ["q3", "q1", "q4"], "reference": ["r3", "r1", "r4"]})
    got = pair("a", a, "b", b)
    assert (got.a, got.b, got.references, got.only_a, got.only_b) == (["p1", "p3"], ["q1", "q3"], ["r1", "r3"], 1, 1)
    with pytest.raises(PipelineError, match="references differ for 1 shared sample_id"):
        pair("a", a, "b", b.with_columns(pl.when(pl.col("sample_id") == "x").then(pl.lit("other"))
                                         .otherwise(pl.col("reference")).alias("reference")))
    with pytest.raises(PipelineError, match="share no sample_id"):
        pair("a", a, "b", b.with_columns(pl.lit("q").add(pl.col("sample_id")).alias("sample_id")))


# ---- the CLI ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("compare")
    refs, a, b = synthetic(30, seed=9)
    b = [r if i % 2 == 0 else p for i, (r, p) in enumerate(zip(refs, b))]
    ids = [f"s{i}" for i in range(30)]
    (root / "outputs" / "predictions").mkdir(parents=True)
    pl.DataFrame({"sample_id": ids, "model": "a", "prediction": a, "reference": refs}).write_parquet(
        root / "outputs" / "predictions" / "model_a.parquet")
    pl.DataFrame({"sample_id": ids, "model": "b", "prediction": b, "reference": refs}).write_parquet(
        root / "outputs" / "predictions" / "model_b.parquet")
    pl.DataFrame({"prediction": a, "reference": refs}).write_ndjson(root / "a.jsonl")
    pl.DataFrame({"prediction": b, "reference": refs}).write_csv(root / "b.csv")
    pl.DataFrame({"prediction": b[:-1], "reference": refs[:-1]}).write_csv(root / "short.csv")
    pl.DataFrame({"prediction": b, "reference": refs[::-1]}).write_csv(root / "other_refs.csv")
    pl.DataFrame({"sample_id": [f"t{i}" for i in range(30)], "prediction": b, "reference": refs}).write_parquet(
        root / "disjoint.parquet")
    return root


def test_cli_compares_model_names_and_files_the_same_way(files):
    from empathy_pipeline.analysis.compare import compare_specs

    by_name = run("compare", "model_a", "model_b", "--no-bertscore", "--n-resamples", "200", "--json", cwd=files)
    assert by_name.returncode == 0, by_name.stderr
    named = json.loads(by_name.stdout)
    keys = [k for k in METRICS if not k.startswith("bertscore")]
    filed = compare_specs(str(files / "a.jsonl"), str(files / "b.csv"), files, keys=keys, n_resamples=200)
    assert (named["paired_by"], filed["paired_by"], named["n_items"]) == ("sample_id", "row", 30)
    assert [m["metric"] for m in named["metrics"]] == keys
    assert named["metrics"] == filed["metrics"]
    table = run("compare", "a.jsonl", "b.csv", "--metrics", "bleu1,cider", "--n-resamples", "200", cwd=files)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[2] == "| metric | A: a | B: b | B − A | 95 % CI | p |"
    assert [line.split(" | ")[0] for line in lines[4:]] == ["| B-1", "| CIDEr"]
    by = {m["metric"]: m for m in named["metrics"]}
    assert lines[4] == (f"| B-1 | {by['bleu1']['a']:.2f} | {by['bleu1']['b']:.2f} | {by['bleu1']['diff']:+.2f} | "
                        f"[{by['bleu1']['ci_low']:+.2f}, {by['bleu1']['ci_high']:+.2f}] | {by['bleu1']['p_value']:.3f} |")


@pytest.mark.parametrize(("args", "message"), [
    (("missing.parquet", "b.csv"), "missing.parquet: file not found"),
    (("model_a", "disjoint.parquet"), "share no sample_id: nothing to compare"),
    (("a.jsonl", "other_refs.csv"), "references differ at row 0"),
])
def test_cli_bad_inputs_fail_with_one_line(files, args, message):
    proc = run("compare", *args, "--no-bertscore", "--n-resamples", "20", cwd=files)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr


def test_other_bad_inputs_are_pipeline_errors(files):
    """The same one-line errors, without paying a subprocess start each (the CLI prints PipelineError)."""
    from empathy_pipeline.analysis.compare import compare_specs

    cases = [(("no_such_model", "model_b"), {}, "no_such_model: neither a predictions file nor an evaluated model"),
             (("a.jsonl", "short.csv"), {}, "only be paired row by row"),
             (("model_a", "model_b"), {"keys": ("bleu9",)}, "unknown metric(s) bleu9"),
             (("model_a", "model_b"), {"keys": ("bleu1",), "n_resamples": 0}, "n_resamples must be positive")]
    for (a, b), options, message in cases:
        with pytest.raises(PipelineError) as info:
            compare_specs(str(files / a) if "." in a else a, str(files / b) if "." in b else b,
                          files / "outputs" / "predictions", **options)
        assert message in str(info.value) and "\n" not in str(info.value)


# ---- empathy report --ci --------------------------------------------------------------------------

WRITER = """import json, pathlib
out = pathlib.Path("metrics")
out.mkdir(exist_ok=True)
for model, bleu in (("synth_base", 1.0), ("synth", 2.0), ("moe", 3.0)):
    (out / f"{model}.json").write_text(json.dumps({"bleu1": bleu, "n": 30}))
"""
PIPELINE = """stages:
  score:
    cmd: python writer.py
    deps: [writer.py]
    metrics:
      - metrics/synth_base.json: {cache: false}
      - metrics/synth.json: {cache: false}
      - metrics/moe.json: {cache: false}
"""


def _git(root: Path, *args: str) -> None:
    proc = subprocess.run(["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci", *args], cwd=root,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def report_repo(tmp_path_factory) -> Path:
    """A git + DVC project with three models' metrics; predictions for synth_base and synth only."""
    root = tmp_path_factory.mktemp("report-ci")
    _git(root, "init", "-q")
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=root, check=True)
    (root / "writer.py").write_text(WRITER)
    (root / "dvc.yaml").write_text(PIPELINE)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    subprocess.run([str(BIN / "dvc"), "repro", "-q"], cwd=root, check=True, env=env)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "metrics")
    refs, a, b = synthetic(30, seed=10)
    b = [r if i % 2 == 0 else p for i, (r, p) in enumerate(zip(refs, b))]
    out = root / "outputs" / "predictions"
    out.mkdir(parents=True)
    ids = [f"s{i}" for i in range(30)]
    for model, preds in (("synth_base", a), ("synth", b)):
        pl.DataFrame({"sample_id": ids, "model": model, "prediction": preds, "reference": refs}).write_parquet(
            out / f"{model}.parquet")
    return root


def test_report_ci_adds_intervals_for_workspace_rows_and_notes_the_rest(report_repo):
    proc = run("report", "--ci", "--rev", "HEAD", "--n-resamples", "200", "--format", "json", cwd=report_repo)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [(r["source"], r["model"]) for r in out["rows"]][:3] == [("workspace", "synth_base"),
                                                                    ("workspace", "synth"), ("workspace", "moe")]
    assert [(c["model"], c["baseline"]) for c in out["ci"]] == [("synth", "synth_base")]
    cider = out["ci"][0]["cider"]
    assert cider["ci_low"] > 0 and cider["diff"] > 0            # synth copies half the references
    direct = compare(pair("synth_base", pl.read_parquet(report_repo / "outputs/predictions/synth_base.parquet"),
                          "synth", pl.read_parquet(report_repo / "outputs/predictions/synth.parquet")),
                     ("bleu1", "rouge1", "cider"), n_resamples=200, seed=0)
    assert cider == {k: direct["metrics"][2][k] for k in ("diff", "ci_low", "ci_high", "p_value")}
    notes = "\n".join(out["notes"])
    assert "workspace/moe skipped" in notes and "moe.parquet not found" in notes
    assert "HEAD/synth skipped: predictions of revisions and experiments are not in the workspace" in notes


def test_report_ci_markdown_against_a_named_baseline(report_repo):
    proc = run("report", "--ci", "--baseline", "synth", "--model", "synth_base", "--model", "synth",
               "--n-resamples", "100", cwd=report_repo)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "Paired bootstrap against synth (row − baseline" in text
    row = next(line for line in text.splitlines() if line.startswith("| workspace | synth_base | 30 |"))
    assert row.count("[") == 3 and "| -" in row                   # synth_base is worse than synth
    bad = run("report", "--ci", "--baseline", "nope", cwd=report_repo)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == "error: --baseline nope: no such model among the rows (synth_base, synth, moe)"
    assert run("report", "--ci", "--format", "csv", cwd=report_repo).stderr.strip() == \
        "error: --ci needs --format md or json"


def test_markdown_render_of_a_result():
    refs, a, b = synthetic(10, seed=11)
    text = render(compare(paired(a, b, refs), ("bleu1",), n_resamples=50, seed=0))
    assert text.splitlines()[0].startswith("B − A on 10 paired test items (paired by row; 50 resamples, seed 0")


def test_comma_separated_sides_are_seeds_of_a_two_level_comparison(files):
    """`empathy compare A0,A1 B0,B1`: each side's tables are training seeds; the result carries the seeds,
    each side's seed spread and the length check, and renders with a seed-spread column."""
    from empathy_pipeline.analysis.compare import compare_specs

    a, b = str(files / "a.jsonl"), str(files / "b.csv")
    result = compare_specs(f"{a},{a},{a}", f"{b},{b},{b}", files, keys=("bleu1", "cider"), n_resamples=200)
    assert (result["seeds_a"], result["seeds_b"], result["n_items"]) == ([0, 1, 2], [0, 1, 2], 30)
    single = compare_specs(a, b, files, keys=("bleu1", "cider"), n_resamples=200)
    for two, one in zip(result["metrics"], single["metrics"], strict=True):
        assert two["diff"] == pytest.approx(one["diff"], abs=1e-9)        # identical seeds: the same Δ
        assert two["a_seed_std"] == pytest.approx(0.0, abs=1e-9) and two["b_seed_std"] == pytest.approx(0.0, abs=1e-9)
    assert set(result["length"]) == {"length", "bp", "reference"}
    lines = render(result).splitlines()
    assert "seeds 3 / 3" in lines[0] and lines[2].endswith("| seed sd A / B |")
    assert lines[4].startswith("| B-1 |") and lines[4].endswith("| 0.00 / 0.00 |")
