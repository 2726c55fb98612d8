"""BERTScore P/R/F1 with a local model as a local `evaluate` module; the logic lives in empathy_pipeline.evaluation.metrics."""

import datasets
import evaluate

from empathy_pipeline.evaluation import metrics


class EdBertscore(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="BERTScore P/R/F1 with a local model, computed as the EmpatheticDialogues papers do (x100 scale).",
            citation="",
            inputs_description="predictions: list of str; references: list of str, one per prediction; model, num_layers, batch_size as metrics.bertscore_prf",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, model=None, num_layers=None, batch_size=64):
        return metrics.bertscore_prf(predictions, references, model, num_layers, batch_size)
