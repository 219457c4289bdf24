"""Dice + CE loss against a straightforward float64 re-computation; Dice/IoU against hand counts."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from largekernel.tasks.segmentation import DiceCELoss, SegmentationMeter, soft_dice_loss
from largekernel.tasks.segmentation.losses import deep_supervision_weights
from largekernel.tasks.segmentation.metrics import confusion_matrix, dice_iou_from_confusion


def _reference_loss(logits, target, smooth=1e-5, include_background=True):
    """CE and soft Dice with explicit Python loops over voxels and classes, in float64."""
    logits = logits.double()
    n, c = logits.shape[:2]
    flat = logits.reshape(n, c, -1)
    tgt = target.reshape(n, -1)
    ce_total, count = 0.0, 0
    inter = [0.0] * c
    psum = [0.0] * c
    tsum = [0.0] * c
    for b in range(n):
        for v in range(flat.shape[2]):
            scores = [float(flat[b, k, v]) for k in range(c)]
            m = max(scores)
            exps = [math.exp(s - m) for s in scores]
            z = sum(exps)
            t = int(tgt[b, v])
            ce_total += -(scores[t] - m - math.log(z))
            count += 1
            for k in range(c):
                p = exps[k] / z
                psum[k] += p
                if k == t:
                    inter[k] += p
                    tsum[k] += 1
    dices = [(2 * inter[k] + smooth) / (psum[k] + tsum[k] + smooth) for k in range(c)]
    if not include_background:
        dices = dices[1:]
    return ce_total / count, 1 - sum(dices) / len(dices)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(2, 4), spatial=st.lists(st.integers(1, 4), min_size=1, max_size=3),
       seed=st.integers(0, 10_000), include_background=st.booleans(),
       weights=st.sampled_from([(1.0, 1.0), (0.5, 2.0), (0.0, 1.0), (1.0, 0.0)]))
def test_loss_matches_reference(n, c, spatial, seed, include_background, weights):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, *spatial, generator=g) * 3
    target = torch.randint(0, c, (n, *spatial), generator=g)
    ce, dice = _reference_loss(logits, target, include_background=include_background)
    loss = DiceCELoss(*weights, include_background=include_background)(logits, target)
    assert float(loss) == pytest.approx(weights[0] * ce + weights[1] * dice, rel=1e-5, abs=1e-6)
    assert float(soft_dice_loss(logits, target, include_background=include_background)) == pytest.approx(
        dice, rel=1e-5, abs=1e-6)


def test_deep_supervision_loss_is_the_weighted_sum():
    g = torch.Generator().manual_seed(1)
    outs = [torch.randn(2, 3, 5, 6, generator=g) for _ in range(3)]
    target = torch.randint(0, 3, (2, 5, 6), generator=g)
    single = [float(DiceCELoss()(o, target)) for o in outs]
    expected = (single[0] * 1 + single[1] * 0.5 + single[2] * 0.25) / 1.75
    assert float(DiceCELoss()(outs, target)) == pytest.approx(expected, rel=1e-6)
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])


def test_dice_iou_hand_computed():
    # pred / target over 6 pixels, 3 classes:
    pred = torch.tensor([[0, 1, 1], [1, 2, 0]])
    target = torch.tensor([[0, 1, 0], [1, 1, 0]])
    # class 0: TP 2 (pixels (0,0),(1,2)), FP 0, FN 1 ((0,2) predicted 1) -> Dice 4/5, IoU 2/3
    # class 1: TP 2 ((0,1),(1,0)), FP 1 ((0,2)), FN 1 ((1,1) predicted 2) -> Dice 4/6, IoU 2/4
    # class 2: TP 0, FP 1, FN 0 -> Dice 0, IoU 0
    cm = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 2, 1], [0, 0, 0]]
    scores = dice_iou_from_confusion(cm)
    assert scores["dice"] == pytest.approx([4 / 5, 4 / 6, 0.0])
    assert scores["iou"] == pytest.approx([2 / 3, 2 / 4, 0.0])


def test_absent_class_is_undefined_not_perfect():
    scores = dice_iou_from_confusion(confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 1]), 3))
    assert scores["dice"] == [1.0, 1.0, None] and scores["iou"] == [1.0, 1.0, None]


def test_meter_accumulates_over_batches_and_merges():
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(2, 3, 4, 5, generator=g), torch.randint(0, 3, (2, 4, 5), generator=g))
               for _ in range(3)]
    meter = SegmentationMeter(3)
    for logits, target in batches:
        meter.update(logits, target, loss=1.0)
    preds = torch.cat([lg.argmax(1) for lg, _ in batches])
    targets = torch.cat([t for _, t in batches])
    result = meter.compute()
    for k in range(3):  # Dice over the whole set, not a mean over batches
        tp = int(((preds == k) & (targets == k)).sum())
        fp = int(((preds == k) & (targets != k)).sum())
        fn = int(((preds != k) & (targets == k)).sum())
        assert result["dice"][k] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert result["iou"][k] == pytest.approx(tp / (tp + fp + fn))
    assert result["pixel_accuracy"] == pytest.approx(float((preds == targets).double().mean()))
    other = SegmentationMeter(3)
    other.load_merged(meter.merge_tensor())
    assert other.compute() == result


def test_mask_size_differing_from_image_is_refused():
    logits = torch.randn(1, 3, 8, 9)
    with pytest.raises(ValueError, match=r"target has shape \(1, 8, 8\).*mask size differs from its image"):
        DiceCELoss()(logits, torch.zeros(1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="target has shape"):
        SegmentationMeter(3).update(logits, torch.zeros(1, 9, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="integer class indices"):
        DiceCELoss()(logits, torch.zeros(1, 8, 9))
