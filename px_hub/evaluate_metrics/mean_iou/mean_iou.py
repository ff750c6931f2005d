"""Mean intersection-over-union for semantic segmentation as an ``evaluate`` metric (shipped with px-hub; load
offline with ``evaluate.load("/path/to/mean_iou.py")``).

IoU is accumulated over the whole evaluation set (one confusion matrix, the Pascal VOC / DeepLab convention), not
averaged per image. Pixels whose reference is ``ignore_index`` (255 in VOC: object borders) are left out; classes
that appear neither in the references nor the predictions have no IoU (NaN) and are left out of the mean.
"""
import datasets
import evaluate
import numpy as np

_DESCRIPTION = __doc__

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 2-D `int` arrays): predicted label maps.
    references (`list` of 2-D `int` arrays): ground-truth label maps, same shapes.
    num_labels (`int`): number of classes (VOC: 21, background included).
    ignore_index (`int`, defaults to 255): reference value of pixels that do not count.
Returns:
    `mean_iou` (`float`), `mean_accuracy` (mean per-class recall), `overall_accuracy` (pixel accuracy),
    `per_category_iou` and `per_category_accuracy` (`list` of `float`, NaN for absent classes).
Examples:
    >>> metric = evaluate.load("mean_iou.py")
    >>> metric.compute(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [0, 255]]], num_labels=2)["mean_iou"]
    0.5
"""

_CITATION = """@article{everingham2010pascal, title={The Pascal Visual Object Classes (VOC) Challenge},
author={Everingham, M. and Van Gool, L. and Williams, C. K. I. and Winn, J. and Zisserman, A.},
journal={IJCV}, year={2010}}"""


def confusion_matrix(prediction, reference, num_labels, ignore_index=255):
    """num_labels x num_labels counts; rows = reference class, columns = predicted class."""
    pred = np.asarray(prediction, dtype=np.int64).reshape(-1)
    ref = np.asarray(reference, dtype=np.int64).reshape(-1)
    if pred.shape != ref.shape:
        raise ValueError(f"mean_iou: prediction and reference sizes differ ({pred.size} vs {ref.size} pixels)")
    keep = ref != ignore_index
    pred, ref = pred[keep], ref[keep]
    if ref.size and (ref.min() < 0 or ref.max() >= num_labels):
        raise ValueError(f"mean_iou: reference labels must be in [0, {num_labels}) or {ignore_index}; "
                         f"got {ref.min()}..{ref.max()}; pass the right num_labels")
    valid = (pred >= 0) & (pred < num_labels)  # an out-of-range prediction counts as wrong for its reference
    cm = np.bincount(ref[valid] * num_labels + pred[valid], minlength=num_labels * num_labels)
    cm = cm.reshape(num_labels, num_labels)
    missed = np.bincount(ref[~valid], minlength=num_labels)
    return cm, missed


def scores_from_confusion(cm, missed=None):
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    ref_total = cm.sum(axis=1) + (0 if missed is None else np.asarray(missed, dtype=np.float64))
    union = ref_total + cm.sum(axis=0) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(ref_total > 0, tp / ref_total, np.nan)
    total = ref_total.sum()
    return {
        "mean_iou": float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan"),
        "mean_accuracy": float(np.nanmean(acc)) if np.any(~np.isnan(acc)) else float("nan"),
        "overall_accuracy": float(tp.sum() / total) if total else float("nan"),
        "per_category_iou": iou.tolist(),
        "per_category_accuracy": acc.tolist(),
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIoU(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("int16"))),
                "references": datasets.Sequence(datasets.Sequence(datasets.Value("int16"))),
            }),
        )

    def _compute(self, predictions, references, num_labels, ignore_index=255):
        num_labels = int(num_labels)
        if num_labels < 1:
            raise ValueError(f"mean_iou: num_labels must be >= 1, got {num_labels}")
        cm = np.zeros((num_labels, num_labels), dtype=np.int64)
        missed = np.zeros(num_labels, dtype=np.int64)
        for p, r in zip(predictions, references):
            c, m = confusion_matrix(p, r, num_labels, ignore_index)
            cm += c
            missed += m
        return scores_from_confusion(cm, missed)
