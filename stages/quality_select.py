"""Similarity-based quality selection: keep a generated response r_G if S > T (Synth-Empathy §3.2)."""

from empathy_pipeline.analysis.plots import plot_similarity_histogram
from empathy_pipeline.core import params, stage
from empathy_pipeline.core.io import read_parquet, write_json, write_parquet
from empathy_pipeline.core.stage import In, Out
from empathy_pipeline.synth_empathy.selection import quality_table, selection_metrics


def main(generated: In, scores: In, out: Out, metrics: Out, histogram: Out) -> None:
    threshold = params.load("quality").threshold
    generated_table, scores_table = read_parquet(generated), read_parquet(scores)
    kept = quality_table(generated_table, scores_table, threshold)
    similarity = scores_table["similarity"].to_numpy()
    summary = selection_metrics(generated_table.height, similarity, kept.height, threshold)
    write_parquet(kept, out)
    write_json(metrics, summary)
    plot_similarity_histogram(similarity, threshold, histogram)
    print(f"quality_select: {kept.height} of {scores_table.height} scored samples have S > {threshold} "
          f"({100 * summary['kept_fraction']:.1f}%) -> {out}")


if __name__ == "__main__":
    stage.run(main)
