"""Embed the discriminator's reply r_D and the generated reply r_G (S = 100 * cos(E_D, E_G), Synth-Empathy
§3.2) and every synthetic sample, for the diversity selection of §3.3."""

import polars as pl

from empathy_pipeline.core import params, stage
from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import read_parquet, write_parquet
from empathy_pipeline.core.stage import In, Out
from empathy_pipeline.modeling import encoders
from empathy_pipeline.synth_empathy import similarity


def main(generated: In, discriminated: In, scores: Out, sample_embeddings: Out) -> None:
    p, models = params.load("embed"), params.load("models")
    model_name = models.embedding
    table, unscored = similarity.scoring_table(read_parquet(generated), read_parquet(discriminated))
    if table.height == 0:
        raise PipelineError(f"{discriminated}: no generated sample has a discriminator reply")
    model = encoders.load_embedder(model_name, prompt=models.embedding_prompt,
                                   trust_remote_code=models.trust_remote_code)
    s_values = similarity.similarity_scores(model, table["disc_response"].to_list(), table["response"].to_list(),
                                            batch_size=p.batch_size)
    texts = [similarity.sample_text(c, r) for c, r in table.select("context", "response").iter_rows()]
    encoders.embed_to_npy(model, texts, sample_embeddings, batch_size=p.batch_size, dtype=p.dtype)
    write_parquet(table.select("sample_id", "disc_response").with_columns(similarity=pl.Series(s_values)), scores)
    print(f"embed: {table.height} samples scored with {model_name} (S mean {s_values.mean():.1f}); "
          f"{unscored} skipped without a discriminator reply; embeddings {sample_embeddings} ({p.dtype})")


if __name__ == "__main__":
    stage.run(main)
