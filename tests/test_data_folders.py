"""The folder layouts people already have, the split made when there is no val/, and what indexing records."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oomguard.config import Config
from oomguard.data import find_layout, open_datasets
from oomguard.data.entries import Entries
from oomguard.data.folder import folder_sources
from oomguard.data.images import FileDataset
from oomguard.data.split import stratified_split, val_count
from oomguard.errors import DataError
from oomguard.events import Data as DataEvent
from oomguard.events import EventLog, load_events
from oomguard.rundir import RunDir


@pytest.fixture(autouse=True)
def _cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OOMGUARD_CACHE", str(tmp_path / "cache"))


def image(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (value, 255 - value, 30)).save(path)
    return path


def classes_tree(root: Path, counts: dict[str, int]) -> Path:
    for name, count in counts.items():
        for i in range(count):
            image(root / name / f"{name}_{i:03d}.png", 10 * i % 250)
    return root


def opened(root: Path, run: RunDir | None = None, **keys: object
           ) -> tuple[FileDataset, FileDataset, list[str]]:
    config = Config(data=str(root), **keys)  # type: ignore[arg-type]
    result = open_datasets(config, "folder", 8, with_targets=False, run=run)
    assert isinstance(result.train, FileDataset) and isinstance(result.val, FileDataset)
    return result.train, result.val, result.classes


def names(dataset: FileDataset, root: Path) -> list[str]:
    return [path.relative_to(root).as_posix() for path in dataset.paths]


def test_class_folders_directly_train_with_a_stratified_split(tmp_path: Path) -> None:
    root = classes_tree(tmp_path / "flowers", {"daisy": 20, "rose": 10, "tulip": 3})
    (root / "daisy" / "notes.txt").write_text("picked in May")
    (root / "Thumbs.db").write_bytes(b"\0" * 16)
    (root / ".DS_Store").write_bytes(b"\0" * 16)
    image(root / "__MACOSX" / "daisy" / "._daisy_000.png")  # a macOS archive's shadow folder: not a class
    assert find_layout(str(root)) == "folder"
    train, val, classes = opened(root)
    assert classes == ["daisy", "rose", "tulip"]
    assert np.bincount(val.labels).tolist() == [2, 1, 1]  # 10% of each class, at least one
    assert np.bincount(train.labels).tolist() == [18, 9, 2]
    assert not set(train.paths) & set(val.paths)
    again_train, again_val, _ = opened(root)
    assert again_train.paths == train.paths and again_val.paths == val.paths  # seeded: the same split
    _, other_val, _ = opened(root, seed=1)
    assert set(other_val.paths) != set(val.paths)
    assert np.bincount(other_val.labels).tolist() == [2, 1, 1]
    _, wider, _ = opened(root, val_fraction=0.5)
    assert np.bincount(wider.labels).tolist() == [10, 5, 2]


def test_the_split_depends_on_the_files_not_on_their_listing_order_or_other_classes() -> None:
    paths = [Path(f"/d/{name}/{i}.png") for name in ("a", "b") for i in range(30)]
    entries = Entries.of(paths, [0] * 30 + [1] * 30)
    _, val = stratified_split(entries, ["a", "b"], 0.2, seed=7)
    shuffled = np.random.default_rng(3).permutation(60)
    _, val_shuffled = stratified_split(entries.take(shuffled), ["a", "b"], 0.2, seed=7)
    assert sorted(val.paths) == sorted(val_shuffled.paths)
    only_a = Entries.of(paths[:30], [0] * 30)
    _, val_a = stratified_split(only_a, ["a"], 0.2, seed=7)
    assert sorted(val_a.paths) == sorted(p for p in val.paths if p.startswith("/d/a/"))
    assert [val_count(n, 0.1) for n in (0, 1, 2, 5, 15, 16, 100)] == [0, 0, 1, 1, 2, 2, 10]
    assert val_count(3, 0.9) == 2  # never a whole class


def test_train_only_and_the_validation_folder_names_of_ultralytics_and_timm(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    classes_tree(root / "train", {"cat": 10, "dog": 10})
    train, val, _ = opened(root)
    assert (len(train), len(val)) == (18, 2)  # no val/: a split of train/
    assert all(path.parent.parent.name == "train" for path in train.paths + val.paths)
    classes_tree(root / "test", {"cat": 1, "dog": 2})
    assert folder_sources(root, 0.1, 0).validation == "test/ (there is no val/, valid/ or validation/)"
    train, val, _ = opened(root)
    assert (len(train), names(val, root)) == (20, ["test/cat/cat_000.png", "test/dog/dog_000.png",
                                                   "test/dog/dog_001.png"])
    for name in ("validation", "valid", "val"):  # preferred over test/, and val/ over the others
        classes_tree(root / name, {"cat": 1})
        _, val, _ = opened(root)
        assert names(val, root) == [f"{name}/cat/cat_000.png"]


def food101(root: Path) -> Path:
    """food-101's shape: images/<class>/<id>.jpg, meta/train.txt and meta/test.txt of ``class/id``."""
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for name in ("apple_pie", "baby_back_ribs", "baklava"):
        for i in range(5):
            ident = f"{100 + i}"
            path = root / "images" / name / f"{ident}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 12), (40 * i, 20, 200)).save(path)
            lines["test" if i == 4 else "train"].append(f"{name}/{ident}")
    (root / "meta").mkdir()
    (root / "meta" / "classes.txt").write_text("apple_pie\nbaby_back_ribs\nbaklava\n")
    for split, items in lines.items():
        (root / "meta" / f"{split}.txt").write_text("\n".join(items) + "\n")
    (root / "README.txt").write_text("Food-101")
    return root


def test_food101_trains_as_it_ships(tmp_path: Path) -> None:
    root = food101(tmp_path / "food-101")
    assert find_layout(str(root)) == "folder"
    train, val, classes = opened(root)
    assert classes == ["apple_pie", "baby_back_ribs", "baklava"]
    assert (len(train), len(val)) == (12, 3)
    assert names(val, root) == ["images/apple_pie/104.jpg", "images/baby_back_ribs/104.jpg",
                                "images/baklava/104.jpg"]
    assert val.labels.tolist() == [0, 1, 2]
    with open(root / "meta" / "train.txt", "a") as file:
        file.write("baklava/999\n")  # listed but not there: reported like a corrupt image
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    train, _, _ = opened(root, run=run)
    assert len(train) == 12
    with open(run.skipped, newline="") as file:
        assert list(csv.DictReader(file)) == [{"image": "images/baklava/999.jpg", "split": "train",
                                               "reason": "not found"}]


def test_layout_errors_say_what_to_do(tmp_path: Path) -> None:
    lonely = tmp_path / "one"
    classes_tree(lonely / "images", {"cat": 2})
    with pytest.raises(DataError) as err:
        opened(lonely)
    assert str(err.value) == (f"{str(lonely)!r} has one class folder, 'images'; a classifier needs two or "
                              "more: point data= at the folder that holds the class folders")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing here")
    with pytest.raises(DataError) as err:
        find_layout(str(empty))
    assert "has neither train.csv nor image folders" in str(err.value)


def test_unreadable_images_are_left_out_listed_and_announced_or_refused_with_strict_data(tmp_path: Path
                                                                                          ) -> None:
    root = classes_tree(tmp_path / "data" / "train", {"a": 6, "b": 6}).parent
    classes_tree(root / "val", {"a": 2, "b": 2})
    bad = root / "train" / "a" / "a_002.png"
    bad.write_bytes(bad.read_bytes()[:-20])  # cut inside its last data chunk
    (root / "val" / "b" / "b_001.png").write_text("not a png")
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    with pytest.raises(DataError) as err:
        opened(root, run=run, strict_data=True)
    assert str(err.value) == (
        "strict_data=true: 2 images cannot be read: train/a/a_002.png (image file is truncated), "
        f"val/b/b_001.png (not an image Pillow can read); all are listed in {run.skipped}; fix or remove "
        "them, or set strict_data=false to train without them"
    )
    assert not run.dataset.exists()
    events, said = EventLog(run.events), []
    result = open_datasets(Config(data=str(root)), "folder", 8, with_targets=False, run=run)
    result.summary.announce(events, said.append)
    assert (len(result.train), len(result.val)) == (11, 3)
    assert bad not in result.train.paths  # type: ignore[attr-defined]
    assert said == [
        f"data: train/ and val/ (DATA/train/<class>/, DATA/val/<class>/) in {root}: 2 classes, 11 train / "
        "3 val images; validation: val/",
        "warning: 2 images cannot be read and are left out: train/a/a_002.png (image file is truncated), "
        f"val/b/b_001.png (not an image Pillow can read); all are listed in {run.skipped}",
    ]
    (event,) = [e for e in load_events(run.events) if isinstance(e, DataEvent)]
    assert (event.action, event.train, event.val, event.skipped) == ("index", 11, 3, 2)
    assert event.skipped_files == ["train/a/a_002.png", "val/b/b_001.png"]
    assert event.listed_in == str(run.skipped)


def test_a_resume_reads_the_recorded_dataset_even_after_files_changed(tmp_path: Path) -> None:
    root = classes_tree(tmp_path / "photos", {"x": 10, "y": 10})
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    train, val, _ = opened(root, run=run)
    record = json.loads(run.dataset.read_text())
    assert record["train"]["image"] == names(train, root) and record["val"]["label"] == val.labels.tolist()
    image(root / "x" / "x_new.png")  # added since: not in this run
    (root / "y" / "y_005.png").unlink()  # gone since: still at its place, skipped when loaded
    again_train, again_val, _ = opened(root, run=run, val_fraction=0.5, seed=4)
    assert again_train.paths == train.paths and again_val.paths == val.paths
    moved = tmp_path / "moved"
    root.rename(moved)  # the dataset moved: data= its new place
    moved_train, _, _ = opened(moved, run=run)
    assert names(moved_train, moved) == names(train, root)


def test_a_resume_on_a_folder_without_the_recorded_images_is_refused(tmp_path: Path) -> None:
    root = classes_tree(tmp_path / "photos", {"x": 5, "y": 5})
    other = classes_tree(tmp_path / "other", {"p": 5, "q": 5})
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    opened(root, run=run)
    with pytest.raises(DataError) as err:
        opened(other, run=run)
    assert str(err.value) == (
        f"none of the images recorded in {run.dataset} is under {str(other)!r} (such as "
        f"{str(other / 'x' / 'x_000.png')!r}); resume with data= the folder the run started on, or where it "
        "moved")
