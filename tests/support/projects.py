"""Small projects the tests build: the tiny pipeline params, a generate-stage project, git in a scratch repo."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import yaml

from empathy_pipeline.data.ed import SAMPLES_SCHEMA

# The DAG at the smallest size that still runs every stage (tests/stages/test_pipeline.py, the claims smoke).
TINY = {
    "prepare.max_conversations": {"train": 16, "valid": 2, "test": 4},
    "evaluate.max_samples": 6,
    "evaluate.max_new_tokens": 8,
    "evaluate.bertscore": False,
    "generate.num_seeds": 6,
    "generate.shard_size": 3,
    "train.max_steps": 1,
    "train.batch_size": 2,
    "train.max_length": 96,
    "quality.threshold": -100,
    "judge_quality.sample_size": 3,
    "rate.shard_size": 8,
    "train_router.max_steps": 1,
}


def set_params(path: Path, values: dict) -> None:
    params = yaml.safe_load(path.read_text())
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def git(work: Path, *args: str) -> str:
    result = subprocess.run(["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci", *args],
                            cwd=work, capture_output=True, text=True)
    assert result.returncode == 0, f"git {' '.join(args)} failed: {result.stderr}"
    return result.stdout


def wait_for_queue(queue_status: Callable[[], str], timeout: float = 900) -> str:
    """Poll `dvc queue status` (what `queue_status` returns) until nothing is queued or running; every
    experiment must have succeeded. The timeout is a hang guard, not a speed goal."""
    deadline = time.monotonic() + timeout
    while re.search(r"\b(Queued|Running)\b", status := queue_status()):
        assert time.monotonic() < deadline, f"queue still busy after {timeout}s:\n{status}"
        time.sleep(3)
    assert "Failed" not in status, status
    return status


def seed_samples(n: int) -> pl.DataFrame:
    rows = [
        {"sample_id": f"hit:{i}_conv:{i}:2", "conv_id": f"hit:{i}_conv:{i}", "split": "train", "emotion": emotion,
         "situation": situation, "context": [context], "response": response}
        for i, (emotion, situation, context, response) in enumerate([
            ("proud", "my son won his first chess game", "my son won his first chess tournament today !",
             "that is great ! you must be so proud of him ."),
            ("afraid", "i heard noises downstairs at night", "i heard someone walking downstairs last night .",
             "oh no , that sounds terrifying . was it anyone ?"),
            ("grateful", "my neighbour fixed my car", "my neighbour spent his whole saturday fixing my car .",
             "what a kind neighbour ! you are lucky to have him ."),
            ("lonely", "my friends all moved away", "all my friends moved to other cities this year .",
             "that must be hard . do you still talk to them ?"),
            ("excited", "concert tickets", "i just got tickets to see my favourite band !",
             "no way ! when is the concert ?"),
        ][:n])
    ]
    return pl.DataFrame(rows, schema=SAMPLES_SCHEMA)


def generate_project(root: Path, model_dir: Path, n_seeds: int) -> Path:
    """A minimal project dir for the generate stage: params, prepared train split, models/synth_base."""
    (root / "data" / "prepared").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "models" / "synth_base").symlink_to(model_dir)
    seed_samples(n_seeds).write_parquet(root / "data" / "prepared" / "train.parquet")
    params = {
        "generate": {"model": "base", "prompt_variant": 2, "num_seeds": n_seeds, "completions_per_seed": 1,
                     "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 40, "max_response_words": 30,
                     "shard_size": 1, "seed": 0},
        "llm": {"backend": "transformers", "batch_size": 4, "dtype": "float32", "device": "cpu"},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root
