"""Classification from image folders, in any layout of :mod:`.layouts`.

Classes are the sub-folders of the training folder, sorted (as
torchvision's ImageFolder numbers them); a validation folder may lack some of
them but may not add new ones. Images are found recursively in each class
folder; other files are ignored (:mod:`.files`).
"""

from __future__ import annotations

import os
from pathlib import Path

from oomguard.data.entries import Entries, Sources
from oomguard.data.files import EXTENSIONS, Found, scan_images, subfolders
from oomguard.data.layouts import FolderLayout, find_folder_layout
from oomguard.data.split import describe_split, stratified_split
from oomguard.errors import DataError

LAYOUTS_HELP = "DATA/<class>/*.jpg, DATA/train/<class>/*.jpg (with val/ or not) or food-101's images/ + meta/"


def class_folders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"data directory {str(folder)!r} not found; the classify layouts are {LAYOUTS_HELP}")
    dirs = subfolders(folder)
    if not dirs:
        raise DataError(f"{str(folder)!r} has no class directories; put images in {folder}/<class>/")
    return dirs


def scan_classes(folder: Path, classes: list[str] | None) -> tuple[Entries, list[str], list[str]]:
    """(entries, classes, ignored files) of one folder of class folders; ``classes`` None: define them."""
    dirs = class_folders(folder)
    is_train = classes is None
    if classes is None:
        classes = [path.name for path in dirs]
    index = {name: number for number, name in enumerate(classes)}
    found: dict[Path, Found] = {}
    for directory in dirs:
        if directory.name not in index:
            raise DataError(
                f"class {directory.name!r} in {str(folder)!r} is not among the {len(classes)} classes of "
                f"train/; add it to train/ or remove it from {folder.name}/"
            )
        found[directory] = scan_images(directory)
    if not any(files.images for files in found.values()):
        raise DataError(f"no images ({', '.join(EXTENSIONS)}) under {str(folder)!r}; add images")
    paths: list[str] = []
    labels: list[int] = []
    ignored: list[str] = []
    for directory, files in found.items():
        if not files.images and is_train:
            raise DataError(
                f"class directory {str(directory)!r} has no images ({', '.join(EXTENSIONS)}); "
                "add images or remove the directory"
            )
        paths += files.images
        labels += [index[directory.name]] * len(files.images)
        ignored += files.others
    return Entries.of(paths, labels), classes, ignored


def _one_class(folder: Path, name: str) -> DataError:
    return DataError(
        f"{str(folder)!r} has one class folder, {name!r}; a classifier needs two or more: point data= at "
        "the folder that holds the class folders"
    )


def read_list(file: Path, images: dict[str, str], root: Path) -> tuple[list[str], list[str]]:
    """A food-101 list (``class/name`` per line): image paths (missing ones too, reported later), classes."""
    paths, names = [], []
    for number, line in enumerate(file.read_text(encoding="utf-8-sig").splitlines(), start=1):
        item = line.strip()
        if not item:
            continue
        name, slash, _ = item.partition("/")
        if not slash or not name:
            raise DataError(f"{str(file)!r} line {number}: expected class/name, got {item!r}")
        paths.append(images.get(item) or os.path.join(root, f"{item}.jpg"))
        names.append(name)
    if not paths:
        raise DataError(f"{str(file)!r} lists no images; expected lines class/name")
    return paths, names


def food101_sources(layout: FolderLayout) -> Sources:
    """food-101 as it ships: ``images/<class>/<name>.jpg`` with ``meta/train.txt`` and ``meta/test.txt``."""
    assert layout.lists is not None
    found = scan_images(layout.train)
    prefix = len(os.fspath(layout.train)) + 1
    images = {path[prefix:].rsplit(".", 1)[0].replace(os.sep, "/"): path for path in found.images}
    train_paths, train_names = read_list(layout.lists[0], images, layout.train)
    val_paths, val_names = read_list(layout.lists[1], images, layout.train)
    classes = sorted(set(train_names))
    if len(classes) < 2:
        raise _one_class(layout.lists[0], classes[0])
    index = {name: number for number, name in enumerate(classes)}
    unknown = sorted(set(val_names) - set(classes))
    if unknown:
        raise DataError(f"{str(layout.lists[1])!r} has class {unknown[0]!r} that meta/train.txt lacks; "
                        "every test class must appear in train")
    train = Entries.of(train_paths, [index[name] for name in train_names])
    val = Entries.of(val_paths, [index[name] for name in val_names])
    return Sources(layout.name, "meta/test.txt", classes, [], train, val, found.others)


def folder_sources(root: Path, val_fraction: float, seed: int) -> Sources:
    """Both splits of the classification dataset under ``root``, in whichever layout it has."""
    if not root.is_dir():
        raise DataError(f"data directory {str(root)!r} not found; the classify layouts are {LAYOUTS_HELP}")
    layout = find_folder_layout(root)
    if layout is None:
        raise DataError(f"data directory {str(root)!r} has no image folders; use {LAYOUTS_HELP}")
    if layout.lists is not None:
        return food101_sources(layout)
    train, classes, ignored = scan_classes(layout.train, None)
    if len(classes) < 2:
        raise _one_class(layout.train, classes[0])
    if layout.val is not None:
        val, _, also_ignored = scan_classes(layout.val, classes)
        return Sources(layout.name, layout.validation or "", classes, [], train, val, ignored + also_ignored)
    train, val = stratified_split(train, classes, val_fraction, seed)
    return Sources(layout.name, describe_split(val_fraction, seed), classes, [], train, val, ignored)

