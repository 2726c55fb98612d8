"""Similarity-based quality selection: keep a generated response r_G if S > T (Synth-Empathy §3.2)."""

from pathlib import Path

from empathy_pipeline import params, stage
from empathy_pipeline.io import read_parquet, write_json, write_parquet
from empathy_pipeline.plots import plot_similarity_histogram
from empathy_pipeline.selection import quality_table, selection_metrics

GENERATED = Path("data/synth/generated.parquet")
SCORES = Path("data/synth/scores.parquet")
QUALITY = Path("data/selection/quality.parquet")
METRICS = Path("metrics/selection.json")
HISTOGRAM = Path("plots/similarity_histogram.png")


def main() -> None:
    threshold = params.section("quality")["threshold"]
    generated, scores = read_parquet(GENERATED), read_parquet(SCORES)
    kept = quality_table(generated, scores, threshold)
    similarity = scores["similarity"].to_numpy()
    metrics = selection_metrics(generated.height, similarity, kept.height, threshold)
    write_parquet(kept, QUALITY)
    write_json(METRICS, metrics)
    plot_similarity_histogram(similarity, threshold, HISTOGRAM)
    print(f"quality_select: {kept.height} of {scores.height} scored samples have S > {threshold} "
          f"({100 * metrics['kept_fraction']:.1f}%) -> {QUALITY}")


if __name__ == "__main__":
    stage.run(main, "quality_select")
