"""Split the rated ED train set at threshold T into sensibility, rationality and discard sets (Efficient-Empathy Eq. 1–3)."""

from pathlib import Path

from empathy_pipeline import params, stage
from empathy_pipeline.errors import PipelineError
from empathy_pipeline.io import atomic_path, read_parquet, write_json
from empathy_pipeline.plots import plot_split_histogram
from empathy_pipeline.rating import SUBSETS, split_by_threshold

TRAIN = Path("data/prepared/train.parquet")
RATINGS = Path("data/ratings/train.parquet")
SPLIT_DIR = Path("data/split")
METRICS = Path("metrics/split.json")
HISTOGRAM = Path("plots/split_histogram.png")


def main() -> None:
    threshold = params.section("split")["threshold"]
    if not isinstance(threshold, int | float) or isinstance(threshold, bool):
        raise PipelineError(f"params.yaml split.threshold: {threshold!r} is not a number")
    samples = read_parquet(TRAIN)
    ratings = read_parquet(RATINGS)
    unknown = ratings.join(samples, on="sample_id", how="anti")
    if unknown.height:
        raise PipelineError(f"{RATINGS}: {unknown.height} rating(s) for samples not in {TRAIN} "
                            f"(first: {unknown['sample_id'][0]}); rerun the rate stage")

    labelled, counts = split_by_threshold(ratings, threshold)
    tables = {name: samples.join(labelled.filter(labelled["subset"] == name).select("sample_id"),
                                 on="sample_id", how="semi", maintain_order="left")
              for name in SUBSETS}
    with atomic_path(SPLIT_DIR) as tmp:
        tmp.mkdir()
        for name, table in tables.items():
            table.write_parquet(tmp / f"{name}.parquet")

    rated = labelled.height - counts["missing"]
    metrics = {"threshold": threshold, "samples": samples.height, "rated": rated,
               "unrated": samples.height - ratings.height, **counts}
    for name in SUBSETS:
        metrics[f"{name}_pct"] = round(100 * counts[name] / rated, 2) if rated else 0.0
    write_json(METRICS, metrics)
    plot_split_histogram(labelled, threshold, HISTOGRAM)
    for name in ("sensibility", "rationality"):
        if counts[name] == 0:
            print(f"split: warning: the {name} set is empty at threshold {threshold}; "
                  f"its expert has no training data (see {HISTOGRAM})")
    print("split: " + ", ".join(f"{name} {counts[name]}" for name in (*SUBSETS, "missing"))
          + f" at T={threshold} -> {SPLIT_DIR}/")


if __name__ == "__main__":
    stage.run(main, "split")
