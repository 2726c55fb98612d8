"""Embed the discriminator's reply r_D and the generated reply r_G (S = 100 * cos(E_D, E_G), Synth-Empathy
§3.2) and every synthetic sample, for the diversity selection of §3.3."""

import polars as pl

from empathy_pipeline import embeddings, params, stage
from empathy_pipeline.errors import PipelineError
from empathy_pipeline.io import read_parquet, write_parquet
from empathy_pipeline.stage import In, Out


def main(generated: In, discriminated: In, scores: Out, sample_embeddings: Out) -> None:
    p, models = params.load("embed"), params.load("models")
    model_name = models.embedding
    table, unscored = embeddings.scoring_table(read_parquet(generated), read_parquet(discriminated))
    if table.height == 0:
        raise PipelineError(f"{discriminated}: no generated sample has a discriminator reply")
    model = embeddings.load_embedder(model_name, prompt=models.embedding_prompt,
                                     trust_remote_code=models.trust_remote_code)
    similarity = embeddings.similarity_scores(model, table["disc_response"].to_list(), table["response"].to_list(),
                                              batch_size=p.batch_size)
    texts = [embeddings.sample_text(c, r) for c, r in table.select("context", "response").iter_rows()]
    embeddings.embed_to_npy(model, texts, sample_embeddings, batch_size=p.batch_size, dtype=p.dtype)
    write_parquet(table.select("sample_id", "disc_response").with_columns(similarity=pl.Series(similarity)), scores)
    print(f"embed: {table.height} samples scored with {model_name} (S mean {similarity.mean():.1f}); "
          f"{unscored} skipped without a discriminator reply; embeddings {sample_embeddings} ({p.dtype})")


if __name__ == "__main__":
    stage.run(main)
