"""builtin:shapes: deterministic generation, atomic on-disk cache, dataset samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from oomguard.data import shapes
from oomguard.data.shapes import CLASSES, TARGET_NAMES, cache_root, generate, load_shapes, shapes_datasets


@pytest.fixture
def tiny_shapes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A 40/8-image, 16-pixel builtin set cached under tmp_path."""
    monkeypatch.setenv("OOMGUARD_CACHE", str(tmp_path))
    monkeypatch.setattr(shapes, "TRAIN_COUNT", 40)
    monkeypatch.setattr(shapes, "VAL_COUNT", 8)
    monkeypatch.setattr(shapes, "IMAGE_SIZE", 16)
    return tmp_path


def test_cache_root_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OOMGUARD_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("OOMGUARD_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "oomguard"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "oomguard"


def test_generation_is_deterministic_and_balanced() -> None:
    first, second = generate(30, seed=7, size=16), generate(30, seed=7, size=16)
    assert first.images.dtype == np.uint8 and first.images.shape == (30, 16, 16, 3)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.targets, second.targets)
    assert np.bincount(first.labels, minlength=len(CLASSES)).tolist() == [3] * len(CLASSES)
    assert not np.array_equal(generate(30, seed=8, size=16).images, first.images)


def test_targets_are_area_and_brightness_in_original_units() -> None:
    split = generate(50, seed=1, size=32)
    area, brightness = split.targets[:, 0], split.targets[:, 1]
    assert len(TARGET_NAMES) == split.targets.shape[1] == 2
    # radius is 0.24-0.42 of the side; every shape covers between ~20 and ~600 of the 1024 pixels
    assert area.min() > 20 and area.max() < 600
    assert brightness.min() >= 0 and brightness.max() <= 255
    # sizes are continuous, so areas are (almost) all different
    assert len(np.unique(area.round())) > 40


def test_cache_is_written_once_and_reused(tiny_shapes: Path) -> None:
    first = load_shapes()
    directory = tiny_shapes / f"shapes-v{shapes.VERSION}-40-8-16"
    files = sorted(directory.iterdir())
    assert [f.name for f in files] == sorted(
        ["meta.json"]
        + [f"{split}_{part}.npy" for split in ("train", "val") for part in ("images", "labels", "targets")]
    )
    assert json.loads((directory / "meta.json").read_text())["classes"] == CLASSES
    mtimes = {f.name: f.stat().st_mtime_ns for f in files}
    second = load_shapes()
    assert {f.name: f.stat().st_mtime_ns for f in directory.iterdir()} == mtimes  # not regenerated
    for name in ("train", "val"):
        np.testing.assert_array_equal(first[name].images, second[name].images)
        np.testing.assert_array_equal(first[name].targets, second[name].targets)
    assert len(second["train"].labels) == 40 and len(second["val"].labels) == 8
    assert [p.name for p in tiny_shapes.iterdir()] == [directory.name]  # no temporary left behind


def test_damaged_cache_is_regenerated_identically(tiny_shapes: Path) -> None:
    first = load_shapes()
    directory = tiny_shapes / f"shapes-v{shapes.VERSION}-40-8-16"
    (directory / "train_images.npy").write_bytes(b"torn")
    again = load_shapes()
    np.testing.assert_array_equal(first["train"].images, again["train"].images)
    assert np.load(directory / "train_images.npy").shape == (40, 16, 16, 3)


def test_datasets_give_standardised_samples(tiny_shapes: Path) -> None:
    train, val = shapes_datasets(imgsz=24, dev_samples=None, with_targets=True)
    assert (len(train), len(val)) == (40, 8)
    sample = val[0]
    assert sample["image"].shape == (3, 24, 24) and sample["image"].dtype == torch.float32
    assert sample["label"].dtype == torch.int64 and sample["label"].shape == ()
    assert sample["targets"].shape == (2,)
    standardised = torch.stack([train[i]["targets"] for i in range(len(train))])
    assert torch.allclose(standardised.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(standardised.std(0, unbiased=False), torch.ones(2), atol=1e-4)
    raw = load_shapes()["train"].targets
    np.testing.assert_allclose(train.scale.mean, raw.mean(0), rtol=1e-5)


def test_dev_samples_and_classify_targets(tiny_shapes: Path) -> None:
    train, val = shapes_datasets(imgsz=16, dev_samples=12, with_targets=False)
    assert (len(train), len(val)) == (12, 3)  # val gets dev_samples // 4
    assert train[0]["targets"].shape == (0,)
    again, _ = shapes_datasets(imgsz=16, dev_samples=12, with_targets=False)
    np.testing.assert_array_equal(train.labels, again.labels)  # the same subset every time
