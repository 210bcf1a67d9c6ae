"""Small offline datasets, made deterministically, in the real on-disk layouts.

They let the whole pipeline run on a laptop with no download. Each one carries a signal a
network can learn, so the curves mean something, and noise, so that it is not trivial.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from clipbench.progress import tqdm


def build(out: Path, make) -> dict:
    """Run ``make(folder)`` in a temporary sibling, then move it into place as ``out/data``;
    returns ``make``'s description with ``root`` and ``source``.

    A crash leaves nothing that looks finished.
    """
    data_dir = out / "data"
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=out))
    try:
        info = make(tmp) or {}
        if data_dir.exists():
            shutil.rmtree(data_dir)
        tmp.rename(data_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    # Relative to the manifest, so the prepared folder can move (or be restored by DVC).
    return {**info, "root": "data", "source": "synthetic"}


def _class_styles(num_classes: int, rng: np.random.Generator) -> list[dict]:
    # Orientation and colour both identify a class, so a crop or a flip keeps the label.
    angles = np.linspace(0, np.pi, num_classes, endpoint=False)
    rng.shuffle(angles)
    styles = []
    for c in range(num_classes):
        styles.append({
            "angle": float(angles[c]),
            "freq": float(rng.uniform(0.08, 0.25)),
            "color": rng.uniform(0.15, 0.85, size=3),
            "accent": rng.uniform(0.0, 1.0, size=3),
        })
    return styles


def _draw(style: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = style["angle"] + rng.normal(0, 0.12)
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(style["freq"] * (np.cos(angle) * xx + np.sin(angle) * yy) * 2 * np.pi / 4 + phase)
    img = style["color"][None, None, :] * (0.75 + 0.25 * wave[..., None])
    # A blob of the class' accent colour at a random place.
    cy, cx = rng.uniform(0.2, 0.8, size=2) * size
    r = rng.uniform(0.1, 0.25) * size
    blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < r ** 2
    img[blob] = 0.5 * img[blob] + 0.5 * style["accent"]
    img = img * rng.uniform(0.7, 1.2) + rng.normal(0, 0.12, size=img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_imagenet100(out: Path, wnids: list[str], num_classes: int = 10, train_per_class: int = 40,
                     val_per_class: int = 10, image_size: int = 64, seed: int = 0) -> dict:
    """Write ``out/train/<wnid>/<wnid>_<i>.JPEG`` and ``out/val/<wnid>/ILSVRC2012_val_<n>.JPEG``.

    The classes are the first ``num_classes`` of ``wnids`` (the caller passes the thesis'
    class list), so file names look like the real ImageNet-100 (the Kaggle layout) and the
    same code reads both.
    """
    if len(wnids) < num_classes:
        raise ValueError(f"num_classes={num_classes} exceeds the {len(wnids)} known wnids")
    wnids = list(wnids[:num_classes])
    rng = np.random.default_rng(seed)
    styles = _class_styles(num_classes, rng)
    val_index = 0
    total = num_classes * (train_per_class + val_per_class)
    with tqdm(total=total, desc="imagenet100 (synthetic)", unit="img") as bar:
        for split, per_class in (("train", train_per_class), ("val", val_per_class)):
            for c, wnid in enumerate(wnids):
                folder = out / split / wnid
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(per_class):
                    if split == "train":
                        name = f"{wnid}_{i}.JPEG"
                    else:
                        val_index += 1
                        name = f"ILSVRC2012_val_{val_index:08d}.JPEG"
                    Image.fromarray(_draw(styles[c], image_size, rng)).save(folder / name, "JPEG", quality=90)
                    bar.update()
    return {"classes": wnids}


# --- Pascal VOC 2012 segmentation -------------------------------------------------------------

VOC_NUM_CLASSES = 21
VOC_VOID = 255


def voc_palette() -> list[int]:
    """The VOC devkit's colour map (``labelcolormap``): 256 RGB triples, flattened for PIL."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


_SHAPES = ("ellipse", "rectangle", "triangle", "pentagon")


def _voc_styles(classes: list[int], rng: np.random.Generator) -> dict[int, dict]:
    styles = {}
    for i, c in enumerate(classes):
        styles[c] = {
            "shape": _SHAPES[i % len(_SHAPES)],
            "color": rng.uniform(0.1, 0.9, size=3),
            "angle": float(rng.uniform(0, np.pi)),
            "freq": float(rng.uniform(0.15, 0.45)),
        }
    return styles


def _shape_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import ImageDraw

    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    w, h = rng.uniform(0.3, 0.65, size=2) * size
    cx, cy = rng.uniform(w / 2, size - w / 2), rng.uniform(h / 2, size - h / 2)
    box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    if kind == "ellipse":
        draw.ellipse(box, fill=1)
    elif kind == "rectangle":
        draw.rectangle(box, fill=1)
    else:
        n = 3 if kind == "triangle" else 5
        rot = rng.uniform(0, 2 * np.pi)
        pts = [(cx + w / 2 * np.cos(rot + 2 * np.pi * k / n), cy + h / 2 * np.sin(rot + 2 * np.pi * k / n)) for k in range(n)]
        draw.polygon(pts, fill=1)
    return np.asarray(canvas, dtype=bool)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    from PIL import ImageFilter

    im = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(2 * radius + 1))
    return np.asarray(im) > 0


def _voc_sample(styles: dict[int, dict], size: int, max_objects: int, border: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # Background: a smooth random gradient, with clutter the network must learn to ignore.
    c0, c1 = rng.uniform(0.2, 0.8, size=3), rng.uniform(0.2, 0.8, size=3)
    t = (np.cos(rng.uniform(0, 2 * np.pi)) * xx + np.sin(rng.uniform(0, 2 * np.pi)) * yy) / size
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    label = np.zeros((size, size), dtype=np.uint8)
    regions: list[np.ndarray] = []
    classes = sorted(styles)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        c = classes[int(rng.integers(len(classes)))]
        st = styles[c]
        m = _shape_mask(st["shape"], size, rng)
        angle = st["angle"] + rng.normal(0, 0.1)
        wave = np.sin(st["freq"] * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.uniform(0, 2 * np.pi))
        tex = st["color"] * rng.uniform(0.8, 1.15) * (0.7 + 0.3 * wave[..., None])
        img[m] = tex[m]
        label[m] = c
        # Later objects occlude earlier ones: only visible outlines get a void band.
        regions = [r & ~m for r in regions] + [m]
    # VOC marks a few-pixel band along every visible object outline as void (255).
    if border > 0:
        band = np.zeros((size, size), dtype=bool)
        for r in regions:
            if r.any():
                band |= _dilate(r, border) & _dilate(~r, border)
        label[band] = VOC_VOID
    img = img + rng.normal(0, 0.06, size=img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), label


def make_voc2012(out: Path, num_train: int = 48, num_val: int = 16, image_size: int = 96,
                 num_classes: int = 6, max_objects: int = 3, border: int = 1, seed: int = 0) -> dict:
    """Write ``out/VOCdevkit/VOC2012/`` as the VOC 2012 release lays out segmentation:
    ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNG, VOC colour map,
    255 = void) and ``ImageSets/Segmentation/{train,val,trainval}.txt``.

    Objects are shapes of ``num_classes`` of the 20 VOC object classes; each class has its own
    shape, colour and stripe texture, on a noisy gradient background.
    """
    if not 1 <= num_classes <= VOC_NUM_CLASSES - 1:
        raise ValueError(f"num_classes={num_classes}: VOC has 20 object classes")
    rng = np.random.default_rng(seed)
    classes = sorted(int(c) for c in rng.choice(np.arange(1, VOC_NUM_CLASSES), size=num_classes, replace=False))
    styles = _voc_styles(classes, rng)
    voc = out / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    splits: dict[str, list[str]] = {"train": [], "val": []}
    n = 0
    with tqdm(total=num_train + num_val, desc="voc2012 (synthetic)", unit="img") as bar:
        for split, count in (("train", num_train), ("val", num_val)):
            for _ in range(count):
                n += 1
                name = f"2012_{n:06d}"
                img, label = _voc_sample(styles, image_size, max_objects, border, rng)
                Image.fromarray(img).save(voc / "JPEGImages" / f"{name}.jpg", "JPEG", quality=90)
                mask = Image.fromarray(label)
                mask.putpalette(palette)  # an "L" image with a palette becomes "P": indices kept
                mask.save(voc / "SegmentationClass" / f"{name}.png")
                splits[split].append(name)
                bar.update()
    sets = voc / "ImageSets" / "Segmentation"
    for split, names in (*splits.items(), ("trainval", splits["train"] + splits["val"])):
        (sets / f"{split}.txt").write_text("".join(f"{x}\n" for x in names))
    return {"classes": classes, "counts": {k: len(v) for k, v in splits.items()}, "image_size": image_size}


# --- DIV2K x4 super-resolution ----------------------------------------------------------------

# Natural photographs shipped inside scikit-image's package (no download). Train and valid
# crops come from different photos, so validation measures generalisation.
DIV2K_TRAIN_PHOTOS = ("astronaut", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "motorcycle")
DIV2K_VALID_PHOTOS = ("chelsea", "rocket")


def _photo(name: str) -> np.ndarray:
    import skimage.data

    try:
        img = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(f"scikit-image's sample photo {name!r} is not available offline ({exc}); "
                           f"reinstall scikit-image (it ships these files in skimage/data)") from exc
    return np.ascontiguousarray(img[..., :3])


def _crops(photos: tuple[str, ...], count: int, hr_size: int, rng: np.random.Generator) -> list[tuple[np.ndarray, dict]]:
    loaded = {p: _photo(p) for p in photos}
    out = []
    for i in range(count):
        name = photos[i % len(photos)]
        img = loaded[name]
        h, w = img.shape[:2]
        if h < hr_size or w < hr_size:
            raise ValueError(f"hr_size={hr_size} is larger than the photo {name!r} ({w}x{h})")
        # Prefer textured crops: flat sky or the black rim of the retina teach nothing.
        best = None
        for _ in range(20):
            y, x = int(rng.integers(0, h - hr_size + 1)), int(rng.integers(0, w - hr_size + 1))
            crop = img[y:y + hr_size, x:x + hr_size]
            score = float(crop.std())
            if best is None or score > best[0]:
                best = (score, crop, {"photo": name, "x": x, "y": y})
            if score > 40:
                break
        out.append((best[1], best[2]))
    return out


def make_div2k(out: Path, train_images: int = 16, valid_images: int = 4, hr_size: int = 128,
               scale: int = 4, seed: int = 0) -> dict:
    """Write DIV2K's layout: ``DIV2K_{train,valid}_HR/0001.png`` and
    ``DIV2K_{train,valid}_LR_bicubic/X4/0001x4.png``, numbered on from 0001 (train) and
    0801 (valid) like the real release.

    HR images are crops of natural photos; LR images are their bicubic x``scale`` reductions
    with PIL's ``Image.BICUBIC`` (antialiased like MATLAB's ``imresize``, which made DIV2K's,
    though not bit-identical to it).
    """
    if hr_size % scale:
        raise ValueError(f"hr_size={hr_size} must be divisible by scale={scale}")
    rng = np.random.default_rng(seed)
    info: dict = {"scale": scale, "hr_size": hr_size, "lr_kernel": "PIL.Image.BICUBIC", "counts": {}, "crops": {}}
    with tqdm(total=train_images + valid_images, desc="div2k (synthetic)", unit="img") as bar:
        for split, photos, count, first in (("train", DIV2K_TRAIN_PHOTOS, train_images, 1),
                                            ("valid", DIV2K_VALID_PHOTOS, valid_images, 801)):
            hr_dir = out / f"DIV2K_{split}_HR"
            lr_dir = out / f"DIV2K_{split}_LR_bicubic" / f"X{scale}"
            hr_dir.mkdir(parents=True, exist_ok=True)
            lr_dir.mkdir(parents=True, exist_ok=True)
            crops = []
            for k, (crop, where) in enumerate(_crops(photos, count, hr_size, rng)):
                stem = f"{first + k:04d}"
                hr = Image.fromarray(crop)
                hr.save(hr_dir / f"{stem}.png")
                hr.resize((hr_size // scale, hr_size // scale), Image.BICUBIC).save(lr_dir / f"{stem}x{scale}.png")
                crops.append({"id": stem, **where})
                bar.update()
            info["counts"][split] = count
            info["crops"][split] = crops
    return info
