"""Same params, same seed, two CPU runs: the cheap stages write byte-identical files.

The stages that need no chat model (environment, prepare, rate with the demo's imported ratings,
split, and embed → quality_select → diversity_select with the real MiniLM) run as dvc runs them, each
in its own process, in two scratch projects built from the committed sample data. Every file they
write — parquet tables, the embeddings .npy, metrics JSON and the PNG plots — must be identical
byte for byte, and the metrics equal as JSON. (The LLM stages are deterministic up to hardware;
docs/architecture.md, "Determinism", says which and why; tests/stages/test_resume.py checks a resumed
run against an uninterrupted one.)
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import yaml
from dvc_spec import ROOT, stage_argv

# The demo DAG's order; generate and discriminate (LLM stages) are replaced by a fixed table below.
STAGES_RUN = ("environment", "prepare", "rate", "split", "embed", "quality_select", "diversity_select")
SYNTHETIC_ROWS = 40  # generated samples fed to embed: enough for a selection, cheap to encode


def synthetic_replies(train: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Stand-ins for generate's and discriminate's outputs, made from the prepared train split: the
    discriminator agrees on every other sample and answers another sample's context elsewhere."""
    generated = train.head(SYNTHETIC_ROWS).select("sample_id", "context", "response", "emotion")
    others = generated["response"].shift(1, fill_value=generated["response"][-1])
    disc = [r if i % 2 == 0 else o for i, (r, o) in enumerate(zip(generated["response"], others))]
    return generated, pl.DataFrame({"sample_id": generated["sample_id"], "disc_response": disc})


def run_cheap_dag(root: Path, hash_seed: str) -> dict[str, float]:
    """The cheap stages in a fresh scratch project; {stage: seconds}."""
    root.mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["quality"]["threshold"] = 20  # keeps some of the synthetic replies and drops others
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "data").mkdir()
    (root / "data/sample").symlink_to(ROOT / "data/sample")
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}  # the two runs hash strings differently
    times = {}
    for name in STAGES_RUN:
        if name == "embed":
            generated, discriminated = synthetic_replies(pl.read_parquet(root / "data/prepared/train.parquet"))
            (root / "data/synth").mkdir(parents=True)
            generated.write_parquet(root / "data/synth/generated.parquet")
            discriminated.write_parquet(root / "data/synth/discriminated.parquet")
        started = time.monotonic()
        done = subprocess.run(stage_argv(name), cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (name, done.stderr)
        times[name] = time.monotonic() - started
    return times


# What the test wrote itself, and the wall-time log (logs/ is not an output: it holds seconds).
NOT_WRITTEN_BY_STAGES = {"params.yaml", "data/synth/generated.parquet", "data/synth/discriminated.parquet"}


def written(root: Path) -> dict[str, bytes]:
    """Every file the stages wrote (outs, metrics and plots), by path relative to the project."""
    files = {}
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root)
        if rel.parts[0] != "logs" and rel.parts[:2] != ("data", "sample") and str(rel) not in NOT_WRITTEN_BY_STAGES:
            files[str(rel)] = file.read_bytes()
    return files


def test_two_cpu_runs_of_the_cheap_stages_are_byte_identical(tmp_path):
    with ThreadPoolExecutor(2) as pool:  # two independent projects: run them side by side
        times = list(pool.map(run_cheap_dag, (tmp_path / "a", tmp_path / "b"), ("0", "1")))
    assert set(times[0]) == set(STAGES_RUN)
    a, b = written(tmp_path / "a"), written(tmp_path / "b")
    expected = {"data/prepared/train.parquet", "data/prepared/test.parquet", "data/ratings/ratings.parquet",
                "data/split/sensibility.parquet", "data/synth/scores.parquet", "data/synth/sample_embeddings.npy",
                "data/selection/quality.parquet", "data/selection/diverse.parquet", "metrics/provenance.json",
                "metrics/prepare.json", "metrics/rate.json", "metrics/split.json", "metrics/selection.json",
                "metrics/diversity.json", "plots/similarity_histogram.png", "plots/split_histogram.png"}
    assert expected <= set(a), sorted(expected - set(a))
    assert all(p.startswith(("data/", "metrics/", "plots/")) for p in a), sorted(a)
    assert set(a) == set(b)
    differ = sorted(path for path in a if a[path] != b[path])
    assert not differ, f"not byte-identical across two runs: {differ}"
    for path in (p for p in a if p.startswith("metrics/")):
        assert json.loads(a[path]) == json.loads(b[path]), path
    # the selection really selected: some replies kept, some dropped, a strict subset picked for diversity
    selection = json.loads(a["metrics/selection.json"])
    kept = pl.read_parquet(tmp_path / "a/data/selection/quality.parquet").height
    assert 0 < kept < selection["n_generated"]
    assert 0 < pl.read_parquet(tmp_path / "a/data/selection/diverse.parquet").height < kept
