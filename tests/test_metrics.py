import math

import torch

from clipbench.metrics import ClassificationMeter, topk_correct


def test_topk_by_hand():
    # 3 samples, 6 classes. Ranks of the target: 1st, 3rd, 6th.
    output = torch.tensor([
        [0.9, 0.1, 0.0, 0.0, 0.0, 0.0],   # target 0: top-1
        [0.1, 0.5, 0.4, 0.3, 0.0, 0.0],   # target 3: rank 3 -> top-3 and top-5
        [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],   # target 5: rank 6 -> neither
    ])
    target = torch.tensor([0, 3, 5])
    assert topk_correct(output, target, (1, 3, 5)) == [1, 2, 2]
    assert topk_correct(output, target, (1, 2)) == [1, 1]


def test_top5_with_fewer_than_five_classes_counts_all():
    output = torch.randn(4, 3)
    assert topk_correct(output, torch.tensor([0, 1, 2, 0]), (1, 5))[1] == 4


def test_meter_weights_batches_by_size():
    m = ClassificationMeter()
    m.update(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), 1.0)
    m.update(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), torch.tensor([1, 1, 1]), 3.0)
    r = m.compute()
    assert r["top1"] == 2 / 4 and r["top5"] == 1.0 and r["loss"] == (1.0 + 9.0) / 4


def test_empty_meter_is_nan():
    assert all(math.isnan(v) for v in ClassificationMeter().compute().values())


def test_against_torchmetrics():
    torchmetrics = __import__("torchmetrics")
    g = torch.Generator().manual_seed(0)
    output, target = torch.randn(200, 10, generator=g), torch.randint(0, 10, (200,), generator=g)
    for k, ours in zip((1, 5), topk_correct(output, target, (1, 5))):
        acc = torchmetrics.functional.accuracy(output, target, task="multiclass", num_classes=10, top_k=k, average="micro")
        assert math.isclose(ours / 200, float(acc), abs_tol=1e-6)


def test_segmentation_meter_predicts_the_first_of_tied_classes():
    from clipbench.metrics import SegmentationMeter

    scores = torch.zeros(1, 3, 1, 4)
    scores[0, 1, 0, 1] = scores[0, 2, 0, 1] = 1.0  # classes 1 and 2 tie: 1 is the prediction
    scores[0, 2, 0, 2] = 1.0
    scores[0, :, 0, 3] = torch.tensor([0.5, 2.0, 2.0])
    meter = SegmentationMeter(num_classes=3, per_class=False)
    meter.update(scores, torch.tensor([[[0, 1, 2, 1]]]), 0.0)
    assert meter.cm.tolist() == [[1, 0, 0], [0, 2, 0], [0, 0, 1]]
    assert meter.cm.tolist() == torch.bincount(torch.tensor([0, 1, 2, 1]) * 3 + scores.argmax(1).flatten(),
                                               minlength=9).reshape(3, 3).tolist()
