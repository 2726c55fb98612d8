"""LoRA supervised fine-tuning of the base model: the discriminator (SFT on ED), the final
Synth-Empathy model (ED train + selected synthetic data) and the two Efficient-Empathy experts.

Usage: python stages/train.py {discriminator|synth|expert_sensibility|expert_rationality}
Multi-GPU / DeepSpeed: accelerate launch --config_file configs/accelerate/<x>.yaml stages/train.py <run>
"""

import json
import sys

import polars as pl

from empathy_pipeline import params, stage
from empathy_pipeline.errors import PipelineError
from empathy_pipeline.io import read_parquet

ED_TRAIN = "data/prepared/train.parquet"
SFT_COLUMNS = ["sample_id", "context", "response"]
# run name -> (params section, training data files)
RUNS = {
    "discriminator": ("train_discriminator", [ED_TRAIN]),
    "synth": ("train_synth", [ED_TRAIN, "data/selection/diverse.parquet"]),
    "expert_sensibility": ("train_expert", ["data/split/sensibility.parquet"]),
    "expert_rationality": ("train_expert", ["data/split/rationality.parquet"]),
}


def training_config(train: dict, run_section: str, run_params: dict) -> dict:
    """The shared `train` settings, overridden by any same-named key of the run's own section."""
    unknown = sorted(set(run_params) - set(train) - {"max_samples"})
    if unknown:
        raise PipelineError(f"params.yaml {run_section}: unknown key(s) {', '.join(unknown)}")
    return {**train, **{k: v for k, v in run_params.items() if k != "max_samples"}}


def load_samples(paths: list[str], max_samples: int | None, seed: int) -> pl.DataFrame:
    tables = []
    for path in paths:
        table = read_parquet(path)
        missing = [c for c in SFT_COLUMNS if c not in table.columns]
        if missing:
            raise PipelineError(f"{path}: missing column(s) {', '.join(missing)}")
        tables.append(table.select(SFT_COLUMNS))  # synthetic tables carry extra provenance columns
    samples = pl.concat(tables, how="vertical_relaxed")
    if max_samples is not None and samples.height > int(max_samples):
        samples = samples.sample(n=int(max_samples), seed=seed)
    return samples


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in RUNS:
        got = " ".join(sys.argv[1:]) or "nothing"
        raise PipelineError(f"expected one run name ({', '.join(RUNS)}), got {got}")
    name = sys.argv[1]
    section, paths = RUNS[name]
    run_params = params.section(section)
    train_cfg = training_config(params.section("train"), section, run_params)
    samples = load_samples(paths, run_params.get("max_samples"), int(train_cfg["seed"]))
    if samples.height == 0:
        raise PipelineError(f"{' + '.join(paths)}: no training samples for run '{name}'")
    print(f"{name}: {samples.height} samples from {', '.join(paths)}")

    from empathy_pipeline.training import train_lora  # heavy (torch, transformers): after the checks

    report = train_lora("models/base", samples, params.section("lora"), train_cfg,
                        f"models/{name}", f"plots/loss/{name}.csv")
    print(json.dumps({"run": name, **report}))


if __name__ == "__main__":
    stage.run(main, "train")
