"""mIoU and PSNR: by hand, and against torchmetrics."""
import math

import numpy as np
import pytest
import torch

from clipbench.metrics import (SegmentationMeter, SuperResolutionMeter, confusion_matrix, iou_from_confusion,
                               psnr_per_image, quantize, rgb_to_y)


def test_confusion_matrix_and_miou_by_hand():
    # 3 classes; one pixel is void (255) and must count nowhere.
    target = torch.tensor([[0, 0, 1, 1, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 0, 2]])
    cm = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # IoU: class 0: 1/(2+2-1)=1/3; class 1: 2/(2+3-2)=2/3; class 2: 0/(1+0-0)=0.
    assert iou_from_confusion(cm).tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    m = SegmentationMeter(num_classes=3, class_names=("bg", "a", "b"))
    logits = torch.nn.functional.one_hot(pred.clamp(max=2), 3).permute(0, 2, 1).unsqueeze(2).float()  # (1, 3, 1, 6)
    m.update(logits, target.unsqueeze(1), 0.5)
    r = m.compute()
    assert r["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert r["pixel_acc"] == pytest.approx(3 / 5)
    assert r["iou_a"] == pytest.approx(2 / 3) and r["loss"] == 0.5


def test_classes_absent_from_prediction_and_truth_are_left_out_of_the_mean():
    target = torch.tensor([[[0, 0, 1, 1]]])
    pred = torch.tensor([[[0, 0, 1, 0]]])
    m = SegmentationMeter(num_classes=4, class_names=("bg", "a", "b", "c"))
    m.update(torch.nn.functional.one_hot(pred, 4).permute(0, 3, 1, 2).float(), target, 0.0)
    r = m.compute()
    assert r["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert "iou_b" not in r and "iou_c" not in r  # no NaN in the history: it would read as divergence
    assert all(math.isfinite(v) for v in r.values())


def test_labels_outside_the_classes_are_an_error():
    with pytest.raises(ValueError, match="0..2 or 255"):
        confusion_matrix(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[1, 7]]), 3)


def test_miou_matches_torchmetrics_on_random_inputs():
    from torchmetrics.classification import MulticlassJaccardIndex, MulticlassAccuracy

    g = torch.Generator().manual_seed(0)
    m = SegmentationMeter()
    tm_none = MulticlassJaccardIndex(num_classes=21, ignore_index=255, average="none")
    tm_macro = MulticlassJaccardIndex(num_classes=21, ignore_index=255, average="macro")
    tm_acc = MulticlassAccuracy(num_classes=21, ignore_index=255, average="micro")
    for _ in range(3):
        logits = torch.randn(2, 21, 9, 11, generator=g)
        target = torch.randint(0, 21, (2, 9, 11), generator=g)
        target[torch.rand(target.shape, generator=g) < 0.1] = 255
        m.update(logits, target, 1.0)
        for t in (tm_none, tm_macro, tm_acc):
            t.update(logits.argmax(1), target)
    r = m.compute()
    per_class = tm_none.compute()
    ours = iou_from_confusion(m.cm)
    assert torch.allclose(ours.float(), per_class, atol=1e-6)  # every class occurs here
    assert r["miou"] == pytest.approx(float(tm_macro.compute()), abs=1e-6)
    assert r["pixel_acc"] == pytest.approx(float(tm_acc.compute()), abs=1e-6)


def test_psnr_of_a_known_mse():
    target = torch.zeros(1, 3, 8, 8)
    pred = torch.full((1, 3, 8, 8), 0.1)  # MSE 0.01 on data range 1 -> 20 dB
    assert float(psnr_per_image(pred, target)) == pytest.approx(20.0)
    # The same error on 0-255 data is still 20 dB: PSNR is relative to the range.
    assert float(psnr_per_image(pred * 0.5, target)) == pytest.approx(20 + 20 * math.log10(2))


def test_y_of_known_colours():
    colours = torch.tensor([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    y = rgb_to_y(colours.view(5, 3, 1, 1)).flatten()
    assert y.tolist() == pytest.approx([16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966])


def test_border_shave_ignores_errors_at_the_edge():
    target = torch.full((1, 3, 16, 16), 0.5)
    pred = target.clone()
    pred[..., :4, :] = 0.0  # garbage only in the 4-px top band
    pred[..., 4:12, 4:12] += 0.1
    inner = float(psnr_per_image(pred, target, shave=4))
    assert inner == pytest.approx(20.0)  # only the +0.1 centre is seen, everywhere
    assert float(psnr_per_image(pred, target, shave=0)) < inner


def test_psnr_matches_torchmetrics_per_image_and_on_y():
    from torchmetrics.functional.image import peak_signal_noise_ratio

    g = torch.Generator().manual_seed(1)
    hr = torch.rand(3, 3, 20, 24, generator=g)
    sr = (hr + 0.05 * torch.randn(hr.shape, generator=g)).clamp(0, 1)
    s = 4
    ours = psnr_per_image(sr, hr, shave=s)
    ref = peak_signal_noise_ratio(sr[..., s:-s, s:-s].double(), hr[..., s:-s, s:-s].double(), data_range=1.0,
                                  reduction="none", dim=(1, 2, 3))
    assert torch.allclose(ours, ref, atol=1e-9)
    ours_y = psnr_per_image(sr, hr, shave=s, y_only=True)
    ref_y = peak_signal_noise_ratio(rgb_to_y(sr.double())[..., s:-s, s:-s], rgb_to_y(hr.double())[..., s:-s, s:-s],
                                    data_range=255.0, reduction="none", dim=(1, 2, 3))
    assert torch.allclose(ours_y, ref_y, atol=1e-9)
    # The meter averages per-image PSNRs (of the 8-bit, clamped output), not the pooled MSE.
    m = SuperResolutionMeter(scale=4, shave=s)
    m.update(sr[:2], hr[:2], 0.0)
    m.update(sr[2:], hr[2:], 0.0)
    expected = psnr_per_image(quantize(sr), hr, shave=s).mean()
    assert m.compute()["psnr"] == pytest.approx(float(expected))
    assert m.compute()["psnr"] != pytest.approx(float(10 * torch.log10(1 / (quantize(sr) - hr)[..., s:-s, s:-s].pow(2).mean())), abs=1e-4)


def _tm_psnr(sr, hr, shave):
    """torchmetrics' PSNR per image of the 8-bit output, on the images cropped by hand."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    crop = (Ellipsis, slice(shave, -shave), slice(shave, -shave)) if shave else (Ellipsis,)
    return peak_signal_noise_ratio(quantize(sr).double()[crop], hr.double()[crop], data_range=1.0,
                                   reduction="none", dim=(1, 2, 3))


def test_meter_shaves_scale_plus_6_by_default_as_edsr_on_div2k():
    """EDSR's calc_psnr on DIV2K shaves scale + 6 px: 10 at x4; an explicit shave is honoured."""
    g = torch.Generator().manual_seed(2)
    hr = torch.rand(2, 3, 40, 44, generator=g)
    sr = (hr + 0.05 * torch.randn(hr.shape, generator=g)).clamp(0, 1)
    sr[..., :10, :] = 0.0  # garbage in a 10-px top band: seen unless 10 px are shaved
    assert SuperResolutionMeter(4).shave == 10 and SuperResolutionMeter(2).shave == 8
    for shave, kwargs in ((10, {}), (10, {"shave": None}), (3, {"shave": 3}), (0, {"shave": 0})):
        m = SuperResolutionMeter(4, **kwargs)
        assert m.shave == shave
        m.update(sr, hr, 0.0)
        assert m.compute()["psnr"] == pytest.approx(float(_tm_psnr(sr, hr, shave).mean()), abs=1e-5)
    # With the band shaved away the score is far higher than with any of it left in.
    default, narrower = SuperResolutionMeter(4), SuperResolutionMeter(4, shave=9)
    for m in (default, narrower):
        m.update(sr, hr, 0.0)
    assert default.compute()["psnr"] > narrower.compute()["psnr"] + 3
    # ... and a direct numpy computation of the default agrees.
    q, t = quantize(sr).double().numpy()[..., 10:-10, 10:-10], hr.double().numpy()[..., 10:-10, 10:-10]
    direct = np.mean([10 * np.log10(1 / np.mean((a - b) ** 2)) for a, b in zip(q, t)])
    assert default.compute()["psnr"] == pytest.approx(direct, abs=1e-9)


def test_shave_larger_than_the_image_is_named():
    with pytest.raises(ValueError, match="no pixels left"):
        psnr_per_image(torch.rand(1, 3, 20, 24), torch.rand(1, 3, 20, 24), shave=10)
    with pytest.raises(ValueError, match="shave"):
        SuperResolutionMeter(4, shave=-1)
