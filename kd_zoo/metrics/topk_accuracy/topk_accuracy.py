"""Top-k accuracy as an `evaluate` metric module, shipped inside kd_zoo so it loads offline by path.

import evaluate, kd_zoo.metrics
metric = evaluate.load(kd_zoo.metrics.TOPK_ACCURACY)
metric.add_batch(predictions=[[3, 1, 0]], references=[1])   # each prediction: class ids, best first
metric.compute(k=(1, 5))   # {'top1': 0.0, 'top5': 1.0}
"""

import datasets
import evaluate

_DESCRIPTION = "Top-k accuracy: the fraction of samples whose true class is among the k best predicted classes."
_INPUTS = """
Args:
    predictions: for each sample, class ids sorted from most to least likely (at least max(k) of them).
    references: the true class id of each sample.
    k: the k values to report (default (1, 5)).
Returns:
    {'top1': float, 'top5': float, ...} in [0, 1].
"""


class TopkAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, k=(1, 5)):
        if not references:
            raise ValueError("top-k accuracy of an empty evaluation set is undefined")
        results = {}
        for kk in k:
            if any(len(p) < kk for p in predictions):
                raise ValueError(f"top-{kk} needs at least {kk} ranked classes per prediction")
            hits = sum(ref in pred[:kk] for pred, ref in zip(predictions, references, strict=True))
            results[f"top{kk}"] = hits / len(references)
        return results
