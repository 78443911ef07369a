"""Reading one image file: the check done when a dataset is indexed, and the decode done in training.

What real photo folders hold is turned into 8-bit RGB as torchvision's and
timm's loaders do (``convert("RGB")``: greyscale repeated, alpha and palette
transparency dropped), with two corrections they lack: 16-bit greyscale PNGs
are scaled to 8 bits (``convert`` would clip them to white), and the EXIF
orientation of camera photos is applied (a portrait shot is not trained on
its side).

Big photos are shrunk right after decoding (to 1.5 times the training size on
the short side), so neither the cache nor a worker ever holds a 12-megapixel
array for a 224-pixel model: decoding memory is what kills laptop runs.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from oomguard.errors import DataError

# Decoded images keep a short side of at most KEEP_FACTOR * imgsz pixels: enough for a 0.6-area
# crop (0.77 of the side) to be resized down, never up, at about half the memory of 2x.
KEEP_FACTOR = 1.5
#: What Pillow raises for a file it cannot read as an image (missing, truncated, not an image, too big).
READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError, struct.error,
               Image.DecompressionBombError)
_ORIENTATION = 0x0112
_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # 16-bit greyscale PNGs and TIFFs


class UnreadableImage(DataError):
    """An image file that cannot be decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"image file {self.path!r} cannot be read ({reason}); fix or remove it")


def reason_of(err: BaseException) -> str:
    """Pillow's words for why a file cannot be read, made short (``not found``, ``not an image``)."""
    if isinstance(err, FileNotFoundError):
        return "not found"
    if isinstance(err, UnidentifiedImageError):
        return "not an image Pillow can read"
    if isinstance(err, IsADirectoryError):
        return "a directory, not a file"
    text = str(err) or type(err).__name__
    return "image file is truncated" if text == "Truncated File Read" else text  # a PNG's verify() says so


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: 16-bit grey scaled down (not clipped), palette transparency dropped without a warning."""
    if image.mode in _WIDE_GREY:
        wide = np.asarray(image, dtype=np.int64)
        image = Image.fromarray((np.clip(wide, 0, 65535) >> 8).astype(np.uint8))
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (camera photos), unchanged without one."""
    if image.getexif().get(_ORIENTATION, 1) in (None, 1):
        return image
    turned = ImageOps.exif_transpose(image)
    return turned if turned is not None else image


def _read(path: str | Path, limit: int) -> np.ndarray:
    with Image.open(path) as image:
        image.draft("RGB", (limit, limit))  # JPEG: let the decoder downscale by 2/4/8 for free
        image.load()
        rgb = to_rgb(upright(image))
        short = min(rgb.size)
        if short > limit:
            scale = limit / short
            size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
            rgb = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        return np.array(rgb)  # a copy, made before the file closes; writable, so torch does not warn


def decode(path: str | Path, imgsz: int) -> np.ndarray:
    """The image at ``path`` as uint8 HxWx3 RGB, short side at most ``KEEP_FACTOR * imgsz``."""
    try:
        return _read(path, round(KEEP_FACTOR * imgsz))
    except READ_ERRORS as err:
        raise UnreadableImage(path, reason_of(err)) from None


def check_image(path: str | Path) -> str | None:
    """Why ``path`` cannot be trained on, or None when it reads as an image.

    Cheap: a PNG's chunks are read and their checksums verified (a truncated
    or damaged file fails) without decompressing; a JPEG is decoded at an
    eighth of its size (a truncated one fails); other formats are decoded.
    """
    try:
        with Image.open(path) as image:
            if image.format == "PNG":
                image.verify()
            else:
                image.draft("RGB", (1, 1))
                image.load()
    except READ_ERRORS as err:
        return reason_of(err)
    return None
