"""Every long LLM stage resumes after a kill with byte-identical outputs, on the embedded SmolLM2.

Each stage script runs in-process with the command line dvc.yaml gives it, in a scratch project.
Its model calls go to the real transformers backend; the killed run's backend raises after the
first shard file is written (a crash between two shards), the rerun gets the plain backend and
must ask for less than a whole run and write exactly the whole run's files. (generate is killed
for real with SIGKILL in tests/synth_empathy/test_generation.py.)
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml
from dvc_spec import ROOT, STAGES, command
from killing import Counting, KillAfterShards, Killed
from stagerun import run_stage, untrained_epitome

from empathy_pipeline.data import ed
from empathy_pipeline.llm.backends import load_backend

SAMPLE = ROOT / "data" / "sample" / "empatheticdialogues"
SMALL = {
    "llm": {"batch_size": 4, "dtype": "float32", "device": "cpu"},
    # Sampled, not greedy: a resumed shard must draw exactly what it would have drawn uninterrupted.
    "discriminate": {"max_new_tokens": 6, "shard_size": 2, "temperature": 0.8, "top_p": 0.95},
    "evaluate": {"max_samples": 5, "max_new_tokens": 6, "shard_size": 2, "bertscore": False},
    "judge_quality": {"sample_size": 3, "max_new_tokens": 3, "shard_size": 2},
    "rate": {"max_samples": 5, "max_new_tokens": 8, "shard_size": 2, "import_file": None, "retries": 0},
}
# stage -> the option naming its shard directory, and the outputs compared byte for byte
CASES = {
    "discriminate": ("shards", ["out"]),
    "evaluate@synth_base": ("shards", ["predictions", "metrics"]),
    "judge_quality": ("shards", ["metrics"]),
    "rate": ("shards", ["out", "metrics"]),
}


@pytest.fixture(scope="module")
def backends(base_model_dir, tmp_path_factory):
    """Real backends by (model, adapter), loaded once for all stages; an untrained LoRA adapter for discriminate."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path_factory.mktemp("adapter") / "discriminator"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_model_dir),
                           LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(adapter)
    cache: dict = {}

    def get(model_path: str, adapter_path: str | None):
        key = (Path(model_path).resolve(), adapter_path and Path(adapter_path).name)
        if key not in cache:
            cache[key] = load_backend({"backend": "transformers", "batch_size": 4, "dtype": "float32",
                                       "device": "cpu", "show_progress": False},
                                      model=model_path, adapter=adapter_path)
        return cache[key]

    return get, adapter


def make_project(root: Path, base_model_dir: Path, adapter: Path) -> Path:
    root.mkdir(parents=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in SMALL.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "models").mkdir()
    (root / "models" / "synth_base").symlink_to(base_model_dir)
    (root / "models" / "efficient_base").symlink_to(base_model_dir)
    (root / "models" / "discriminator").symlink_to(adapter)
    untrained_epitome(root / "models" / "epitome")
    samples, _ = ed.read_ed_csv(SAMPLE / "train.csv", "train", max_conversations=4, normalize=ed.paper_normalize)
    test, _ = ed.read_ed_csv(SAMPLE / "test.csv", "test", max_conversations=4, normalize=ed.paper_normalize)
    for path, table in {"data/prepared/train.parquet": samples, "data/prepared/test.parquet": test,
                        "data/synth/generated.parquet": samples.head(5),
                        "data/selection/diverse.parquet": samples.head(3)}.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        table.write_parquet(root / path)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_killed_stage_resumes_to_identical_outputs(name, tmp_path, base_model_dir, backends):
    get, adapter = backends
    shard_option, compared = CASES[name]
    _, options = command(STAGES[name])

    whole = make_project(tmp_path / "whole", base_model_dir, adapter)
    counted_whole: list[Counting] = []

    def counting(model, adapter_path):
        counted_whole.append(Counting(get(model, adapter_path)))
        return counted_whole[-1]

    run_stage(name, whole, counting)

    killed = make_project(tmp_path / "killed", base_model_dir, adapter)
    shard_dir = killed / options[shard_option][0]
    with pytest.raises(Killed):
        run_stage(name, killed, lambda model, adapter_path: KillAfterShards(get(model, adapter_path), shard_dir))
    for out in compared:
        assert not (killed / options[out][0]).exists(), f"{name}: {options[out][0]} written by the killed run"
    assert list(shard_dir.rglob("shard-*.parquet")), f"{name}: the kill should land after a finished shard"

    counted_resume: list[Counting] = []

    def resuming(model, adapter_path):
        counted_resume.append(Counting(get(model, adapter_path)))
        return counted_resume[-1]

    run_stage(name, killed, resuming)
    calls_whole = sum(c.calls for c in counted_whole)
    calls_resumed = sum(c.calls for c in counted_resume)
    assert 0 < calls_resumed < calls_whole, (name, calls_resumed, calls_whole)
    for out in compared:
        rel = options[out][0]
        assert (killed / rel).read_bytes() == (whole / rel).read_bytes(), f"{name}: {rel} differs after resume"
    if "predictions" in options:
        assert pl.read_parquet(whole / options["predictions"][0]).height == SMALL["evaluate"]["max_samples"]
