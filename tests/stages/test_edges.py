"""Bad input at the edges, through the real CLI and stage scripts: each a clear line or a counted note.

Every case runs a subprocess as a user (or dvc) would and checks the exit code, that stderr holds
exactly one `error:` line naming the file or key, and that no traceback leaked out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from chatserver import ChatServer
from dvc_spec import ROOT, STAGES, command, stage_argv
from stagerun import untrained_epitome

from empathy_pipeline.data import ed

SAMPLE = ROOT / "data" / "sample" / "empatheticdialogues"
EMPATHY = str(Path(sys.executable).parent / "empathy")


def one_error_line(done: subprocess.CompletedProcess, code: int = 1) -> str:
    """The single `error:` line of a failed run (progress bars aside), after the common checks."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], done.stderr
    return errors[0]


def project(tmp_path: Path, **sections: dict) -> Path:
    """A scratch project: the repository's params.yaml with `sections` merged in, and the sample data."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name, values in sections.items():
        params[name].update(values)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "data").mkdir(exist_ok=True)
    if not (tmp_path / "data/sample").exists():
        (tmp_path / "data/sample").symlink_to(ROOT / "data/sample")
    return tmp_path


def stage(name: str, cwd: Path, env: dict | None = None, **overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(stage_argv(name, **overrides), cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def sample_rows(split: str, n: int | None = None) -> pl.DataFrame:
    rows, _ = ed.read_ed_csv(SAMPLE / f"{split}.csv", split, normalize=ed.paper_normalize)
    return rows if n is None else rows.head(n)



# ---- a split with a header and no rows -----------------------------------------------------------

@pytest.mark.parametrize("fmt", ["ed_csv", "paper_json"])
def test_prepare_on_a_header_only_split_names_the_file(tmp_path, fmt):
    src = tmp_path / "source"
    src.mkdir()
    if fmt == "ed_csv":
        header = (SAMPLE / "test.csv").read_text().splitlines()[0]
        (src / "test.csv").write_text(header + "\n")
        empty = src / "test.csv"
    else:
        empty = src / ed.PAPER_JSON_FILES["test"]
        empty.write_text("[]\n")
    project(tmp_path, prepare={"source": str(src), "format": fmt, "splits": ["test"]})
    line = one_error_line(stage("prepare", tmp_path, source=str(src)))
    assert line.startswith(f"error: prepare: {empty}: no samples (0 rows, 0 bad); an empty split cannot be prepared")
    assert not (tmp_path / "data/prepared/test.parquet").exists()


@pytest.mark.parametrize("name, option", [("rate", "pool"), ("split", "pool"), ("evaluate@synth_base", "test")])
def test_a_parquet_with_no_rows_fed_to_a_stage_names_the_file(tmp_path, name, option):
    project(tmp_path, rate={"import_file": None})
    _, options = command(STAGES[name])
    empty = tmp_path / options[option][0]
    empty.parent.mkdir(parents=True, exist_ok=True)
    sample_rows("train").head(0).write_parquet(empty)  # the samples' columns, no rows
    for model in ("synth_base", "efficient_base"):  # never loaded: the stage stops before
        (tmp_path / "models" / model).mkdir(parents=True, exist_ok=True)
    line = one_error_line(stage(name, tmp_path))
    assert line == (f"error: {name.split('@')[0]}: {options[option][0]}: no rows (a header only); "
                    "rerun the stage that writes it or check its input")


def test_an_unreadable_parquet_fed_to_a_stage_names_the_file(tmp_path):
    project(tmp_path)
    _, options = command(STAGES["split"])
    (tmp_path / "data/prepared").mkdir(parents=True)
    (tmp_path / options["pool"][0]).write_bytes(b"PAR1 this is not a parquet file")
    line = one_error_line(stage("split", tmp_path))
    assert line.startswith(f"error: split: {options['pool'][0]}: cannot read (")


# ---- a params value of the wrong type ------------------------------------------------------------

def test_a_params_value_of_the_wrong_type_is_one_line(tmp_path):
    project(tmp_path, quality={"threshold": "high"})
    checked = subprocess.run([EMPATHY, "check", "--params-file", "params.yaml"], cwd=tmp_path,
                             capture_output=True, text=True)
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert checked.stderr.strip().splitlines() == [
        "params.yaml quality.threshold: 'high' is not allowed (Input should be a valid number)"], checked.stderr
    # ... and the stage that reads it stops on the same line before touching its inputs
    line = one_error_line(stage("quality_select", tmp_path))
    assert line == "error: quality_select: params.yaml quality.threshold: 'high' is not allowed " \
                   "(Input should be a valid number)"


# ---- an empty selection --------------------------------------------------------------------------

def test_a_threshold_above_every_score_is_one_line_and_writes_nothing(tmp_path):
    project(tmp_path, quality={"threshold": 90})
    _, options = command(STAGES["quality_select"])
    generated = sample_rows("train", 5)
    (tmp_path / "data/synth").mkdir(parents=True)
    generated.write_parquet(tmp_path / options["generated"][0])
    pl.DataFrame({"sample_id": generated["sample_id"], "disc_response": generated["response"],
                  "similarity": [10.0, 55.5, 20.0, 89.25, 30.0]}).write_parquet(tmp_path / options["scores"][0])
    line = one_error_line(stage("quality_select", tmp_path))
    assert line == ("error: quality_select: quality selection kept nothing: highest similarity S = 89.25 is not "
                    "above quality.threshold T = 90.0 (lower T)")
    assert not (tmp_path / options["out"][0]).exists() and not (tmp_path / options["metrics"][0]).exists()


# ---- a test split smaller than evaluate.max_samples ----------------------------------------------

def test_a_test_split_smaller_than_max_samples_is_scored_whole_with_a_note(tmp_path):
    project(tmp_path, evaluate={"max_samples": 100, "shard_size": 2, "max_new_tokens": 8, "bertscore": False},
            llm={"backend": "openai", "base_url_env": "EDGES_LLM_URL", "api_key_env": "EDGES_LLM_KEY"})
    _, options = command(STAGES["evaluate@synth_base"])
    (tmp_path / "data/prepared").mkdir(parents=True)
    sample_rows("test", 4).write_parquet(tmp_path / options["test"][0])
    (tmp_path / "models/synth_base").mkdir(parents=True)
    untrained_epitome(tmp_path / "models/epitome")
    with ChatServer() as server:
        done = stage("evaluate@synth_base", tmp_path, env={"EDGES_LLM_URL": server.url})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert (f"evaluate synth_base: {options['test'][0]} has 4 samples, fewer than evaluate.max_samples (100); "
            "scoring all 4") in done.stdout
    assert json.loads((tmp_path / options["metrics"][0]).read_text())["n"] == 4
    assert pl.read_parquet(tmp_path / options["predictions"][0]).height == 4 == len(server.requests)


# ---- an empty or unreadable predictions file for `empathy score` ---------------------------------

def _write(path: Path, kind: str) -> None:
    header_only = pl.DataFrame(schema={"prediction": pl.String, "reference": pl.String})
    if kind == "empty":
        path.write_text("")
    elif kind == "header_only":
        header_only.write_parquet(path) if path.suffix == ".parquet" else path.write_text("prediction,reference\n")
    elif kind == "garbage":
        path.write_bytes(b"PAR1\x00\x01 not a table" if path.suffix == ".parquet" else bytes(range(256)))
    elif kind == "directory":
        path.mkdir()
    elif kind == "no_reference":
        pl.DataFrame({"prediction": ["i am sorry ."]}).write_parquet(path)


@pytest.mark.parametrize("file, kind, message", [
    ("p.jsonl", "empty", "no predictions to score"),
    ("p.parquet", "header_only", "no predictions to score"),
    ("p.csv", "header_only", "no predictions to score"),
    ("p.parquet", "garbage", "cannot read ("),
    ("p.csv", "garbage", "cannot read ("),
    ("p.parquet", "directory", "not a file"),
    ("p.parquet", "missing", "file not found"),
    ("p.parquet", "no_reference", "missing column(s) reference"),
])
def test_score_on_an_empty_or_unreadable_predictions_file_is_one_line(tmp_path, file, kind, message):
    path = tmp_path / file
    _write(path, kind)
    done = subprocess.run([EMPATHY, "score", str(path), "--no-bertscore"], capture_output=True, text=True)
    assert one_error_line(done).startswith(f"error: {path}: {message}")
