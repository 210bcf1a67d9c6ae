"""ImageNet-100 in the ImageFolder layout: ``OUT/train/<wnid>/*.JPEG``, ``OUT/val/<wnid>/*.JPEG``.

Three ways in (``prepare``):

* the embedded synthetic set, for a run with no download;
* from the user's ILSVRC2012 archives (the licence forbids downloading them for the
  user): only the 100 selected classes are read out of the 138 GB train tar, and the
  validation images are sorted into class folders with the devkit's ground truth;
* from a tree already on disk (``datasets.imagenet100.root``), used as it is after its
  layout is checked.

Either way the manifest records the class list (``class_list``: first100, cmc, all, or the
user's own wnids), the classes (``wnids``, ``num_classes``), per-class counts and a digest of the file
list; ``clipbench.data.prepare`` writes it last (atomically), so it marks a finished build.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import re
import shutil
import tarfile
import time
from importlib import resources
from pathlib import Path

from clipbench import files
from clipbench.data import MANIFEST, sources, synthetic
from clipbench.data.download import mismatches
from clipbench.data.extract import (
    ARCHIVE_READ_ERRORS,
    CorruptArchiveError,
    check_tar_end,
    check_tar_member,
    corrupt_message,
    extract_tar,
)
from clipbench.errors import ClipbenchError
from clipbench.progress import tqdm

CLASS_LISTS = {
    "first100": "imagenet100_first100.txt",  # the thesis and the authors' code
    "cmc": "imagenet100_cmc.txt",  # Tian et al., CMC; common in later papers
}
SPLITS = ("train", "val")
IMAGE_SUFFIXES = (".jpeg", ".jpg")
# The ImageNet channel statistics every torchvision ImageNet-pretrained model expects.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
TRAIN_TAR, VAL_TAR, DEVKIT = (spec["name"] for spec in sources.files("imagenet"))
BUILT = ".built-from-archives.json"
_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d+)\.JPEG$")


class ImageNetError(ClipbenchError, RuntimeError):
    """ImageNet-100 cannot be built or read; the message says what to do."""


# ------------------------------------------------------------------ class lists


def real_size(cfg: dict) -> tuple[int, int, str]:
    """(training images, validation images, where the numbers come from) of the real dataset
    that ``cfg`` (``datasets.imagenet100``) describes, without it (the cost estimate)."""
    return 130_000, 5_000, "ImageNet-100: at most 1,300 train images per class x 100, 50 val each"


def load_class_list(name: str) -> list[str]:
    """The wnids of a shipped class list (``first100`` or ``cmc``), in file order."""
    try:
        filename = CLASS_LISTS[name]
    except KeyError:
        raise ImageNetError(
            f"unknown ImageNet-100 class list {name!r}; choose one of "
            f"{', '.join(CLASS_LISTS)} (datasets.imagenet100.class_list)"
        ) from None
    text = resources.files("clipbench").joinpath("resources", filename).read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def class_list_name(class_list) -> str:
    """How a class list is named in messages and the manifest (a list of wnids: ``wnids``)."""
    return class_list if isinstance(class_list, str) else "wnids"


def resolve_classes(class_list, root=None) -> list[str]:
    """The wnids ``datasets.imagenet100.class_list`` selects: a shipped list (``first100``,
    ``cmc``), the user's own list of wnids, or ``all``: every class folder under
    ``root/train`` (sorted), so an ImageNet-layout subset such as Imagenette is used whole."""
    if isinstance(class_list, (list, tuple)):
        wnids = [str(w) for w in class_list]
        if not wnids:
            raise ImageNetError("datasets.imagenet100.class_list: an empty list of wnids")
        return wnids
    if class_list != "all":
        return load_class_list(class_list)
    if root is None:
        raise ImageNetError(
            "datasets.imagenet100.class_list: all means every class folder under "
            "datasets.imagenet100.root/train; set root (or choose first100, cmc or a list of wnids)")
    train = Path(root) / "train"
    if not train.is_dir():
        raise ImageNetError(f"{train} is missing; datasets.imagenet100.root must be a folder with "
                            f"train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (class_list: all takes every class folder)")
    wnids = sorted(e.name for e in os.scandir(train) if e.is_dir() and not e.name.startswith("."))
    if len(wnids) < 2:
        raise ImageNetError(f"{train}: class_list all found {len(wnids)} class folder(s); a classifier needs 2 or more")
    return wnids


# ------------------------------------------------------------------ manifest


def index_tree(root, wnids, *, class_list, source: str = "tree") -> dict:
    """Check ``root`` has every wnid under train/ and val/ with images; return the manifest."""
    root = Path(root)
    class_list = class_list_name(class_list)
    hint = (
        f"datasets.imagenet100.root must be a folder with train/<wnid>/*.JPEG and "
        f"val/<wnid>/*.JPEG for each of the {len(wnids)} classes of class list {class_list!r}"
    )
    if not root.is_dir():
        raise ImageNetError(f"{root} does not exist or is not a folder; {hint}.")
    lines = []
    splits = {}
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            raise ImageNetError(f"{split_dir} is missing; {hint}.")
        per_class = {}
        empty = []
        for wnid in wnids:
            class_dir = split_dir / wnid
            files = []
            if class_dir.is_dir():
                for entry in os.scandir(class_dir):
                    if entry.name.lower().endswith(IMAGE_SUFFIXES) and entry.is_file():
                        files.append((entry.name, entry.stat().st_size))
            if not files:
                empty.append(wnid)
                continue
            per_class[wnid] = len(files)
            lines.extend(f"{split}/{wnid}/{name}\t{size}\n" for name, size in files)
        if empty:
            shown = ", ".join(str(split_dir / w) for w in empty[:5])
            more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
            raise ImageNetError(
                f"{len(empty)} class folder(s) missing or without JPEG images: {shown}{more}; "
                f"{hint}."
            )
        splits[split] = {"images": sum(per_class.values()), "per_class": per_class}
    lines.sort()
    digest = hashlib.sha1("".join(lines).encode()).hexdigest()
    return {
        "dataset": "imagenet100",
        "class_list": class_list,
        "wnids": list(wnids),
        "num_classes": len(wnids),
        "root": str(root.resolve()),
        "source": source,
        "splits": splits,
        # Names and sizes, not contents: cheap for 130k files, and catches missing,
        # extra or truncated files.
        "files_sha1": digest,
        "files_sha1_of": "sorted lines 'split/wnid/file<TAB>size_in_bytes\\n'",
    }


def data_files(root, manifest: dict) -> list[str]:
    """What the classification loader reads (relative to ``root``): every JPEG in the
    manifest's class folders of train/ and val/ (``clipbench.data.filelist`` lists them)."""
    root = Path(root)
    out = []
    for split in SPLITS:
        for wnid in manifest["wnids"]:
            class_dir = root / split / wnid
            if class_dir.is_dir():
                out.extend(f"{split}/{wnid}/{entry.name}" for entry in os.scandir(class_dir)
                           if entry.name.lower().endswith(IMAGE_SUFFIXES))
    return out


# ------------------------------------------------------------------ entry points


def prepare(cfg: dict, out: Path, source: str, root: Path | None, **options) -> dict:
    """Make ImageNet-100 ready under ``out`` from ``source``; returns the manifest.

    ``options`` go to ``prepare_imagenet100`` (``wnids``, ``checksums``, ``progress``: tests).
    """
    class_list = cfg.get("class_list", "first100")
    if source == "synthetic":
        first100 = load_class_list("first100")
        made = synthetic.build(out, lambda tmp: synthetic.make_imagenet100(tmp, first100, **cfg.get("synthetic", {})))
        # One description for every source: the tree's own index (the synthetic set
        # always takes the first wnids of first100, whatever class_list says).
        return {**index_tree(out / "data", made["classes"], class_list="first100", source="synthetic"),
                "root": made["root"]}
    if source == "root":
        manifest = prepare_imagenet100(out, root=root, class_list=class_list, **options)
    elif source == "archives":
        manifest = prepare_imagenet100(out, archive_dir=sources.archive_dir("imagenet100", cfg),
                                       class_list=class_list, **options)
    else:
        raise ValueError(f"datasets.imagenet100.source: unknown source {source!r}")
    resize = cfg.get("resize") or {}
    if resize.get("shorter_side"):
        manifest = _resized(manifest, out, resize)
    return manifest


def _resized(manifest: dict, out: Path, resize: dict) -> dict:
    """Point the manifest at a pre-resized copy of the tree (built once, resumable)."""
    side = resize["shorter_side"]
    src = Path(manifest["root"])
    if not src.is_absolute():
        src = out / src
    dst = out / f"resized{side}"
    rate = resize_tree(src, dst, shorter_side=side, quality=resize.get("quality", 90),
                       workers=resize.get("workers"))
    return {**manifest, "root": dst.name, "resized_from": str(src), "resize": dict(resize),
            "resize_images_per_s": rate or None}


def prepare_imagenet100(out, *, root=None, archive_dir=None, class_list="first100",
                        wnids=None, checksums=None, verify_md5: bool = True,
                        progress: bool = True) -> dict:
    """Make ImageNet-100 available; returns its manifest (``clipbench.data.prepare`` writes it).

    With ``root`` the tree there is checked and used in place (``manifest["root"]``).
    Otherwise the tree is built under ``out`` from the archives in ``archive_dir``
    (default ``out/archives``).  ``class_list`` is what ``resolve_classes`` takes;
    ``wnids`` overrides it (tests).
    """
    out = Path(out)
    wnids = list(wnids) if wnids is not None else resolve_classes(class_list, root)
    class_list = class_list_name(class_list)
    if len(set(wnids)) != len(wnids):
        raise ImageNetError(f"class list {class_list!r} has duplicate wnids")
    if root is not None:
        return index_tree(root, wnids, class_list=class_list, source="tree")
    archive_dir = Path(archive_dir) if archive_dir is not None else out / "archives"
    return build_from_archives(archive_dir, out, wnids, class_list=class_list,
                               checksums=checksums, verify_md5=verify_md5, progress=progress)


# ------------------------------------------------------------------ from the archives


def check_archives(archive_dir, *, checksums=None, verify_md5: bool = True) -> dict[str, Path]:
    """The three ILSVRC2012 archives in ``archive_dir``, verified; a clear error otherwise."""
    archive_dir = Path(archive_dir)
    specs = sources.files("imagenet")
    for spec in specs:
        if checksums and spec["name"] in checksums:
            spec.update({k: checksums[spec["name"]].get(k) for k in ("md5", "sha256", "size")})
    missing = [s for s in specs if not (archive_dir / s["name"]).is_file()]
    if missing:
        listing = "\n".join(
            f"  {s['name']}  (md5 {s['md5']}"
            + (f", {s['size']} bytes)" if s.get("size") else ")")
            for s in missing
        )
        raise ImageNetError(
            f"ImageNet-100 is built from the ILSVRC2012 archives, and these are missing "
            f"from {archive_dir}:\n{listing}\n"
            f"They cannot be downloaded automatically: obtain them from "
            f"{sources.SOURCES['imagenet']['homepage']} under the ImageNet licence and put "
            f"them in {archive_dir}. Alternatively set datasets.imagenet100.root to an "
            f"extracted tree with train/<wnid>/*.JPEG and val/<wnid>/*.JPEG."
        )
    paths = {}
    for spec in specs:
        path = archive_dir / spec["name"]
        expected = {"size": spec.get("size")}
        if verify_md5:
            expected.update(md5=spec.get("md5"), sha256=spec.get("sha256"))
        problems = mismatches(path, **expected)
        if problems:
            raise ImageNetError(
                f"{path} does not match its pinned checksum: {'; '.join(problems)}. "
                f"It is incomplete or a different file: download it again from "
                f"{sources.SOURCES['imagenet']['homepage']}."
            )
        paths[spec["name"]] = path
    return paths


def read_devkit(devkit) -> list[str]:
    """The wnid of each validation image, in image order (index 0 is image 1)."""
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # pragma: no cover - scipy comes with scikit-image
        raise ImageNetError(
            "reading the ILSVRC2012 devkit (data/meta.mat) needs scipy: pip install scipy"
        ) from exc
    meta = truth = None
    try:
        with tarfile.open(devkit, "r:*") as tf:
            for member in tf:
                check_tar_member(member, str(devkit))
                if member.name.endswith("data/meta.mat"):
                    meta = tf.extractfile(member).read()
                elif member.name.endswith("data/ILSVRC2012_validation_ground_truth.txt"):
                    truth = tf.extractfile(member).read().decode()
    except ARCHIVE_READ_ERRORS as exc:
        raise CorruptArchiveError(corrupt_message(devkit, exc)) from exc
    if meta is None or truth is None:
        raise ImageNetError(
            f"{devkit} has no data/meta.mat or data/ILSVRC2012_validation_ground_truth.txt; "
            f"it is not the ILSVRC2012 classification devkit ({DEVKIT})."
        )
    synsets = loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
    # Leaves (no children) are the 1000 classes; ILSVRC2012_ID numbers them from 1.
    id_to_wnid = {
        int(s["ILSVRC2012_ID"]): str(s["WNID"])
        for s in synsets.ravel()
        if int(s["num_children"]) == 0
    }
    return [id_to_wnid[int(line)] for line in truth.split()]


def build_from_archives(archive_dir, out, wnids, *, class_list: str, checksums=None,
                        verify_md5: bool = True, progress: bool = True) -> dict:
    """Extract only ``wnids`` from the ILSVRC2012 archives into ``out``; returns the manifest.

    A finished extraction is recorded in ``out/.built-from-archives.json`` (its index), so a
    rerun, e.g. after a crash while resizing, before the manifest exists, skips it.
    """
    out = Path(out)
    done = _finished_build(out)
    if done is not None:
        if done.get("wnids") == list(wnids) and done.get("source") == "archives":
            return done
        raise ImageNetError(
            f"{out} already holds an ImageNet-100 build for class list "
            f"{done.get('class_list')!r} with other classes; use another output folder or "
            f"delete {out} to rebuild."
        )
    paths = check_archives(archive_dir, checksums=checksums, verify_md5=verify_md5)
    val_wnids = read_devkit(paths[DEVKIT])

    staging = out / ".partial-build"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        _extract_train(paths[TRAIN_TAR], staging / "train", wnids, progress)
        _extract_val(paths[VAL_TAR], staging / "val", wnids, val_wnids, progress)
        for split in SPLITS:
            target = out / split
            if target.exists():
                shutil.rmtree(target)  # from a crashed build: no manifest, not trusted
            os.replace(staging / split, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest = index_tree(out, wnids, class_list=class_list, source="archives")
    files.write_json(out / BUILT, manifest)
    return manifest


def _finished_build(out: Path) -> dict | None:
    # A folder built before the marker existed has only the manifest, written after it.
    for name in (BUILT, MANIFEST):
        if (out / name).is_file():
            return files.read_json(out / name)
    return None


def _extract_train(train_tar: Path, dest: Path, wnids, progress: bool) -> None:
    wanted = set(wnids)
    found = set()
    label = str(train_tar)
    try:
        with tarfile.open(train_tar, "r:*") as outer, tqdm(
            total=len(wanted), desc="ImageNet-100 train classes", unit="class",
            disable=not progress,
        ) as bar:
            for member in outer:
                check_tar_member(member, label)
                wnid = Path(member.name).name.removesuffix(".tar")
                if not member.isfile() or wnid not in wanted or wnid in found:
                    continue
                inner_label = f"{label}:{member.name}"
                with tarfile.open(fileobj=outer.extractfile(member), mode="r:") as inner:
                    extract_tar(inner, dest / wnid, inner_label,
                                select=lambda m: m.isfile(),
                                rename=lambda m: Path(m.name).name)
                found.add(wnid)
                bar.update(1)
            check_tar_end(outer, label)
    except ARCHIVE_READ_ERRORS as exc:
        raise CorruptArchiveError(corrupt_message(train_tar, exc)) from exc
    missing = sorted(wanted - found)
    if missing:
        raise ImageNetError(
            f"{train_tar} has no per-class archive for {len(missing)} selected class(es): "
            f"{', '.join(m + '.tar' for m in missing[:10])}. Check the class list and that "
            f"the archive is the ILSVRC2012 training set."
        )


def _extract_val(val_tar: Path, dest: Path, wnids, val_wnids: list[str], progress: bool) -> None:
    wanted = set(wnids)

    def wnid_of(member) -> str | None:
        match = _VAL_NAME.search(member.name)
        if not match or not member.isfile():
            return None
        index = int(match.group(1)) - 1
        return val_wnids[index] if 0 <= index < len(val_wnids) else None

    with tarfile.open(val_tar, "r:*") as tf:
        extract_tar(tf, dest, str(val_tar), select=lambda m: wnid_of(m) in wanted,
                    rename=lambda m: f"{wnid_of(m)}/{Path(m.name).name}", progress=progress)


# ------------------------------------------------------------------ resizing


def resize_tree(src, dst, shorter_side: int = 256, quality: int = 90, workers=None,
                progress: bool = True) -> float:
    """Copy every JPEG under ``src`` to ``dst`` (same relative path) with its shorter side
    reduced to ``shorter_side``; smaller images are copied unchanged.  Existing outputs
    are skipped, so an interrupted run resumes.  Returns images processed per second."""
    src, dst = Path(src), Path(dst)
    jobs = []
    for path in sorted(src.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            out = dst / path.relative_to(src)
            if not out.exists():
                jobs.append((str(path), str(out), shorter_side, quality))
    if not jobs:
        return 0.0
    for parent in {Path(job[1]).parent for job in jobs}:
        parent.mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    start = time.perf_counter()
    bar = tqdm(total=len(jobs), desc=f"resize to {shorter_side}px", unit="img",
               disable=not progress)
    try:
        if workers == 1:
            for job in jobs:
                _resize_one(job)
                bar.update(1)
        else:
            with multiprocessing.Pool(workers) as pool:
                for _ in pool.imap_unordered(_resize_one, jobs, chunksize=16):
                    bar.update(1)
    finally:
        bar.close()
    return len(jobs) / max(time.perf_counter() - start, 1e-9)


def _resize_one(job) -> None:
    from PIL import Image

    from clipbench.data.images import image_size, load_named

    src, dst, shorter, quality = job
    tmp = f"{dst}.tmp{os.getpid()}"
    try:
        image_size(src)  # a bomb or a file that is no image, named
        with files.disk_full_named(dst), Image.open(src) as im:
            w, h = im.size
            if min(w, h) <= shorter:
                load_named(im, src)  # a damaged image is named, not copied
                shutil.copyfile(src, tmp)
            else:
                scale = shorter / min(w, h)
                size = (max(1, round(w * scale)), max(1, round(h * scale)))
                # JPEG decoding at 1/2, 1/4 or 1/8 scale (never below `size`) is much faster.
                im.draft("RGB", size)
                load_named(im, src)
                im.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(
                    tmp, "JPEG", quality=quality)
        os.replace(tmp, dst)  # a crash never leaves a half-written image that looks done
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
