"""Segmentation and super-resolution: data layouts, checks that name the file, models, baseline,
and a one-epoch run of each through the engine."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import datasets

from clipbench import config as cfgmod
from clipbench.data.prepare import load_manifest, prepare
from clipbench.data.synthetic import voc_palette
from clipbench.metrics import psnr_per_image
from clipbench import spec as jobspec
from tests._specs import segmentation_spec
from tests._tinydata import VOC_SYN, copy_root

DIV2K_SYN = {"train_images": 4, "valid_images": 2, "hr_size": 48, "seed": 1}


@pytest.fixture(scope="module")
def tiny_div2k(tmp_path_factory):
    out = tmp_path_factory.mktemp("div2k")
    prepare("div2k", {"source": "synthetic", "synthetic": DIV2K_SYN}, out)
    return load_manifest(out / "manifest.json")


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


# --- data ---------------------------------------------------------------------------------

def test_torchvision_reads_the_synthetic_voc_tree(tiny_voc):
    root = Path(tiny_voc["root"])
    assert tiny_voc["counts"] == {"train": 6, "val": 3} and tiny_voc["source"] == "synthetic"
    train = datasets.VOCSegmentation(root, year="2012", image_set="train", download=False)
    val = datasets.VOCSegmentation(root, year="2012", image_set="val", download=False)
    assert len(train) == 6 and len(val) == 3
    img, mask = train[0]
    assert img.mode == "RGB" and mask.mode == "P" and img.size == mask.size == (64, 64)
    assert mask.getpalette()[:3 * 21] == voc_palette()[:3 * 21]
    assert Path(train.images[0]).suffix == ".jpg" and Path(train.masks[0]).suffix == ".png"
    labels = set()
    for i in range(len(train)):
        labels |= set(np.unique(np.asarray(train[i][1])).tolist())
    assert 0 in labels and 255 in labels and labels <= set(range(21)) | {255}
    assert labels - {0, 255} <= set(tiny_voc["classes"])
    sets = root / "VOCdevkit/VOC2012/ImageSets/Segmentation"
    assert len((sets / "trainval.txt").read_text().split()) == 9


def test_synthetic_div2k_has_the_real_names_and_sizes(tiny_div2k):
    root = Path(tiny_div2k["root"])
    assert sorted(p.name for p in (root / "DIV2K_train_HR").iterdir()) == ["0001.png", "0002.png", "0003.png", "0004.png"]
    assert sorted(p.name for p in (root / "DIV2K_valid_HR").iterdir()) == ["0801.png", "0802.png"]
    assert sorted(p.name for p in (root / "DIV2K_valid_LR_bicubic/X4").iterdir()) == ["0801x4.png", "0802x4.png"]
    with Image.open(root / "DIV2K_train_HR/0001.png") as hr, Image.open(root / "DIV2K_train_LR_bicubic/X4/0001x4.png") as lr:
        assert hr.size == (48, 48) and lr.size == (12, 12) and hr.mode == lr.mode == "RGB"
    # Train and valid crops come from different photos.
    photos = {s: {c["photo"] for c in tiny_div2k["crops"][s]} for s in ("train", "valid")}
    assert not photos["train"] & photos["valid"]


@pytest.mark.parametrize("name, syn", [("voc2012", VOC_SYN), ("div2k", DIV2K_SYN)])
def test_synthetic_sets_are_deterministic(tmp_path, name, syn):
    prepare(name, {"source": "synthetic", "synthetic": syn}, tmp_path / "a")
    prepare(name, {"source": "synthetic", "synthetic": syn}, tmp_path / "b")
    prepare(name, {"source": "synthetic", "synthetic": {**syn, "seed": 2}}, tmp_path / "c")
    a, b, c = (_digest(tmp_path / x / "data") for x in "abc")
    assert a == b != c


# --- errors that name the file -----------------------------------------------------------------

def _sr_spec(**task):
    cfg = {
        "run": {"tasks": ["superres"], "methods": ["adam"], "seeds": [0]},
        "engine": {"device": "cpu", "threads": 1},
        "tasks": {"superres": {
            "model": "espcn", "patch_size": 8, "repeat": 2, "epochs": 1, "batch_size": 4, "eval_batch_size": 1,
            "methods": {"adam": {"lr": 1e-3}}, **task}},
    }
    cfgmod.validate(cfg)
    return jobspec.run_spec(cfg, "superres", "adam", 0)


def test_mask_with_labels_outside_voc_names_the_file(tiny_voc, tmp_path):
    from clipbench.tasks import build_task

    root = copy_root(tiny_voc, tmp_path)
    task = build_task(segmentation_spec(), {**tiny_voc, "root": str(root)})
    bad = Path(task.train_set.masks[1])
    arr = np.asarray(Image.open(bad)).copy()
    arr[0, 0] = 30
    im = Image.fromarray(arr)
    im.putpalette(voc_palette())
    im.save(bad)
    task.train_set[0]  # the others still load
    with pytest.raises(ValueError, match=rf"{bad}.*\[30\] outside 0..20 and 255"):
        task.train_set[1]
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(bad)  # a colour mask, not palette indices
    with pytest.raises(ValueError, match=rf"{bad}: mask mode 'RGB'"):
        task.train_set[1]


def test_missing_lr_file_is_named(tiny_div2k, tmp_path):
    from clipbench.tasks import build_task

    root = copy_root(tiny_div2k, tmp_path)
    lr = root / "DIV2K_train_LR_bicubic/X4/0003x4.png"
    lr.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{lr}: missing; it is the x4 LR image of .*0003.png"):
        build_task(_sr_spec(), {**tiny_div2k, "root": str(root)})


def test_hr_size_not_divisible_by_scale_is_named(tiny_div2k, tmp_path):
    from clipbench.data.div2k import find_pairs

    root = copy_root(tiny_div2k, tmp_path)
    hr = root / "DIV2K_valid_HR/0802.png"
    Image.open(hr).crop((0, 0, 46, 48)).save(hr)
    with pytest.raises(ValueError, match=rf"{hr}: size 46x48 is not divisible by the scale 4"):
        find_pairs(root, "valid", 4)


def test_lr_of_the_wrong_size_is_named(tiny_div2k, tmp_path):
    from clipbench.data.div2k import find_pairs

    root = copy_root(tiny_div2k, tmp_path)
    lr = root / "DIV2K_train_LR_bicubic/X4/0002x4.png"
    Image.open(lr).resize((11, 12)).save(lr)
    with pytest.raises(ValueError, match=rf"{lr}: size 11x12, expected 12x12"):
        find_pairs(root, "train", 4)


# --- models ---------------------------------------------------------------------------------

@pytest.mark.parametrize("hw", [(64, 64), (50, 70), (33, 97)])
def test_fcn_output_is_the_input_size(hw):
    from clipbench.models.fcn import fcn32s_tiny

    model = fcn32s_tiny(21).eval()
    assert model(torch.randn(2, 3, *hw)).shape == (2, 21, *hw)
    assert not any("up_kernel" in n for n, _ in model.named_parameters())  # fixed, not trained


def test_fcn_upsampling_is_bilinear():
    from clipbench.models.fcn import STRIDE, bilinear_kernel

    x = torch.randn(1, 2, 4, 5)
    up = F.conv_transpose2d(x, bilinear_kernel(2, STRIDE), stride=STRIDE, padding=STRIDE // 2, groups=2)
    ref = F.interpolate(x, scale_factor=STRIDE, mode="bilinear", align_corners=False)
    assert up.shape == ref.shape
    inner = (..., slice(STRIDE // 2, -STRIDE // 2), slice(STRIDE // 2, -STRIDE // 2))  # away from the border
    assert torch.allclose(up[inner], ref[inner], atol=1e-5)


def test_fcn_upsamples_by_the_matrix_form_of_its_transposed_convolution():
    from clipbench.models.fcn import STRIDE, bilinear_kernel, bilinear_matrix, fcn32s_tiny

    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    up = F.conv_transpose2d(x, bilinear_kernel(3, STRIDE).double(), stride=STRIDE, padding=STRIDE // 2, groups=3)
    matrix = bilinear_matrix(4, STRIDE, torch.float64) @ x @ bilinear_matrix(5, STRIDE, torch.float64).T
    assert matrix.shape == up.shape == (2, 3, 4 * STRIDE, 5 * STRIDE)
    assert torch.allclose(matrix, up, rtol=1e-12, atol=1e-12 * float(up.abs().max()))
    # In the model: the scores' upsampling, cropped to the input (50 x 70 is padded to 64 x 96).
    model = fcn32s_tiny(3).eval()
    torch.nn.init.normal_(model.score.weight)
    image = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        scores = model.score(model.fc7(F.relu(model.fc6(model.encoder(F.pad(image, (0, 26, 0, 14)))))).relu())
        expected = F.conv_transpose2d(scores, bilinear_kernel(3, STRIDE), stride=STRIDE, padding=STRIDE // 2,
                                      groups=3)[..., :50, :70]
        out = model(image)
    assert out.shape == expected.shape
    assert (out - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_vgg16_checkpoint_is_mapped_into_fcn(tmp_path):
    import torchvision
    from clipbench.models.fcn import FCN32s
    from clipbench.tasks.segmentation import load_pretrained

    # torchvision's checkpoint layout, with a narrow classifier so the test stays small.
    src = torchvision.models.vgg16(weights=None).features
    state = {f"features.{k}": v for k, v in src.state_dict().items()}
    state.update({"classifier.0.weight": torch.randn(8, 512 * 49), "classifier.0.bias": torch.randn(8),
                  "classifier.3.weight": torch.randn(8, 8), "classifier.3.bias": torch.randn(8),
                  "classifier.6.weight": torch.randn(1000, 8), "classifier.6.bias": torch.randn(1000)})
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(state, path)
    model = FCN32s(torchvision.models.vgg16(weights=None).features, 512, fc_width=8)
    info = load_pretrained(model, {"model": "fcn32s_vgg16", "pretrained": str(path)})
    assert info == {"pretrained": str(path), "loaded": True}
    assert torch.equal(model.encoder[0].weight, src[0].weight)
    assert torch.equal(model.fc6.weight, state["classifier.0.weight"].view(8, 512, 7, 7))
    assert torch.equal(model.fc7.bias, state["classifier.3.bias"])


def test_missing_pretrained_weights_fail_or_fall_back(tmp_path):
    from clipbench.models.fcn import fcn32s_tiny
    from clipbench.tasks.segmentation import load_pretrained

    missing = tmp_path / "nowhere" / "vgg16-397923af.pth"
    cfg = {"model": "fcn32s_vgg16", "pretrained": str(missing)}
    with pytest.raises(FileNotFoundError, match=rf"not found at {missing}.*if_pretrained_missing: scratch"):
        load_pretrained(fcn32s_tiny(), {**cfg, "if_pretrained_missing": "fail"})
    info = load_pretrained(fcn32s_tiny(), {**cfg, "if_pretrained_missing": "scratch"})
    assert info["loaded"] is False and info["fallback"] == "scratch" and info["pretrained"] == str(missing)
    with pytest.raises(ValueError, match="fcn32s_tiny has no ImageNet weights"):
        load_pretrained(fcn32s_tiny(), {"model": "fcn32s_tiny", "pretrained": "imagenet"})


def test_sr_models_upscale_by_four():
    from clipbench.models.sr import EDSR, build_sr_model

    x = torch.rand(1, 3, 6, 7)
    assert build_sr_model("espcn", 4)(x).shape == (1, 3, 24, 28)
    assert EDSR(4, n_blocks=2, features=8)(x).shape == (1, 3, 24, 28)
    edsr = build_sr_model("edsr_baseline", 4)
    assert sum(isinstance(m, torch.nn.PixelShuffle) for m in edsr.modules()) == 2
    assert 1.3e6 < sum(p.numel() for p in edsr.parameters()) < 1.6e6  # EDSR-baseline x4: 1.5M


# --- super-resolution data and baseline -----------------------------------------------------------

def test_training_patches_are_aligned(tmp_path):
    from clipbench.tasks.superres import DIV2K

    # LR = exact 4x4 box means of HR, so an aligned patch pair satisfies lr == avg_pool(hr).
    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        (tmp_path / f"DIV2K_{split}_HR").mkdir()
        (tmp_path / f"DIV2K_{split}_LR_bicubic/X4").mkdir(parents=True)
        hr = rng.integers(0, 256, size=(40, 56, 3)).astype(np.float64)
        lr = hr.reshape(10, 4, 14, 4, 3).mean((1, 3))
        Image.fromarray(hr.astype(np.uint8)).save(tmp_path / f"DIV2K_{split}_HR/0001.png")
        Image.fromarray(np.round(lr).astype(np.uint8)).save(tmp_path / f"DIV2K_{split}_LR_bicubic/X4/0001x4.png")
    ds = DIV2K(tmp_path, "train", 4, train=True, patch_size=5, repeat=20)
    torch.manual_seed(0)
    for i in range(len(ds)):
        lr, hr = ds[i]
        assert lr.shape == (3, 5, 5) and hr.shape == (3, 20, 20)
        assert torch.allclose(F.avg_pool2d(hr[None], 4)[0], lr, atol=0.6 / 255)
    val = DIV2K(tmp_path, "valid", 4, val_crop=24)
    lr, hr = val[0]
    assert hr.shape == (3, 24, 24) and torch.allclose(F.avg_pool2d(hr[None], 4)[0], lr, atol=0.6 / 255)
    with pytest.raises(IndexError):
        val[1]


def test_bicubic_baseline_is_torch_bicubic_and_beats_gray(tiny_div2k):
    from clipbench.tasks.superres import DIV2K, bicubic_baseline

    result = bicubic_baseline({"scale": 4, "val_crop": None}, tiny_div2k)
    assert result["label"] == "bicubic (no training)" and result["val_images"] == 2
    # EDSR's border on DIV2K: scale + 6 = 10 px at x4, unless tasks.superres.shave says otherwise.
    assert result["shave"] == 10 and "10 px shaved" in result["convention"]
    configured = bicubic_baseline({"scale": 4, "val_crop": None, "shave": 2}, tiny_div2k)
    assert configured["shave"] == 2 and "2 px shaved" in configured["convention"]
    val = DIV2K(tiny_div2k["root"], "valid", 4)
    for res, shave in ((result, 10), (configured, 2)):
        direct, gray = [], []
        for lr, hr in (val[i] for i in range(len(val))):
            up = F.interpolate(lr[None], scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
            direct.append(float(psnr_per_image(up.mul(255).round().div(255), hr[None], shave=shave)))
            gray.append(float(psnr_per_image(torch.full_like(hr[None], 0.5), hr[None], shave=shave)))
        assert res["metrics"]["psnr"] == pytest.approx(np.mean(direct))
        assert res["metrics"]["psnr"] > np.mean(gray) + 5
    assert result["metrics"]["psnr"] != pytest.approx(configured["metrics"]["psnr"])


def test_superres_shave_config_reaches_the_meter_and_is_checked(tiny_div2k):
    from clipbench.tasks import build_task

    for shave, expected in ((None, 10), (3, 3)):
        cfg = cfgmod.with_task_defaults("superres", {"model": "espcn", "epochs": 1, "batch_size": 2, "patch_size": 8,
                                                     "methods": {}, **({} if shave is None else {"shave": shave})})
        task = build_task({"task": "superres", "method": "sgd", "seed": 0, "task_config": cfg}, tiny_div2k)
        assert task.new_meter().shave == expected and task.extra["psnr_shave"] == expected
        assert f"{expected} px shaved" in task.extra["psnr_convention"]
    with pytest.raises(cfgmod.ConfigError, match="shave"):
        cfgmod.with_task_defaults("superres", {"shave": -1})
    with pytest.raises(ValueError, match="val_crop=20 leaves no pixels"):
        cfg = cfgmod.with_task_defaults("superres", {"model": "espcn", "val_crop": 20, "methods": {}})
        build_task({"task": "superres", "method": "sgd", "seed": 0, "task_config": cfg}, tiny_div2k)


def test_baseline_command_writes_json(tiny_div2k, tmp_path):
    from clipbench.cli import main

    manifest = Path(tiny_div2k["root"]).parent / "manifest.json"
    out = tmp_path / "baselines" / "superres.json"
    assert main(["baseline", "superres", "--task-json", json.dumps({"scale": 4}), "--data", str(manifest), "--out", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["method"] == "bicubic" and row["metrics"]["psnr"] > 15


# --- one epoch of each through the engine ----------------------------------------------------------

def test_segmentation_trains_one_epoch(tiny_voc, tmp_path):
    from clipbench.engine.train import train

    result = train(segmentation_spec(), tiny_voc, tmp_path / "run")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["status"] == "ok" and m["main_metric"] == "miou"
    assert 0 <= m["final"]["val"]["miou"] <= 1 and 0 <= m["final"]["val"]["pixel_acc"] <= 1
    assert "iou_background" in m["final"]["val"]
    assert m["task_info"]["pretrained"] == "none" and m["task_info"]["loaded"] is False
    assert result["steps"] == 2


def test_superres_trains_one_epoch(tiny_div2k, tmp_path):
    from clipbench.engine.train import train

    train(_sr_spec(), tiny_div2k, tmp_path / "run")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["status"] == "ok" and m["main_metric"] == "psnr"
    assert {"psnr", "psnr_y", "loss"} <= set(m["final"]["val"]) and m["final"]["val"]["psnr"] > 0
    assert m["task_info"]["model"] == "espcn" and "shaved" in m["task_info"]["psnr_convention"]
    assert m["steps"] == 2


# --- config and report -----------------------------------------------------------------------

def test_thesis_settings_for_the_two_tasks(repo):
    cfg = cfgmod.load(repo / "config/config.yaml", repo / "config/thesis.yaml")
    seg, sr = cfg["tasks"]["segmentation"], cfg["tasks"]["superres"]
    assert seg["model"] == "fcn32s_vgg16" and seg["pretrained"] == "imagenet" and seg["batch_size"] == 32
    for t in (seg, sr):
        ms = t["methods"]
        assert ms["sgd"]["lr"] == 1e-4 and ms["sgd"]["momentum"] == 0.99 and ms["adam"]["lr"] == 1e-4
        assert ms["clipped_sgd"]["lr"] == 1e-4 and ms["clipped_sgd"]["clipping"] == "coordinate"
        assert ms["clipped_sgd"]["clip_level"] == 0.1 and ms["clipped_sgd"]["clip_target"] == "momentum"
        assert ms["clipped_sstm"]["a"] == 1e5 and ms["clipped_sstm"]["L"] == 10
    assert sr["model"] == "edsr_baseline" and sr["batch_size"] == 32
    default = cfgmod.load(repo / "config/config.yaml")
    assert default["run"]["tasks"] == ["classification", "segmentation", "superres"]
    assert default["heavytail"]["enabled"] and default["heavytail"]["runs"] == 200


def test_report_shows_thesis_values_baseline_and_per_class(tmp_path):
    from clipbench.report.collect import collect
    from clipbench.report.render import build_report

    runs = []
    for task, metrics in (("segmentation", {"loss": 1.0, "miou": 0.3, "pixel_acc": 0.8, "iou_background": 0.9, "iou_cat": 0.1}),
                          ("superres", {"loss": 0.01, "psnr": 22.5, "psnr_y": 24.0})):
        for method in ("sgd", "adam"):
            run = tmp_path / "runs" / task / method / "seed0"
            run.mkdir(parents=True)
            (run / "metrics.json").write_text(json.dumps({"task": task, "method": method, "seed": 0, "status": "ok",
                                                          "final": {"train": metrics, "val": metrics}, "epochs": 1,
                                                          "steps": 1, "wall_time_s": 1.0, "images_per_s": 1.0}))
            rows = "".join(f"1,1,{s},{k},{v}\n" for s in ("train", "val") for k, v in metrics.items())
            (run / "history.csv").write_text("step,epoch,split,metric,value\n" + rows)
            runs.append(run)
    collect(runs, tmp_path / "summary.csv")
    (tmp_path / "baselines").mkdir()
    (tmp_path / "baselines" / "superres.json").write_text(json.dumps({"task": "superres", "rows": [
        {"method": "bicubic", "label": "bicubic (no training)", "metrics": {"loss": 0.002, "psnr": 26.7, "psnr_y": 28.1}}]}))
    build_report(tmp_path / "summary.csv", tmp_path / "report", baselines=tmp_path / "baselines")
    html = (tmp_path / "report" / "index.html").read_text()
    tex = (tmp_path / "report" / "report.tex").read_text()
    for text in (html, tex):
        assert "0.578" in text and "0.466" in text  # Table 1, SGD and Adam
        assert "18.046" in text and "17.873" in text  # Table 2, Adam and SGD
        assert "bicubic (no training)" in text and "26.700" in text and "about 26.7 dB" in text
        assert "shaved" in text
    assert "Per-class val IoU" in html and "<td>cat</td>" in html
    figures = sorted(p.name for p in (tmp_path / "report" / "figures").iterdir())
    assert "segmentation_miou.png" in figures and "superres_psnr.png" in figures
    assert not any("iou_" in f for f in figures)


@pytest.mark.parametrize("name", ["espcn", "edsr_baseline"])
def test_residual_sr_model_starts_exactly_at_bicubic(name):
    from clipbench.models.sr import bicubic_upsample, build_sr_model

    torch.manual_seed(0)
    model = build_sr_model(name, 4, residual=True)
    lr = torch.rand(2, 3, 12, 10)
    assert torch.equal(model(lr), bicubic_upsample(lr, 4))
    # ... and it can learn: the zero layer gets a gradient.
    F.mse_loss(model(lr), torch.rand(2, 3, 48, 40)).backward()
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert last.weight.grad.abs().sum() > 0


def test_residual_sr_scores_the_bicubic_baseline_before_training(tiny_div2k):
    from clipbench.tasks import build_task
    from clipbench.tasks.superres import bicubic_baseline
    from clipbench.metrics import SuperResolutionMeter

    cfg = cfgmod.with_task_defaults("superres", {"model": "espcn", "residual": True, "epochs": 1, "batch_size": 2,
                                                 "patch_size": 8, "methods": {}})
    manifest = tiny_div2k
    task = build_task({"task": "superres", "method": "sgd", "seed": 0, "task_config": cfg}, manifest)
    meter = SuperResolutionMeter(4)
    with torch.no_grad():
        for i in range(len(task.val_set)):
            lr, hr = task.val_set[i]
            sr = task.model(lr[None])
            meter.update(sr, hr[None], F.mse_loss(sr, hr[None]))
    assert meter.compute()["psnr"] == bicubic_baseline(cfg, manifest)["metrics"]["psnr"]
