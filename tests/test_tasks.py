import math

import pytest
import torch

from study.train.tasks import IGNORE_INDEX, IoU, TopK, build_task


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


def _one_hot_logits(target: torch.Tensor, classes: int) -> torch.Tensor:
    """Logits whose arg-max is `target`, class dimension second (as models return them)."""
    logits = torch.nn.functional.one_hot(target, classes).float() * 5
    return logits.movedim(-1, 1)


@pytest.mark.parametrize("make, classes, target_shape", [(lambda: IoU(2), 2, (2, 4, 4)),
                                                          (lambda: TopK(10), 10, (6,))])
def test_summed_states_equal_one_metric_over_all_ranks_data(make, classes, target_shape):
    """What validate() does across ranks: all-reduce (sum) the states, then compute once. The result
    must be the metric over both ranks' batches together, not either rank's own."""
    target = torch.randint(0, classes, target_shape, generator=torch.Generator().manual_seed(0))
    right = (_one_hot_logits(target, classes), target)  # rank 0 predicts every label
    wrong = (_one_hot_logits((target + 1) % classes, classes), target)  # rank 1 none
    rank0, rank1, together = make(), make(), make()
    rank0.update(*right)
    rank1.update(*wrong)
    together.update(*right)
    together.update(*wrong)
    merged = make()
    merged.load_state(rank0.state() + rank1.state())
    assert merged.compute() == pytest.approx(together.compute())
    assert rank0.compute()[make().name] == 1.0 and merged.compute()[make().name] < 1.0


def test_segmentation_loss_reads_dict_output_and_skips_ignored_pixels():
    """The loss of DeepLabV3's {"out": logits} is the mean cross-entropy over the labelled pixels only:
    trimap borders (IGNORE_INDEX) change neither the loss, whatever the logits there, nor the gradient."""
    task = build_task("segment", 2)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 4, 4, generator=g)
    target = torch.randint(0, 2, (2, 4, 4), generator=g)
    border = torch.zeros(2, 4, 4, dtype=torch.bool)
    border[:, 0, :] = border[:, :, -1] = True  # a border band on every image
    with_border = target.masked_fill(border, IGNORE_INDEX)

    # by hand: -log softmax of the true class, averaged over the pixels that are not border
    picked = torch.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    expected = -picked[~border].mean()
    out = {"out": logits.clone().requires_grad_(True)}
    loss = task.loss(out, with_border)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() != pytest.approx(task.loss({"out": logits}, target).item(), rel=1e-3)  # the border counted

    wild = logits.clone()
    wild[:, :, border[0]] = torch.tensor([[50.0], [-50.0]]).expand(2, int(border[0].sum()))  # class 0 far ahead there
    assert task.loss({"out": wild}, with_border).item() == pytest.approx(loss.item(), rel=1e-6)
    loss.backward()
    assert torch.all(out["out"].grad.movedim(1, -1)[border] == 0)  # ignored pixels get no gradient
