"""Typed params: every bad value is one line naming the key, the value and what is allowed."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc_spec import ROOT, stage_argv

from empathy_pipeline.core import params
from empathy_pipeline.core.errors import PipelineError

BIN = Path(sys.executable).parent
PROJECT = yaml.safe_load((ROOT / "params.yaml").read_text())

# (dotted key, bad value, what the line must say); None as key path part means "delete the key"
BAD = [
    ("quality.treshold", 60, "quality.treshold: unknown key (known keys: threshold)"),
    ("quality.threshold", "60", "quality.threshold: '60' is not allowed (Input should be a valid number)"),
    ("quality.threshold", 250, "quality.threshold: 250 is not allowed (Input should be less than or equal to 100)"),
    ("split.threshold", 11, "split.threshold: 11 is not allowed (Input should be less than or equal to 10)"),
    ("diversity.ratio", 1.5, "diversity.ratio: 1.5 is not allowed (Input should be less than or equal to 1)"),
    ("diversity.ratio", 0, "diversity.ratio: 0 is not allowed (Input should be greater than 0)"),
    ("diversity.k", 0, "diversity.k: 0 is not allowed (Input should be greater than 0)"),
    ("llm.backend", "vlm", "llm.backend: 'vlm' is not allowed (Input should be 'transformers', 'vllm' or 'openai')"),
    ("llm.batch_size", 0, "llm.batch_size: 0 is not allowed (Input should be greater than 0)"),
    ("embed.batch_size", -8, "embed.batch_size: -8 is not allowed (Input should be greater than 0)"),
    ("generate.num_seeds", 2.5, "generate.num_seeds: 2.5 is not allowed (a whole count >= 1 or a fraction in (0, 1])"),
    ("generate.seeds", 40, "generate.seeds: unknown key"),
    ("generate.prompt_variant", 3, "generate.prompt_variant: 3 is not allowed (Input should be 1 or 2)"),
    ("train.max_steps", 0, "train.max_steps: 0 is not allowed (0 trains nothing"),
    ("train.bf16", "yes", "train.bf16: 'yes' is not allowed (Input should be a valid boolean)"),
    ("train_router.learning_rate", -1e-3, "train_router.learning_rate: -0.001 is not allowed"),
    ("rate.import_file", "no/such/ratings.json", "rate.import_file: 'no/such/ratings.json' is not allowed (no such file"),
    ("prepare.source", "no/such/dir", "prepare.source: 'no/such/dir' is not allowed (no such directory"),
    ("prepare.max_conversations.tain", 3, "prepare.max_conversations.tain: unknown key (known keys: train, valid, test)"),
    ("lora.target_modules", [], "lora.target_modules: [] is not allowed"),
    ("evaluate.bertscore_batch_size", 0, "evaluate.bertscore_batch_size: 0 is not allowed"),
    ("qualty", {"threshold": 30}, "qualty: unknown section"),
]


def write(tmp_path: Path, dotted: str, value) -> Path:
    data = copy.deepcopy(PROJECT)
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[leaf] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("dotted, value, expected", BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_each_bad_value_is_one_line_naming_the_key(tmp_path, monkeypatch, dotted, value, expected):
    monkeypatch.chdir(ROOT)  # relative paths (prepare.source, rate.import_file) resolve in the project
    path = write(tmp_path, dotted, value)
    problems = params.check(path)
    assert len(problems) == 1, problems
    assert problems[0] == f"{path} {expected}" or problems[0].startswith(f"{path} {expected}"), problems[0]


def test_project_params_are_valid(monkeypatch):
    """(Each paper profile applied to params.yaml passes too: tests/core/test_profiles.py.)"""
    monkeypatch.chdir(ROOT)
    assert params.check(ROOT / "params.yaml") == []


def test_missing_section_and_section_of_wrong_shape(tmp_path):
    data = copy.deepcopy(PROJECT)
    del data["embed"]
    data["split"] = 5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    problems = params.check(tmp_path / "params.yaml")
    assert any(p.endswith("embed: section missing") for p in problems)
    assert any(p.endswith("split: expected a section of keys, got 5") for p in problems)


def test_load_returns_typed_values_and_fails_before_work(tmp_path):
    path = write(tmp_path, "quality.threshold", 42)
    assert params.load("quality", path).threshold == 42.0
    with pytest.raises(PipelineError, match=r"quality\.threshold: '42' is not allowed"):
        params.load("quality", write(tmp_path, "quality.threshold", "42"))


def test_train_run_overrides_the_shared_train_section():
    train = params.Train(max_steps=8, learning_rate=2e-4)
    run = params.TrainRun(max_steps=3, learning_rate=1e-3, max_samples=10)
    config = run.config(train)
    assert config["max_steps"] == 3 and config["learning_rate"] == 1e-3 and config["batch_size"] == 8
    assert "max_samples" not in config


def test_empathy_check_reports_every_problem_and_passes_the_project(tmp_path):
    data = copy.deepcopy(PROJECT)
    data["quality"] = {"treshold": 60}
    data["llm"]["backend"] = "vlm"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    bad = subprocess.run([str(BIN / "empathy"), "check", "--params-file", str(tmp_path / "params.yaml")],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert [line.split(": ")[0].split(" ")[-1] for line in lines] == ["llm.backend", "quality.treshold"]
    assert lines[1].endswith("quality.treshold: unknown key (did you mean quality.threshold?)")
    good = subprocess.run([str(BIN / "empathy"), "check"], cwd=ROOT, capture_output=True, text=True)
    assert good.returncode == 0 and "every section is valid" in good.stdout


def test_a_stage_with_a_typo_fails_in_one_line_before_reading_anything(tmp_path):
    data = copy.deepcopy(PROJECT)
    data["quality"] = {"treshold": 60}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    proc = subprocess.run(stage_argv("quality_select"), cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: quality_select: params.yaml quality.treshold: unknown key (did you mean quality.threshold?)"]
