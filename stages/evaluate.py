"""Generate one reply per ED test sample with a model and score it (BLEU, ROUGE, Distinct, CIDEr, BERTScore,
and the EPITOME ER/IP/EX levels of `--epitome`'s classifiers).

`--weights` is the base model, a PEFT adapter directory (applied to `--base`), or a full model (the MoE).
"""

from empathy_pipeline.core import params, stage
from empathy_pipeline.core.io import read_parquet, write_json, write_parquet
from empathy_pipeline.core.stage import In, Out, Text
from empathy_pipeline.evaluation import evaluate
from empathy_pipeline.llm.backends import model_backend


def main(name: Text, weights: In, base: In, test: In, predictions: Out, shards: Out, metrics: Out,
         epitome: In) -> None:
    p, llm = params.load("evaluate"), params.load("llm")
    model, adapter = evaluate.resolve_weights(weights, base)
    samples = read_parquet(test, nonempty=True)
    if p.max_samples and samples.height < p.max_samples:  # not an error: a small split is scored whole
        print(f"evaluate {name}: {test} has {samples.height} samples, fewer than evaluate.max_samples "
              f"({p.max_samples}); scoring all {samples.height}")
    samples = samples.head(p.max_samples) if p.max_samples else samples
    backend = model_backend(llm, model, adapter)
    table, _ = evaluate.predict(name, samples, backend, p, shard_dir=shards, settings=backend.settings)
    write_parquet(table, predictions)
    scores = evaluate.score(table, p) | evaluate.epitome_summary(table, epitome)  # EPITOME: Reddit-trained
    write_json(metrics, scores)
    print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in scores.items()))


if __name__ == "__main__":
    stage.run(main)
