"""Running the ``oomguard`` command in a real subprocess, and making tiny datasets for it."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230)}


def oomguard(*args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    """``python -m oomguard ARGS`` in ``cwd``, with the shapes cache kept inside the test's folder."""
    full_env = {**os.environ, "OOMGUARD_CACHE": str(cwd / "cache"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "oomguard", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def _image(colour: tuple[int, int, int], rng: np.random.Generator, size: int = 24) -> Image.Image:
    noise = rng.integers(-40, 40, size=(size, size, 3))
    pixels = np.clip(np.array(colour)[None, None, :] + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def make_folder_dataset(root: Path, per_class: int = 12, seed: int = 0) -> Path:
    """``root/train/<colour>/*.png`` and ``root/val/<colour>/*.png``: the colour is the class."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", max(2, per_class // 3))):
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                _image(colour, rng).save(folder / f"{i}.png")
    return root


def make_table_dataset(root: Path, per_class: int = 12, seed: int = 0) -> Path:
    """``root/train.csv`` and ``root/val.csv``: colour class plus a numeric ``mass`` target."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    masses = {"red": 100.0, "green": 250.0, "blue": 400.0}
    for split, count in (("train", per_class), ("val", max(2, per_class // 3))):
        with open(root / f"{split}.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["image", "label", "mass"])
            for name, colour in COLOURS.items():
                for i in range(count):
                    path = f"images/{split}_{name}_{i}.png"
                    _image(colour, rng).save(root / path)
                    writer.writerow([path, name, masses[name] + float(rng.normal(0, 5))])
    return root
