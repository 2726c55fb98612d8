"""Rate every ED train sample for sensibility and rationality with an LLM judge (Efficient-Empathy §3.2)."""

from pathlib import Path

import numpy as np

from empathy_pipeline import params, stage
from empathy_pipeline.errors import PipelineError
from empathy_pipeline.io import read_parquet, write_json, write_parquet
from empathy_pipeline.models import resolve_chat_model
from empathy_pipeline.prompts import RATING_FORM_PREFIX

TRAIN = Path("data/prepared/train.parquet")
RATINGS = Path("data/ratings/train.parquet")
SHARD_DIR = Path("data/ratings/shards")
METRICS = Path("metrics/rate.json")


def main() -> None:
    p = params.section("rate")
    llm = params.section("llm")
    samples = read_parquet(TRAIN)
    if p.get("max_samples") is not None and samples.height > int(p["max_samples"]):
        rng = np.random.default_rng(int(p["seed"]))
        samples = samples[np.sort(rng.choice(samples.height, size=int(p["max_samples"]), replace=False))]

    if p.get("import_file"):
        from empathy_pipeline.rating import import_ratings

        ratings, counts = import_ratings(p["import_file"], samples)
        source = f"imported from {p['import_file']}"
        SHARD_DIR.mkdir(parents=True, exist_ok=True)  # a declared DVC output, empty when importing
    else:
        from empathy_pipeline.generation import model_fingerprint
        from empathy_pipeline.llm import Sampling, load_backend
        from empathy_pipeline.rating import rate_samples

        model = resolve_chat_model(p["model"])
        if not isinstance(p.get("prefill"), bool):
            raise PipelineError("params.yaml rate.prefill: must be true or false")
        ratings, counts = rate_samples(
            lambda: load_backend(llm, model=model),
            samples,
            retries=int(p["retries"]),
            shard_dir=SHARD_DIR,
            shard_size=int(p["shard_size"]),
            sampling=Sampling(max_new_tokens=int(p["max_new_tokens"]), temperature=0.0, seed=int(p["seed"])),
            retry_temperature=float(p["retry_temperature"]),
            prefill=RATING_FORM_PREFIX if p["prefill"] else None,
            config={"model": model_fingerprint(model), "llm": llm},
        )
        source = f"judged by {model}"
    write_parquet(ratings, RATINGS)
    write_json(METRICS, counts)
    print(f"rate: {counts['rated']} samples {source}: {counts['parsed']} with both scores, "
          f"{counts['missing']} missing -> {RATINGS}")


if __name__ == "__main__":
    stage.run(main, "rate")
