"""Rate every sample of the pool (ED train, or valid: `rate.pool`) for sensibility and rationality with an LLM judge (Efficient-Empathy §3.2)."""

from empathy_pipeline.core import params, stage
from empathy_pipeline.core.io import read_parquet, sample_rows, write_json, write_parquet
from empathy_pipeline.core.stage import In, Out
from empathy_pipeline.efficient_empathy import rating
from empathy_pipeline.llm.backends import model_backend
from empathy_pipeline.llm.base import Sampling
from empathy_pipeline.modeling.models import resolve_chat_model


def main(pool: In, base: In, out: Out, shards: Out, metrics: Out) -> None:
    p, llm = params.load("rate"), params.load("llm")
    samples = sample_rows(read_parquet(pool, nonempty=True), p.max_samples, p.seed)
    if p.import_file:
        ratings, counts = rating.import_ratings(p.import_file, samples)
        source = f"imported from {p.import_file}"
        shards.mkdir(parents=True, exist_ok=True)  # a declared DVC output, empty when importing
    else:
        model = resolve_chat_model(p.model, base)
        backend = model_backend(llm, model)
        ratings, counts = rating.rate_samples(
            backend, samples, retries=p.retries, shard_dir=shards,
            shard_size=p.shard_size, sampling=Sampling(max_new_tokens=p.max_new_tokens, seed=p.seed),
            retry_temperature=p.retry_temperature, prefill=rating.RATING_FORM_PREFIX if p.prefill else None,
            settings=backend.settings)
        source = f"judged by {model}"
    write_parquet(ratings, out)
    write_json(metrics, counts)
    print(f"rate: {counts['rated']} samples {source}: {counts['parsed']} with both scores, "
          f"{counts['missing']} missing -> {out}")


if __name__ == "__main__":
    stage.run(main)
