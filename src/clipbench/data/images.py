"""Reading image files for the loaders: a file that cannot be decoded is named in the error.

``check_images`` is ``clipbench prepare``'s look at every image a loader will read, whatever
the cache setting: a damaged file or a decompression bomb (a small file declaring a huge
image) stops prepare naming each one, not a training job hours later.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

from PIL import Image

from clipbench.errors import ClipbenchError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SHOWN = 10  # bad files named in one error


class CorruptImageError(ClipbenchError, ValueError):
    """An image file is truncated, not an image, or declares more pixels than the limit."""


def _too_large(path, width: int, height: int) -> CorruptImageError | None:
    # PIL only warns between MAX_IMAGE_PIXELS and twice it, and refuses beyond that naming no file.
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        return CorruptImageError(
            f"{path}: declares {width}x{height} = {width * height:,} pixels, more than the limit of "
            f"{limit:,} (PIL.Image.MAX_IMAGE_PIXELS): a decompression bomb or a damaged header; replace or "
            f"delete the file")
    return None


def _bomb(path, exc: Exception) -> CorruptImageError:
    return CorruptImageError(f"{path}: a decompression bomb ({exc}); replace or delete the file")


def open_rgb(path) -> Image.Image:
    """The image at ``path`` as RGB (what torchvision's default loader returns).

    PIL's own errors (e.g. "image file is truncated", "Image size (900000000 pixels) exceeds
    limit") do not say which of 100k files is bad.
    """
    try:
        with Image.open(path) as im:
            if (err := _too_large(path, *im.size)) is not None:
                raise err
            return im.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise _bomb(path, exc) from exc
    except CorruptImageError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:  # PIL raises all three for damaged files
        raise CorruptImageError(f"{path}: cannot decode the image ({exc}); replace or delete the file") from exc


def image_size(path) -> tuple[int, int]:
    """(width, height) from the header only; a bomb or a file that is no image is named."""
    try:
        with Image.open(path) as im:
            size = im.size
    except Image.DecompressionBombError as exc:
        raise _bomb(path, exc) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(f"{path}: cannot read the image header ({exc}); replace or delete the file") from exc
    if (err := _too_large(path, *size)) is not None:
        raise err
    return size


def load_named(im: Image.Image, path) -> Image.Image:
    """``im.load()``, its errors naming ``path``."""
    try:
        im.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(f"{path}: cannot decode the image ({exc}); replace or delete the file") from exc
    return im


def check_image(path, decode: bool = True) -> str | None:
    """Why ``path`` cannot be trained on (bomb, damage), or None. ``decode`` decodes every
    byte (JPEGs at 1/8 scale, which still reads all of them); otherwise the header only."""
    try:
        image_size(path)
        if decode:
            with Image.open(path) as im:
                if im.format == "JPEG":
                    im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
    except CorruptImageError as exc:
        return str(exc)
    except Image.DecompressionBombError as exc:
        return str(_bomb(path, exc))
    except (OSError, SyntaxError, ValueError) as exc:
        return f"{path}: cannot decode the image ({exc}); replace or delete the file"
    return None


def _check_chunk(job: tuple[list[str], bool]) -> list[str]:
    paths, decode = job
    return [msg for path in paths if (msg := check_image(path, decode)) is not None]


def check_images(paths, *, decode: bool = True, workers: int | None = None, progress: bool = False,
                 what: str = "the dataset") -> int:
    """Check every image of ``paths`` (in ``workers`` processes, default all cores); a
    :class:`CorruptImageError` naming each bad one (the first ``SHOWN``) and what to do.
    Returns how many were checked."""
    from clipbench.progress import tqdm

    paths = [str(p) for p in paths if str(p).lower().endswith(IMAGE_SUFFIXES)]
    chunks = [(paths[i:i + 256], decode) for i in range(0, len(paths), 256)]
    workers = min(workers or os.cpu_count() or 1, len(chunks))
    bad: list[str] = []
    with tqdm(total=len(paths), desc=f"check {what}'s images", unit="img", disable=not progress) as bar:
        if workers <= 1:
            results = map(_check_chunk, chunks)
        else:
            pool = ProcessPoolExecutor(workers)
            results = pool.map(_check_chunk, chunks)
        try:
            for (chunk, _), found in zip(chunks, results):
                bad.extend(found)
                bar.update(len(chunk))
        finally:
            if workers > 1:
                pool.shutdown(cancel_futures=True)
    if bad:
        more = f"\n  ... and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        raise CorruptImageError(
            f"{len(bad)} of {len(paths)} images of {what} cannot be trained on; replace or delete each "
            f"(and rerun `clipbench prepare`):\n  " + "\n  ".join(bad[:SHOWN]) + more)
    return len(paths)
