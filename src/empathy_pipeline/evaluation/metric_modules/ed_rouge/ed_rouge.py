"""ROUGE-1/2/L F-measure averaged over samples as a local `evaluate` module; the logic lives in empathy_pipeline.evaluation.metrics."""

import datasets
import evaluate

from empathy_pipeline.evaluation import metrics


class EdRouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="ROUGE-1/2/L F-measure averaged over samples, computed as the EmpatheticDialogues papers do (x100 scale).",
            citation="",
            inputs_description="predictions: list of str; references: list of str, one per prediction",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        return metrics.rouge(predictions, references)
