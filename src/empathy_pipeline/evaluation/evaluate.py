"""Evaluation on the ED test split: one reply per test context from a model, scored as the papers do."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.data.chat import dialogue_chat
from empathy_pipeline.data.ed import paper_normalize
from empathy_pipeline.evaluation.metrics import score_predictions
from empathy_pipeline.llm.base import ChatBackend, Sampling
from empathy_pipeline.llm.table import respond


def resolve_weights(weights: Path, base: Path) -> tuple[str, str | None]:
    """(model, adapter): a PEFT adapter directory is applied to `base`; anything else loads as it is."""
    if not weights.exists():
        raise PipelineError(f"{weights}: model directory not found")
    if (weights / "adapter_config.json").exists():
        return str(base), str(weights)
    return str(weights), None


def predict(name: str, samples: pl.DataFrame, backend: ChatBackend, p, *, shard_dir: Path,
            settings: dict) -> tuple[pl.DataFrame, dict]:
    """Greedy replies to every test context (resumable): sample_id, model, context, prediction, reference.

    The context (the dialogue turns before the reply) travels with the predictions: pairwise
    judges, the A/B sheet and the EPITOME level classifiers read the reply beside what it answers.
    """
    if samples.height == 0:
        raise PipelineError("evaluate: the test split has no samples")
    replies, counts = respond(samples, dialogue_chat, backend, Sampling(max_new_tokens=p.max_new_tokens, seed=p.seed),
                              shard_dir=shard_dir, shard_size=p.shard_size, settings=settings, what=f"evaluate {name}")
    predictions = replies["reply"].to_list()
    if p.normalize_predictions == "paper":
        # References are in the papers' normalised form; put replies in the same form so the
        # scores are comparable with the papers' tables (the papers' models emit that form).
        predictions = [paper_normalize(t) for t in predictions]
    table = pl.DataFrame({"sample_id": samples["sample_id"], "model": [name] * samples.height,
                          "context": samples["context"], "prediction": predictions, "reference": samples["response"]})
    return table, counts


def epitome_summary(predictions: pl.DataFrame, classifier_dir: Path) -> dict:
    """ER/IP/EX mean level and level shares of the replies (classifiers trained on Reddit, so on ED
    replies they are indicative: the domain shift is real)."""
    from empathy_pipeline.evaluation.epitome_levels import summarize_predictions

    return summarize_predictions(predictions, classifier_dir)


def score(predictions: pl.DataFrame, p) -> dict:
    """The metrics of one model's predictions with the `evaluate` params' BERTScore settings."""
    return score_predictions(predictions["prediction"].to_list(), predictions["reference"].to_list(),
                             bertscore=p.bertscore, bertscore_model=p.bertscore_model,
                             num_layers=p.bertscore_num_layers, batch_size=p.bertscore_batch_size,
                             bertscore_rescale=p.bertscore_rescale, bertscore_baseline=p.bertscore_baseline)
