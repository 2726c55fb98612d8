"""Judge the coherence, naturalness and empathy of the synthetic data before and after selection (Synth-Empathy §3.4)."""

from empathy_pipeline.analysis.plots import plot_data_quality
from empathy_pipeline.core import params, stage
from empathy_pipeline.core.io import read_parquet, sample_rows, write_json
from empathy_pipeline.core.stage import In, Out
from empathy_pipeline.llm.backends import model_backend
from empathy_pipeline.modeling.models import resolve_chat_model
from empathy_pipeline.synth_empathy import data_quality


def main(generated: In, selected: In, base: In, shards: Out, metrics: Out, plot: Out) -> None:
    p, llm = params.load("judge_quality"), params.load("llm")
    model = resolve_chat_model(p.model, base)
    before, after = data_quality.before_and_after(read_parquet(generated), read_parquet(selected))
    backend = model_backend(llm, model)
    summary: dict = {}
    for prefix, samples in (("before", before), ("after", after)):
        judged, _ = data_quality.judge(sample_rows(samples, p.sample_size, p.seed), backend, p.max_new_tokens,
                                       shard_dir=shards / prefix, shard_size=p.shard_size, seed=p.seed,
                                       retries=p.retries, retry_temperature=p.retry_temperature,
                                       settings=backend.settings)
        summary.update(data_quality.summarize(judged, prefix))
        print(f"judge_quality ({model}): {prefix} selection: {judged.height} samples, mean {summary[f'{prefix}_mean']}, "
              f"full marks {summary[f'{prefix}_full_marks_pct']}%, "
              f"{sum(summary[f'{prefix}_{c}_unparseable'] for c in data_quality.CRITERIA)} unparseable replies")
    write_json(metrics, summary)
    plot_data_quality(summary, plot)


if __name__ == "__main__":
    stage.run(main)
