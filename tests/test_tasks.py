import math

import torch

from study.tasks import IGNORE_INDEX, IoU, TopK, build_task


def test_topk_counts_hits():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    m = TopK(3)
    m.update(logits, torch.tensor([1, 2, 0]))
    out = m.compute()
    assert math.isclose(out["top1"], 1 / 3) and out["top5"] == 1.0  # k is capped at the class count


def test_iou_ignores_border_and_averages_classes():
    # 1 image 2x2: predictions bg, fg, fg, bg; targets bg, fg, bg, ignore
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1, 0, 1] = logits[0, 1, 1, 0] = 5.0
    target = torch.tensor([[[0, 1], [0, IGNORE_INDEX]]])
    m = IoU(2)
    m.update(logits, target)
    out = m.compute()
    # class 0: tp 1 (pixel 0), fn 1 (pixel 2 predicted fg) → IoU 1/2; class 1: tp 1, fp 1 → 1/2
    assert math.isclose(out["iou_0"], 0.5) and math.isclose(out["iou_1"], 0.5) and math.isclose(out["miou"], 0.5)


def test_metric_state_round_trip_for_all_reduce():
    m = IoU(2)
    m.update(torch.randn(2, 2, 4, 4), torch.randint(0, 2, (2, 4, 4)))
    other = IoU(2)
    other.load_state(m.state() * 2)
    assert other.compute()["miou"] == m.compute()["miou"]


def test_segmentation_loss_reads_dict_output():
    task = build_task("segment", 2)
    out = {"out": torch.randn(2, 2, 4, 4, requires_grad=True)}
    loss = task.loss(out, torch.full((2, 4, 4), IGNORE_INDEX).index_fill_(1, torch.tensor([0]), 1))
    loss.backward()
    assert torch.isfinite(loss)
