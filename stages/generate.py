"""Generate the synthetic dataset: Synthetic Dataset = LLM(Prompt(ED Data)) (Synth-Empathy §3.1)."""

from empathy_pipeline import generation, params, stage
from empathy_pipeline.io import read_parquet, write_json, write_parquet
from empathy_pipeline.llm import Sampling, load_backend
from empathy_pipeline.llm_table import LazyBackend
from empathy_pipeline.models import model_fingerprint, resolve_chat_model
from empathy_pipeline.stage import In, Out


def main(train: In, base: In, out: Out, rejects: Out, shards: Out, metrics: Out) -> None:
    p, llm = params.load("generate"), params.load("llm")
    model = resolve_chat_model(p.model, base)
    seeds = generation.select_seeds(read_parquet(train), p.num_seeds, p.seed)
    completions, shard_counts = generation.generate_completions(
        seeds, LazyBackend(lambda: load_backend(llm, model=model)), shard_dir=shards,
        prompt_variant=p.prompt_variant, completions_per_seed=p.completions_per_seed,
        sampling=Sampling.from_params(p), max_response_words=p.max_response_words, shard_size=p.shard_size,
        settings={"generate": p.model_dump(), "llm": llm.model_dump(), "model": model_fingerprint(model)})
    samples, rejected, counts = generation.assemble(seeds, completions, generator=model, prompt_variant=p.prompt_variant,
                                                    max_response_words=p.max_response_words, seed=p.seed)
    write_parquet(samples, out)
    write_parquet(rejected, rejects)
    write_json(metrics, counts)
    reasons = ", ".join(f"{k.removeprefix('rejected_')} {v}" for k, v in counts.items() if k.startswith("rejected_") and v)
    print(f"generate: {counts['completions']} completions from {counts['seeds']} seeds -> {counts['parsed']} parsed, "
          f"{counts['rejected']} rejected ({reasons or 'none'}) -> {counts['samples']} samples in {out} "
          f"({shard_counts['shards_resumed']} of {shard_counts['shards']} shards resumed)")


if __name__ == "__main__":
    stage.run(main)
