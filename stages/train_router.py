"""Train only the MoE routers on the entire training set, all other weights frozen (Efficient-Empathy §5.1.3)."""

import json

import polars as pl

from empathy_pipeline import params, stage
from empathy_pipeline.errors import PipelineError
from empathy_pipeline.io import read_parquet

MOE = "models/moe_merged"
OUT = "models/moe"
LOSS_CSV = "plots/loss/router.csv"
# "The entire training dataset": D_s ∪ D_r ∪ D_d, i.e. every rated sample the split assigned.
SPLIT_FILES = ["data/split/sensibility.parquet", "data/split/rationality.parquet", "data/split/discard.parquet"]
SFT_COLUMNS = ["sample_id", "context", "response"]


def main() -> None:
    run_params = params.section("train_router")
    train = params.section("train")
    unknown = sorted(set(run_params) - set(train) - {"max_samples"})
    if unknown:
        raise PipelineError(f"params.yaml train_router: unknown key(s) {', '.join(unknown)}")
    # The shared `train` settings, overridden by same-named keys of train_router (steps, learning rate).
    train_cfg = {**train, **{k: v for k, v in run_params.items() if k != "max_samples"}}

    samples = pl.concat([read_parquet(path).select(SFT_COLUMNS) for path in SPLIT_FILES])
    max_samples = run_params.get("max_samples")
    if max_samples is not None and samples.height > int(max_samples):
        samples = samples.sample(n=int(max_samples), seed=int(train_cfg["seed"]))
    if samples.height == 0:
        raise PipelineError(f"{', '.join(SPLIT_FILES)}: no training samples for the router")
    print(f"train_router: {samples.height} samples from data/split/")

    from empathy_pipeline.merge import train_router  # heavy (torch, transformers): after the checks

    report = train_router(MOE, samples, train_cfg, OUT, LOSS_CSV)
    print(json.dumps({"run": "router", **report}))


if __name__ == "__main__":
    stage.run(main, "train_router")
