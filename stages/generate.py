"""Generate the synthetic dataset: Synthetic Dataset = LLM(Prompt(ED Data)), by generate.recipe:
Synth-Empathy's multi-round prompts (§3.1) or the SYNTHEMPATHY corpus recipe."""

from empathy_pipeline.core import params, stage
from empathy_pipeline.core.io import read_parquet, write_json, write_parquet
from empathy_pipeline.core.stage import In, Out
from empathy_pipeline.llm.backends import model_backend
from empathy_pipeline.llm.base import Sampling
from empathy_pipeline.modeling.models import resolve_chat_model
from empathy_pipeline.synth_empathy import generation, synthempathy


def main(train: In, base: In, epitome: In, out: Out, rejects: Out, shards: Out, metrics: Out) -> None:
    p, llm = params.load("generate"), params.load("llm")
    model = resolve_chat_model(p.model, base)
    backend = model_backend(llm, model)
    settings = backend.settings
    if p.recipe == "synthempathy":  # epitome is read only when generate.synthempathy.epitome_floor is set
        samples, rejected, counts, shard_counts = synthempathy.generate(
            read_parquet(train), backend, p, shard_dir=shards, settings=settings, generator=model, epitome_dir=epitome)
        line = synthempathy.summary_line(counts, shard_counts, out)
    else:
        seeds = generation.select_seeds(read_parquet(train), p.num_seeds, p.seed)
        completions, shard_counts = generation.generate_completions(
            seeds, backend, shard_dir=shards, prompt_variant=p.prompt_variant,
            completions_per_seed=p.completions_per_seed, sampling=Sampling.from_params(p),
            max_response_words=p.max_response_words, shard_size=p.shard_size,
            settings={"generate": p.model_dump(exclude=generation.SYNTHEMPATHY_KEYS), **settings})
        samples, rejected, counts = generation.assemble(seeds, completions, generator=model, prompt_variant=p.prompt_variant,
                                                        max_response_words=p.max_response_words, seed=p.seed)
        line = generation.summary_line(counts, shard_counts, out)
    write_parquet(samples, out)
    write_parquet(rejected, rejects)
    write_json(metrics, counts)
    print(line)


if __name__ == "__main__":
    stage.run(main)
