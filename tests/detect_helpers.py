"""A tiny detection dataset in ultralytics' layout, for the tests that train YOLO for real."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_detection_dataset(root: Path, train: int = 16, val: int = 4, size: int = 64) -> Path:
    """Grey images with red (class 0) and blue (class 1) boxes, in ultralytics' layout, and its data.yaml."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            noise = rng.integers(0, 20, (size, size, 3), dtype=np.uint8)
            pixels = np.full((size, size, 3), 90, np.uint8) + noise
            lines = []
            for _ in range(2):
                w, h = (int(v) for v in rng.integers(size // 5, size // 2, 2))
                x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
                cls = int(rng.integers(0, 2))
                pixels[y:y + h, x:x + w] = (230, 40, 40) if cls == 0 else (40, 40, 230)
                lines.append(f"{cls} {(x + w / 2) / size:.4f} {(y + h / 2) / size:.4f} {w / size:.4f} "
                             f"{h / size:.4f}")
            Image.fromarray(pixels).save(root / "images" / split / f"{i}.png")
            (root / "labels" / split / f"{i}.txt").write_text("\n".join(lines) + "\n")
    data = root / "data.yaml"
    data.write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\n"
                    "names:\n  0: red\n  1: blue\n")
    return data
