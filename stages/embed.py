"""Embed the discriminator's reply r_D and the generated reply r_G (S = 100 * cos(E_D, E_G), Synth-Empathy
§3.2) and every synthetic sample, for the diversity selection of §3.3."""

from pathlib import Path

import polars as pl

from empathy_pipeline import params, stage
from empathy_pipeline.errors import PipelineError
from empathy_pipeline.io import read_parquet, write_parquet
from empathy_pipeline.selection import (
    embed_to_npy,
    load_embedder,
    sample_text,
    scoring_table,
    similarity_scores,
)

GENERATED = Path("data/synth/generated.parquet")
DISCRIMINATED = Path("data/synth/discriminated.parquet")
SCORES = Path("data/synth/scores.parquet")
EMBEDDINGS = Path("data/synth/sample_embeddings.npy")


def main() -> None:
    p = params.section("embed")
    model_name = params.section("models")["embedding"]
    table, unscored = scoring_table(read_parquet(GENERATED), read_parquet(DISCRIMINATED))
    if table.height == 0:
        raise PipelineError(f"{DISCRIMINATED}: no generated sample has a discriminator reply")
    batch_size = int(p["batch_size"])
    model = load_embedder(model_name)
    similarity = similarity_scores(model, table["disc_response"].to_list(), table["response"].to_list(),
                                   batch_size=batch_size)
    texts = [sample_text(c, r) for c, r in zip(table["context"].to_list(), table["response"].to_list(), strict=True)]
    embed_to_npy(model, texts, EMBEDDINGS, batch_size=batch_size, dtype=str(p["dtype"]))
    scores = table.select("sample_id", "disc_response").with_columns(similarity=pl.Series(similarity))
    write_parquet(scores, SCORES)
    print(f"embed: {scores.height} samples scored with {model_name} (S mean {similarity.mean():.1f}); "
          f"{unscored} skipped without a discriminator reply; embeddings {EMBEDDINGS} ({p['dtype']})")


if __name__ == "__main__":
    stage.run(main, "embed")
