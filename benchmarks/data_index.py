"""What indexing an image folder costs: the first time (every image checked) and again (the cache warm).

Makes ``--images`` small PNGs in ``--classes`` class folders (an ImageFolder
root, so indexing also makes the validation split), then opens the datasets
as ``oomguard train data=DIR`` does, three times, each into a new run
directory except the last:

  first_s            the first indexing: the folder walked, every image checked, the cache written
  second_s           a new run on the same folder: walked, one stat per image against the cache
  resume_s           a resume: the run's own dataset.json read back, nothing walked or checked
  *_images_per_s     images / seconds of each
  checked_first      images opened by the first indexing (all of them), checked_second (none)

Prints one JSON object. Usage: python benchmarks/data_index.py [--images 20000] [--classes 20] [--size 16]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from oomguard.config import Config
from oomguard.data import index as index_module
from oomguard.data import open_datasets
from oomguard.rundir import RunDir


def make_images(root: Path, images: int, classes: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for number in range(images):
        folder = root / f"class_{number % classes:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{number:06d}.png")


def timed_open(data: Path, run: Path) -> tuple[float, int, int]:
    """Seconds to open the datasets into ``run``, the images trained on, and the files opened to check."""
    checked = 0
    real = index_module.ImageIndex.check

    def counting(self: index_module.ImageIndex, paths: list[Path]) -> list[str | None]:
        nonlocal checked
        result = real(self, paths)
        checked += self.checked
        return result

    index_module.ImageIndex.check = counting  # type: ignore[method-assign]
    try:
        run.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        opened = open_datasets(Config(data=str(data)), "folder", 32, with_targets=False, run=RunDir(run))
        seconds = time.perf_counter() - start
    finally:
        index_module.ImageIndex.check = real  # type: ignore[method-assign]
    return seconds, len(opened.train) + len(opened.val), checked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--size", type=int, default=16, help="image side in pixels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oomguard-index-") as scratch:
        root = Path(scratch)
        os.environ["OOMGUARD_CACHE"] = str(root / "cache")
        make_images(root / "data", args.images, args.classes, args.size)
        first, count, checked_first = timed_open(root / "data", root / "run1")
        second, _, checked_second = timed_open(root / "data", root / "run2")
        resume, _, _ = timed_open(root / "data", root / "run2")
    print(json.dumps({
        "images": count, "classes": args.classes, "image_size": args.size,
        "first_s": round(first, 3), "second_s": round(second, 3), "resume_s": round(resume, 3),
        "first_images_per_s": round(count / first), "second_images_per_s": round(count / second),
        "resume_images_per_s": round(count / resume),
        "checked_first": checked_first, "checked_second": checked_second, "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
