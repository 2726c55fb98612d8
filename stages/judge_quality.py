"""Judge the coherence, naturalness and empathy of the synthetic data before and after selection (Synth-Empathy §3.4)."""

from empathy_pipeline import data_quality, params, stage
from empathy_pipeline.io import read_parquet, sample_rows, write_json
from empathy_pipeline.llm import load_backend
from empathy_pipeline.llm_table import LazyBackend
from empathy_pipeline.models import model_fingerprint, resolve_chat_model
from empathy_pipeline.plots import plot_data_quality
from empathy_pipeline.stage import In, Out


def main(generated: In, selected: In, base: In, shards: Out, metrics: Out, plot: Out) -> None:
    p, llm = params.load("judge_quality"), params.load("llm")
    model = resolve_chat_model(p.model, base)
    before, after = data_quality.before_and_after(read_parquet(generated), read_parquet(selected))
    backend = LazyBackend(lambda: load_backend(llm, model=model))
    summary: dict = {}
    for prefix, samples in (("before", before), ("after", after)):
        judged, _ = data_quality.judge(sample_rows(samples, p.sample_size, p.seed), backend, p.max_new_tokens,
                                       shard_dir=shards / prefix, shard_size=p.shard_size, seed=p.seed,
                                       settings={"llm": llm.model_dump(), "model": model_fingerprint(model)})
        summary.update(data_quality.summarize(judged, prefix))
        print(f"judge_quality ({model}): {prefix} selection: {judged.height} samples, mean {summary[f'{prefix}_mean']}, "
              f"full marks {summary[f'{prefix}_full_marks_pct']}%, "
              f"{sum(summary[f'{prefix}_{c}_unparseable'] for c in data_quality.CRITERIA)} unparseable replies")
    write_json(metrics, summary)
    plot_data_quality(summary, plot)


if __name__ == "__main__":
    stage.run(main)
