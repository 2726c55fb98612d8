"""Generate the synthetic dataset: Synthetic Dataset = LLM(Prompt(ED Data)) (Synth-Empathy §3.1)."""

from pathlib import Path

from empathy_pipeline import params, stage
from empathy_pipeline.generation import (
    assemble,
    config_fingerprint,
    generate_completions,
    model_fingerprint,
    select_seeds,
)
from empathy_pipeline.io import read_parquet, write_json, write_parquet
from empathy_pipeline.llm import Sampling, load_backend
from empathy_pipeline.models import resolve_chat_model
from empathy_pipeline.prompts import generation_chat

TRAIN = Path("data/prepared/train.parquet")
SHARD_DIR = Path("data/synth/shards")
GENERATED = Path("data/synth/generated.parquet")
REJECTS = Path("data/synth/rejects.parquet")
METRICS = Path("metrics/generate.json")


def main() -> None:
    p = params.section("generate")
    llm = params.section("llm")
    model = resolve_chat_model(p["model"])
    seeds = select_seeds(read_parquet(TRAIN), p["seeds"], int(p["seed"]))
    variant = int(p["prompt_variant"])
    max_words = int(p["max_response_words"])
    # The rendered prompt is part of what decides a shard's content: editing it regenerates.
    prompt = generation_chat(["{context}"], "{response}", "{emotion}", variant, max_words=max_words)
    settings = {"generate": p, "llm": llm, "model": model_fingerprint(model), "prompt": prompt}
    fingerprint = config_fingerprint(settings, seeds)
    completions = generate_completions(
        seeds, SHARD_DIR, lambda: load_backend(llm, model=model),
        prompt_variant=variant,
        completions_per_seed=int(p["completions_per_seed"]),
        sampling=Sampling.from_params(p),
        max_response_words=max_words,
        shard_size=int(p["shard_size"]),
        fingerprint=fingerprint,
    )
    samples, rejects, counts = assemble(seeds, completions, generator=model, prompt_variant=variant,
                                        max_response_words=max_words, seed=int(p["seed"]))
    write_parquet(samples, GENERATED)
    write_parquet(rejects, REJECTS)
    write_json(METRICS, counts)
    reasons = ", ".join(f"{k.removeprefix('rejected_')} {v}" for k, v in counts.items()
                        if k.startswith("rejected_") and v)
    print(f"generate: {counts['completions']} completions from {counts['seeds']} seeds -> {counts['parsed']} parsed, "
          f"{counts['rejected']} rejected ({reasons or 'none'}) -> {counts['samples']} samples in {GENERATED}")


if __name__ == "__main__":
    stage.run(main, "generate")
