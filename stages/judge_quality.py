"""Judge the coherence, naturalness and empathy of the synthetic data before and after selection (Synth-Empathy §3.4)."""

from pathlib import Path

from empathy_pipeline import data_quality, params, stage
from empathy_pipeline.errors import PipelineError
from empathy_pipeline.io import read_parquet, write_json
from empathy_pipeline.llm import load_backend
from empathy_pipeline.models import resolve_chat_model
from empathy_pipeline.plots import plot_data_quality

GENERATED = Path("data/synth/generated.parquet")   # before selection
SELECTED = Path("data/selection/diverse.parquet")  # after quality and diversity selection
METRICS = Path("metrics/data_quality.json")
PLOT = Path("plots/data_quality.png")


def main() -> None:
    p = params.section("judge_quality")
    model = resolve_chat_model(p["model"])
    size, seed = p.get("sample_size"), int(p["seed"])
    generated = read_parquet(GENERATED)
    # The selected table may carry only ids; its text is the generated row's.
    selected_ids = read_parquet(SELECTED).select("sample_id")
    selected = generated.join(selected_ids, on="sample_id", how="semi", maintain_order="left")
    if selected.height != selected_ids.height:
        raise PipelineError(f"{SELECTED}: {selected_ids.height - selected.height} sample_id(s) not in {GENERATED} "
                            "(rerun the selection stages)")
    before = data_quality.sample_rows(generated, size, seed)
    after = data_quality.sample_rows(selected, size, seed)
    backend = load_backend(params.section("llm"), model=model)
    metrics: dict = {}
    for prefix, samples in (("before", before), ("after", after)):
        judged = data_quality.judge(samples, backend, int(p["max_new_tokens"]), seed)
        metrics.update(data_quality.summarize(judged, prefix))
        unparseable = sum(metrics[f"{prefix}_{c}_unparseable"] for c in data_quality.CRITERIA)
        print(f"judge_quality ({model}): {prefix} selection: {samples.height} samples, mean {metrics[f'{prefix}_mean']}, "
              f"full marks {metrics[f'{prefix}_full_marks_pct']}%, {unparseable} unparseable replies")
    write_json(METRICS, metrics)
    plot_data_quality(metrics, PLOT)


if __name__ == "__main__":
    stage.run(main, "judge_quality")
