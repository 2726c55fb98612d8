"""Diversity selection: K-Center-Greedy picks k quality-selected samples that cover the rest as tightly as
possible (max over points of the distance to the nearest pick is minimised greedily, Synth-Empathy §3.3)."""

import time
from pathlib import Path

import numpy as np
import polars as pl

from empathy_pipeline import params, stage
from empathy_pipeline.io import read_parquet, write_json, write_parquet
from empathy_pipeline.selection import diversity_k, embedding_rows, k_center_greedy, resolve_device

QUALITY = Path("data/selection/quality.parquet")
SCORES = Path("data/synth/scores.parquet")
EMBEDDINGS = Path("data/synth/sample_embeddings.npy")
DIVERSE = Path("data/selection/diverse.parquet")
METRICS = Path("metrics/diversity.json")


def main() -> None:
    p = params.section("diversity")
    quality = read_parquet(QUALITY)
    embeddings = np.load(EMBEDDINGS, mmap_mode="r")
    rows = embedding_rows(quality, read_parquet(SCORES), embeddings.shape[0])
    # Everything kept, in order: run on the memory map itself instead of a copy.
    vectors = embeddings if np.array_equal(rows, np.arange(embeddings.shape[0])) else embeddings[rows]
    k = diversity_k(quality.height, p.get("k"), p.get("ratio"))
    first = int(np.random.default_rng(int(p["seed"])).integers(quality.height))
    device = resolve_device(str(p.get("device", "cpu")))
    started = time.perf_counter()
    order, radii = k_center_greedy(vectors, k, first, device=device, return_radii=True)
    seconds = time.perf_counter() - started
    # pick_distance: distance from each pick to the nearest earlier pick (none for the first).
    pick_distance = pl.Series("pick_distance", [None, *radii[:-1].tolist()], dtype=pl.Float64)
    diverse = quality[order].with_columns(pick_distance)
    write_parquet(diverse, DIVERSE)
    write_json(METRICS, {
        "n_in": quality.height,
        "k_requested": k,
        "k": len(order),
        "first_index": first,
        "device": device,
        "seconds": round(seconds, 3),
        "coverage_radius_max": round(float(radii[0]), 6),
        "coverage_radius_min": round(float(radii[-1]), 6),
    })
    print(f"diversity_select: {len(order)} of {quality.height} samples picked on {device} in {seconds:.1f}s; "
          f"coverage radius {radii[0]:.4f} (1 centre) -> {radii[-1]:.4f} ({len(order)} centres) -> {DIVERSE}")


if __name__ == "__main__":
    stage.run(main, "diversity_select")
