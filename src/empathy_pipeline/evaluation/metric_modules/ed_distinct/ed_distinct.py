"""Distinct-1/2 over all predictions as a local `evaluate` module; the logic lives in empathy_pipeline.evaluation.metrics."""

import datasets
import evaluate

from empathy_pipeline.evaluation import metrics


class EdDistinct(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Distinct-1/2 over all predictions, computed as the EmpatheticDialogues papers do (x100 scale).",
            citation="",
            inputs_description="predictions: list of str",
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions):
        return metrics.distinct(predictions)
