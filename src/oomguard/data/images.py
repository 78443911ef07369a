"""Datasets of image files on disk, decoded with Pillow, optionally cached in RAM.

Big photos are shrunk right after decoding (to 1.5 times the training size on
the short side), so neither the cache nor a worker ever holds a 12-megapixel
array for a 224-pixel model: decoding memory is what kills laptop runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from oomguard.data.dataset import ImageDataset, TargetScale
from oomguard.errors import DataError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Decoded images keep a short side of at most KEEP_FACTOR * imgsz pixels: enough for a 0.6-area
# crop (0.77 of the side) to be resized down, never up, at about half the memory of 2x.
KEEP_FACTOR = 1.5


def decode(path: Path, imgsz: int) -> np.ndarray:
    """The image at ``path`` as uint8 HxWx3 RGB, short side at most ``KEEP_FACTOR * imgsz``."""
    limit = round(KEEP_FACTOR * imgsz)
    try:
        with Image.open(path) as image:
            image.draft("RGB", (limit, limit))  # JPEG: let the decoder downscale by 2/4/8 for free
            rgb = image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"image file {str(path)!r} cannot be read ({err}); fix or remove it") from None
    short = min(rgb.size)
    if short > limit:
        scale = limit / short
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.array(rgb)  # writable, so torch.from_numpy does not warn


class FileDataset(ImageDataset):
    """Images from a list of files with their labels and raw targets.

    With ``cache=True`` every image is decoded once, here in the main process,
    so loader workers forked later share the decoded arrays instead of each
    decoding (and holding) its own copy.
    """

    def __init__(self, paths: list[Path], labels: np.ndarray, targets: np.ndarray, scale: TargetScale,
                 imgsz: int, cache: bool = False) -> None:
        super().__init__(labels, targets, scale, imgsz)
        self.paths = list(paths)
        self.cached: list[np.ndarray] | None = None
        if cache:
            self.cached = [decode(path, imgsz) for path in self.paths]

    @property
    def cache_bytes(self) -> int:
        return sum(image.nbytes for image in self.cached) if self.cached is not None else 0

    def load_image(self, index: int) -> np.ndarray:
        if self.cached is not None:
            return self.cached[index]
        return decode(self.paths[index], self.imgsz)


def image_files(directory: Path) -> list[Path]:
    """Image files under ``directory`` (recursively, hidden files skipped), sorted."""
    return sorted(
        path for path in directory.rglob("*")
        if path.suffix.lower() in EXTENSIONS and not path.name.startswith(".") and path.is_file()
    )
