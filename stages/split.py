"""Split the rated pool at threshold T into sensibility, rationality and discard sets, plus `all` (every rated sample) (Efficient-Empathy Eq. 1–3)."""

from empathy_pipeline.analysis.plots import plot_split_histogram
from empathy_pipeline.core import params, stage
from empathy_pipeline.core.io import atomic_path, read_parquet, write_json
from empathy_pipeline.core.stage import In, Out
from empathy_pipeline.efficient_empathy.split import split_samples


def main(pool: In, ratings: In, out_dir: Out, metrics: Out, histogram: Out) -> None:
    threshold = params.load("split").threshold
    tables, labelled, summary = split_samples(read_parquet(pool, nonempty=True), read_parquet(ratings), threshold)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for name, table in tables.items():
            table.write_parquet(tmp / f"{name}.parquet")
    write_json(metrics, summary)
    plot_split_histogram(labelled, threshold, histogram)
    for name in ("sensibility", "rationality"):
        if summary[name] == 0:
            print(f"split: warning: the {name} set is empty at threshold {threshold}; "
                  f"its expert has no training data (see {histogram})")
    print("split: " + ", ".join(f"{name} {table.height}" for name, table in tables.items())
          + f", missing {summary['missing']}"
          + f" at T={threshold} -> {out_dir}/")


if __name__ == "__main__":
    stage.run(main)
