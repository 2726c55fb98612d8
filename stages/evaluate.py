"""Generate one reply per ED test sample with a model and score it (BLEU, ROUGE, Distinct, CIDEr, BERTScore).

Usage (from dvc.yaml): python stages/evaluate.py NAME WEIGHTS
WEIGHTS is models/base, a PEFT adapter directory (applied to models/base), or a full model (the MoE).
"""

import sys
import time
from pathlib import Path

import polars as pl

from empathy_pipeline import params, stage
from empathy_pipeline.ed import paper_normalize
from empathy_pipeline.errors import PipelineError
from empathy_pipeline.io import read_parquet, write_json, write_parquet
from empathy_pipeline.llm import Sampling, load_backend
from empathy_pipeline.metrics import score_predictions
from empathy_pipeline.models import BASE_MODEL_DIR
from empathy_pipeline.prompts import dialogue_chat

BASE_MODEL = Path(BASE_MODEL_DIR)


def resolve_weights(weights: Path) -> tuple[str, str | None]:
    """(model, adapter): adapters are applied to the base model, anything else loads as it is."""
    if not weights.exists():
        raise PipelineError(f"{weights}: model directory not found")
    if (weights / "adapter_config.json").exists():
        return str(BASE_MODEL), str(weights)
    return str(weights), None


def main() -> None:
    if len(sys.argv) != 3:
        raise PipelineError("usage: python stages/evaluate.py NAME WEIGHTS_DIR")
    name, weights = sys.argv[1], Path(sys.argv[2])
    p = params.section("evaluate")
    samples = read_parquet(Path("data/prepared") / f"{p.get('split', 'test')}.parquet")
    if p.get("max_samples"):
        samples = samples.head(int(p["max_samples"]))
    if samples.height == 0:
        raise PipelineError(f"evaluate: no samples in the {p.get('split', 'test')} split")

    model, adapter = resolve_weights(weights)
    backend = load_backend(params.section("llm"), model=model, adapter=adapter)
    started = time.time()
    predictions = backend.generate(
        [dialogue_chat(c) for c in samples["context"].to_list()],
        Sampling(max_new_tokens=int(p["max_new_tokens"]), temperature=0.0, seed=int(p.get("seed", 0))),
    )
    seconds = time.time() - started
    if p.get("normalize_predictions", "paper") == "paper":
        # References are in the papers' normalised form; put replies in the same form so the
        # scores are comparable with the papers' tables (the papers' models emit that form).
        predictions = [paper_normalize(t) for t in predictions]
    out = pl.DataFrame({
        "sample_id": samples["sample_id"],
        "model": [name] * samples.height,
        "prediction": predictions,
        "reference": samples["response"],
    })
    write_parquet(out, Path("outputs/predictions") / f"{name}.parquet")
    scores = score_predictions(
        out["prediction"].to_list(), out["reference"].to_list(),
        bertscore=bool(p.get("bertscore", True)), bertscore_model=p.get("bertscore_model"),
        num_layers=p.get("bertscore_num_layers"), batch_size=int(p.get("bertscore_batch_size", 64)),
    )
    scores["generation_seconds"] = round(seconds, 1)
    write_json(Path("metrics") / f"{name}.json", scores)
    print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in scores.items()))


if __name__ == "__main__":
    stage.run(main, "evaluate")
