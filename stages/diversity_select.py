"""Diversity selection: K-Center-Greedy picks k quality-selected samples that cover the rest as tightly as
possible (max over points of the distance to the nearest pick is minimised greedily, Synth-Empathy §3.3).
`diversity.method: random` picks a seeded subset of the same size instead (the Table 4 ablation)."""

import numpy as np

from empathy_pipeline.core import params, stage
from empathy_pipeline.core.io import read_parquet, write_json, write_parquet
from empathy_pipeline.core.stage import In, Out
from empathy_pipeline.synth_empathy.kcenter import diverse_subset


def main(quality: In, scores: In, sample_embeddings: In, out: Out, metrics: Out) -> None:
    p = params.load("diversity")
    diverse, summary = diverse_subset(read_parquet(quality), read_parquet(scores),
                                      np.load(sample_embeddings, mmap_mode="r"),
                                      k=p.k, ratio=p.ratio, seed=p.seed, device=p.device, method=p.method)
    write_parquet(diverse, out)
    write_json(metrics, summary)
    if p.method == "random":
        print(f"diversity_select: {summary['k']} of {summary['n_in']} samples picked at random (seed {p.seed}) -> {out}")
    else:
        print(f"diversity_select: {summary['k']} of {summary['n_in']} samples picked; coverage radius "
              f"{summary['coverage_radius_max']:.4f} (1 centre) -> {summary['coverage_radius_min']:.4f} -> {out}")


if __name__ == "__main__":
    stage.run(main)
