"""The image check's cache: by path, size and mtime, in the user's cache directory, never a dataset folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from oomguard.data import index as index_module
from oomguard.data.index import ImageIndex, index_file


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("OOMGUARD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def pictures(root: Path, count: int) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = root / f"{i}.png"
        Image.new("RGB", (8, 8), (i, 0, 0)).save(path)
        paths.append(path)
    return paths


def test_a_second_check_opens_no_file_and_a_changed_file_is_checked_again(cache: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch
                                                                          ) -> None:
    root = tmp_path / "data"
    paths = pictures(root, 30)
    first = ImageIndex(root)
    assert first.check(paths) == [None] * 30
    assert first.checked == 30
    first.save()
    assert index_file(root).is_file() and index_file(root).is_relative_to(cache / "index")
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in paths)  # nothing in the dataset

    opened: list[str] = []
    real = index_module.check_image
    monkeypatch.setattr(index_module, "check_image", lambda path: opened.append(str(path)) or real(path))
    second = ImageIndex(root)
    assert second.check(paths) == [None] * 30
    assert (second.checked, opened) == (0, [])

    broken = paths[7]
    data = broken.read_bytes()
    broken.write_bytes(data[:-20])  # a new size: checked again
    os.utime(paths[3], ns=(1, 1))  # the same bytes with another mtime: checked again
    third = ImageIndex(root)
    reasons = third.check(paths)
    assert reasons[7] == "image file is truncated" and reasons.count(None) == 29
    assert sorted(opened) == sorted([str(paths[3]), str(broken)])
    third.save()
    opened.clear()
    fourth = ImageIndex(root)
    assert fourth.check(paths)[7] == "image file is truncated"  # a known bad file is not opened again
    assert opened == []
    assert fourth.check([root / "gone.png"]) == ["not found"]


def test_the_cache_is_per_dataset_folder_and_follows_relative_paths(cache: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    paths = pictures(tmp_path / "a", 3)
    index = ImageIndex(tmp_path / "a")
    index.check(paths)
    index.save()
    assert index_file(tmp_path / "a") != index_file(tmp_path / "b")
    monkeypatch.chdir(tmp_path)
    relative = ImageIndex(Path("a"))
    assert relative.file == index_file(tmp_path / "a")
    assert relative.check([Path("a") / p.name for p in paths]) == [None] * 3
    assert relative.checked == 0


def test_an_unwritable_or_damaged_cache_never_fails_the_indexing(cache: Path, tmp_path: Path) -> None:
    paths = pictures(tmp_path / "d", 4)
    cache.mkdir()
    (cache / "index").write_text("a file where the folder should be")
    index = ImageIndex(tmp_path / "d")
    assert index.check(paths) == [None] * 4
    index.save()  # cannot write: no error, the next run checks again
    (cache / "index").unlink()
    index_file(tmp_path / "d").parent.mkdir(parents=True)
    index_file(tmp_path / "d").write_text("{not json")
    again = ImageIndex(tmp_path / "d")
    assert again.check(paths) == [None] * 4 and again.checked == 4


def test_large_checks_report_progress_where_the_output_is_not_a_terminal(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "PROGRESS_FROM", 10)
    paths = pictures(tmp_path / "many", 12)
    said: list[str] = []
    ImageIndex(tmp_path / "many", said.append).check(paths)
    assert said[0] == "checking 12 images (once: later runs reuse the result)"
    said.clear()
    ImageIndex(tmp_path / "many", said.append).check(paths[:3])
    assert said == []
