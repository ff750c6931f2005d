"""The shipped evaluate modules, loaded offline by path, against hand-computed cases."""
from __future__ import annotations

import math

import evaluate
import numpy as np
import pytest

from px_hub.evaluate_metrics import load_metric, metric_path


def test_top_k_accuracy_by_path():
    m = evaluate.load(metric_path("top_k_accuracy"), keep_in_memory=True)
    preds = [[3, 1, 2], [0, 2, 1], [1, 0, 3], [2, 3, 0]]
    refs = [3, 2, 0, 1]
    # top-1: only example 0 hits; top-2: 0, 1, 2; top-3: 0, 1, 2 (example 3's label 1 is not ranked)
    assert m.compute(predictions=preds, references=refs, k=[1, 2, 3]) == {
        "top_1_accuracy": 0.25, "top_2_accuracy": 0.75, "top_3_accuracy": 0.75}


def test_top_k_accuracy_batches_and_errors():
    m = load_metric("top_k_accuracy")
    m.add_batch(predictions=np.array([[0, 1], [1, 0]]), references=np.array([0, 0]))
    m.add_batch(predictions=np.array([[1, 0]]), references=np.array([1]))
    assert m.compute(k=1) == {"top_1_accuracy": pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="k="):
        load_metric("top_k_accuracy").compute(predictions=[[0, 1]], references=[0], k=5)


def test_mean_iou_hand_computed():
    m = load_metric("mean_iou")
    ref = np.array([[0, 0, 1, 1],
                    [0, 0, 1, 1],
                    [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1],
                     [0, 0, 1, 2],
                     [2, 0, 2, 0]])
    # valid pixels (ref != 255): 10. class 0: ref 4 px, pred 0 at 4 valid px (3 correct) -> I=3, U=4+4-3=5
    # class 1: ref 4, pred 1 at 4 px (3 correct) -> I=3, U=5;
    # class 2: ref 2, pred 2 at 2 valid px (1 correct) -> I=1, U=3
    r = m.compute(predictions=[pred], references=[ref], num_labels=3, ignore_index=255)
    assert r["per_category_iou"] == pytest.approx([3 / 5, 3 / 5, 1 / 3])
    assert r["mean_iou"] == pytest.approx((3 / 5 + 3 / 5 + 1 / 3) / 3)
    assert r["overall_accuracy"] == pytest.approx(7 / 10)
    assert r["per_category_accuracy"] == pytest.approx([3 / 4, 3 / 4, 1 / 2])


def test_mean_iou_absent_class_is_nan_and_left_out():
    r = load_metric("mean_iou").compute(predictions=[[[0, 0]]], references=[[[0, 0]]], num_labels=3)
    assert r["mean_iou"] == 1.0 and math.isnan(r["per_category_iou"][1])
    with pytest.raises(ValueError, match="num_labels"):
        load_metric("mean_iou").compute(predictions=[[[0, 7]]], references=[[[0, 7]]], num_labels=3)
