"""Reading image files for the loaders: a file that cannot be decoded is named in the error."""
from __future__ import annotations

from PIL import Image


class CorruptImageError(ValueError):
    """An image file is truncated or not an image."""


def open_rgb(path) -> Image.Image:
    """The image at ``path`` as RGB (what torchvision's default loader returns).

    PIL's own errors (e.g. "image file is truncated") do not say which of 100k files is bad.
    """
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:  # PIL raises all three for damaged files
        raise CorruptImageError(f"{path}: cannot decode the image ({exc}); replace or delete the file") from exc
