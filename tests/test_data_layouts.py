"""Image folders (classify) and csv tables (multitask) built from tiny generated files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oomguard.config import Config
from oomguard.data import find_layout, open_datasets
from oomguard.data.images import FileDataset, decode
from oomguard.errors import ConfigError, DataError

EXTS = "(.jpg, .jpeg, .png, .bmp, .webp)"
LAYOUTS = "DATA/<class>/*.jpg, DATA/train/<class>/*.jpg (with val/ or not) or food-101's images/ + meta/"


@pytest.fixture(autouse=True)
def _cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OOMGUARD_CACHE", str(tmp_path / "cache"))


def folder_datasets(root: Path, imgsz: int, dev_samples: int | None, cache: bool
                    ) -> tuple[FileDataset, FileDataset, list[str]]:
    config = Config(data=str(root), dev_samples=dev_samples, cache=cache)
    opened = open_datasets(config, "folder", imgsz, with_targets=False)
    assert isinstance(opened.train, FileDataset) and isinstance(opened.val, FileDataset)
    return opened.train, opened.val, opened.classes


def table_datasets(root: Path, imgsz: int, dev_samples: int | None, cache: bool, with_targets: bool
                   ) -> tuple[FileDataset, FileDataset, list[str]]:
    config = Config(data=str(root), dev_samples=dev_samples, cache=cache)
    opened = open_datasets(config, "table", imgsz, with_targets=with_targets)
    assert isinstance(opened.train, FileDataset) and isinstance(opened.val, FileDataset)
    return opened.train, opened.val, opened.classes


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (20, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """train: cat x3 (png/jpg), dog x2; val: cat x1, dog x1 (and a stray non-image file)."""
    root = tmp_path / "pets"
    for i in range(3):
        write_image(root / "train" / "cat" / f"c{i}.{'png' if i else 'jpg'}", (200, 30 * i, 0))
    for i in range(2):
        write_image(root / "train" / "dog" / f"d{i}.PNG", (0, 0, 100 + 50 * i))
    write_image(root / "val" / "cat" / "v.jpeg", (210, 0, 0))
    write_image(root / "val" / "dog" / "v.png", (0, 0, 180))
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def table(tmp_path: Path) -> Path:
    root = tmp_path / "food"
    for i in range(4):
        write_image(root / "img" / f"{i}.png", (60 * i, 0, 0))
    (root / "train.csv").write_text(
        "image,label,calories,protein\n"
        "img/0.png,soup,100,1\nimg/1.png,cake,300,3\nimg/2.png,soup,200,2\n"
    )
    (root / "val.csv").write_text("image,label,calories,protein\nimg/3.png,cake,250,4\n")
    return root


def test_folder_layout(folder: Path) -> None:
    assert find_layout(str(folder)) == "folder"
    train, val, classes = folder_datasets(folder, imgsz=8, dev_samples=None, cache=False)
    assert classes == ["cat", "dog"]
    assert (len(train), len(val)) == (5, 2)
    assert train.labels.tolist() == [0, 0, 0, 1, 1]
    sample = val[1]
    assert sample["image"].shape == (3, 8, 8) and sample["label"].item() == 1
    assert sample["targets"].shape == (0,)
    augmented = train[(0, 123)]
    assert augmented["image"].shape == (3, 8, 8)


def test_folder_cache_holds_decoded_images(folder: Path) -> None:
    uncached, _, _ = folder_datasets(folder, imgsz=8, dev_samples=None, cache=False)
    expected = [uncached[(i, 5)]["image"] for i in range(len(uncached))]
    train, _, _ = folder_datasets(folder, imgsz=8, dev_samples=None, cache=True)
    assert train.cached is not None and train.cache_bytes == 5 * 12 * 15 * 3  # 16x20 shrunk to 12x15
    for path in train.paths:
        path.unlink()  # decoded already: the files are no longer read
    for i, image in enumerate(expected):
        assert torch.equal(train[(i, 5)]["image"], image)


def test_decode_shrinks_big_images_and_names_bad_files(tmp_path: Path) -> None:
    big = write_image(tmp_path / "big.jpg", (10, 20, 30), size=(400, 200))
    assert decode(big, imgsz=32).shape == (48, 96, 3)  # short side 1.5 * imgsz, aspect kept
    grey = tmp_path / "grey.png"
    Image.new("L", (10, 10), 77).save(grey)
    assert decode(grey, imgsz=32).shape == (10, 10, 3)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError) as err:
        decode(broken, imgsz=32)
    assert str(err.value).startswith(f"image file {str(broken)!r} cannot be read (")
    assert str(err.value).endswith("); fix or remove it")


def test_folder_errors(tmp_path: Path, folder: Path) -> None:
    def message(root: Path) -> str:
        with pytest.raises(DataError) as err:
            folder_datasets(root, imgsz=8, dev_samples=None, cache=False)
        return str(err.value)

    missing = tmp_path / "nothing"
    assert message(missing) == (
        f"data directory {str(missing)!r} not found; the classify layouts are {LAYOUTS}")
    (tmp_path / "flat" / "train").mkdir(parents=True)
    assert message(tmp_path / "flat") == (
        f"{str(tmp_path / 'flat' / 'train')!r} has no class directories; "
        f"put images in {tmp_path / 'flat' / 'train'}/<class>/"
    )
    (tmp_path / "flat" / "train" / "a").mkdir()
    flat_train = tmp_path / "flat" / "train"
    assert message(tmp_path / "flat") == f"no images {EXTS} under {str(flat_train)!r}; add images"
    (folder / "train" / "bird").mkdir()
    assert message(folder) == (
        f"class directory {str(folder / 'train' / 'bird')!r} has no images {EXTS}; "
        "add images or remove the directory"
    )
    (folder / "train" / "bird").rmdir()
    write_image(folder / "val" / "fox" / "f.png", (1, 2, 3))
    assert message(folder) == (
        f"class 'fox' in {str(folder / 'val')!r} is not among the 2 classes of train/; "
        "add it to train/ or remove it from val/"
    )


def test_table_layout(table: Path) -> None:
    assert find_layout(str(table)) == "table"
    train, val, classes = table_datasets(table, imgsz=8, dev_samples=None, cache=True, with_targets=True)
    assert classes == ["cake", "soup"]
    assert train.labels.tolist() == [1, 0, 1] and val.labels.tolist() == [0]
    assert train.scale.names == ("calories", "protein")
    np.testing.assert_allclose(train.scale.mean, [200, 2])
    np.testing.assert_allclose(train.scale.std, [np.sqrt(20000 / 3), np.sqrt(2 / 3)])
    expected = (np.array([250, 4]) - [200, 2]) / train.scale.std
    np.testing.assert_allclose(val[0]["targets"].numpy(), expected, rtol=1e-6)
    plain, _, _ = table_datasets(table, imgsz=8, dev_samples=None, cache=False, with_targets=False)
    assert plain[0]["targets"].shape == (0,)


def test_table_errors(table: Path) -> None:
    def message() -> str:
        with pytest.raises(DataError) as err:
            table_datasets(table, imgsz=8, dev_samples=None, cache=False, with_targets=True)
        return str(err.value)

    train_csv, val_csv = table / "train.csv", table / "val.csv"
    good = train_csv.read_text()
    train_csv.write_text("path,label\nimg/0.png,soup\n")
    assert message() == f"{str(train_csv)!r} needs columns 'image' and 'label'; it has ['path', 'label']"
    train_csv.write_text("image,label,calories\nimg/0.png,soup,lots\n")
    assert message() == (
        f"{str(train_csv)!r} line 2: column 'calories' has 'lots', not a number; every column besides "
        "image and label is a regression target and must be numeric"
    )
    train_csv.write_text("image,label,calories\nimg/9.png,cake,1\n")  # missing: left out as unreadable
    assert message() == (f"none of the 1 training images under {str(table)!r} can be read "
                         "(img/9.png (not found)); fix the files")
    train_csv.write_text("image,label,calories\nimg/0.png, ,1\n")
    assert message() == f"{str(train_csv)!r} line 2: the label is empty; give every image a class name"
    train_csv.write_text("image,label,calories,protein\n")
    assert message() == f"{str(train_csv)!r} lists no images; add rows image,label,..."
    train_csv.write_text(good)
    val_csv.write_text("image,label,calories,protein\nimg/3.png,pie,1,1\n")
    assert message() == "val.csv has label 'pie' that train.csv lacks; every val class must appear in train"
    val_csv.write_text("image,label,calories\nimg/3.png,cake,1\n")
    assert message() == f"{str(val_csv)!r} lacks target column 'protein' that train.csv has; add it"
    val_csv.unlink()
    assert message() == (
        f"{str(val_csv)!r} not found; the multitask layout is DATA/train.csv and DATA/val.csv with "
        "columns image,label,<targets...>"
    )


def test_find_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        find_layout(str(tmp_path / "nope"))
    assert str(err.value) == (
        f"data directory {str(tmp_path / 'nope')!r} not found; give an existing directory or builtin:shapes"
    )
    with pytest.raises(DataError) as err:
        find_layout(str(tmp_path))
    assert str(err.value) == (
        f"data directory {str(tmp_path)!r} has neither train.csv nor image folders; use {LAYOUTS} "
        "(classify), or DATA/train.csv with columns image,label,<targets> (multitask)"
    )
    with pytest.raises(ConfigError) as err:
        find_layout("builtin:mnist")
    assert str(err.value) == "unknown builtin dataset 'builtin:mnist'; the only one is builtin:shapes"
    assert find_layout("roads.yaml") == "detect"


def test_dev_samples_limits_files(folder: Path) -> None:
    train, val, _ = folder_datasets(folder, imgsz=8, dev_samples=4, cache=False)
    assert (len(train), len(val)) == (4, 1)
