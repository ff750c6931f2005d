"""Top-k accuracy as an ``evaluate`` metric (shipped with px-hub; load offline with
``evaluate.load("/path/to/top_k_accuracy.py")``)."""
import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Top-k accuracy: the fraction of examples whose reference label is among the k highest-scoring predicted classes.
`predictions` are the predicted class indices of each example ranked from most to least likely (e.g.
`logits.topk(5).indices`, only as many columns as the largest k), so large label spaces stay cheap to store.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `int`): per example, predicted class indices in decreasing score order.
    references (`list` of `int`): the true class of each example.
    k (`int` or `list` of `int`, defaults to `[1, 5]`): the k values to report; each needs at least k ranked
        predictions per example.
Returns:
    `top_{k}_accuracy` (`float` in [0, 1]) for every requested k.
Examples:
    >>> metric = evaluate.load("top_k_accuracy.py")
    >>> metric.compute(predictions=[[2, 0], [1, 2]], references=[0, 0], k=[1, 2])
    {'top_1_accuracy': 0.0, 'top_2_accuracy': 0.5}
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Value("int64")),
                "references": datasets.Value("int64"),
            }),
        )

    def _compute(self, predictions, references, k=(1, 5)):
        ks = [int(k)] if np.isscalar(k) else [int(v) for v in k]
        refs = np.asarray(references, dtype=np.int64)
        if len(refs) == 0:
            raise ValueError("top_k_accuracy: no examples were added; call add_batch before compute")
        width = min(len(p) for p in predictions)
        if any(v < 1 or v > width for v in ks):
            raise ValueError(f"top_k_accuracy: k={ks} needs 1 <= k <= {width} (the number of ranked predictions per "
                             "example); pass logits.topk(max(k)).indices")
        ranked = np.asarray([p[:width] for p in predictions], dtype=np.int64)
        hits = ranked == refs[:, None]
        return {f"top_{v}_accuracy": float(hits[:, :v].any(axis=1).mean()) for v in ks}
