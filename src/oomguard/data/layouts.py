"""Which folder layout of a classification dataset ``data=`` points at: the ones people already have.

================================  =================================================================
``DATA/train/<class>/*``          with ``val/``, ``valid/`` or ``validation/`` (ultralytics, timm,
                                  torchvision's ImageFolder pairs), else ``test/``, else a split
``DATA/images/<class>/*``         with ``meta/train.txt`` and ``meta/test.txt`` (food-101 as it
                                  ships: lines ``class/name`` without the extension)
``DATA/<class>/*``                class folders directly (an ImageFolder root): a split
================================  =================================================================

A split is made from the training images (:mod:`.split`) when the layout has
no validation images of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from oomguard.data.files import subfolders

TRAIN = "train"
VAL_NAMES = ("val", "valid", "validation")  # the validation folder, by preference
TEST = "test"  # validates when there is no validation folder


@dataclass(frozen=True)
class FolderLayout:
    """Where the training and validation images of a classification dataset are."""

    root: Path
    train: Path  # the folder of class folders (food-101: images/)
    val: Path | None  # the validation folder of class folders; None: split the training images
    lists: tuple[Path, Path] | None = None  # food-101's meta/train.txt and meta/test.txt

    @property
    def name(self) -> str:
        """The layout in words, for the console and the ``data`` event."""
        if self.lists is not None:
            return "food-101 (images/<class>/ listed by meta/train.txt and meta/test.txt)"
        if self.train == self.root:
            return "class folders (DATA/<class>/)"
        if self.val is None:
            return "train/ only (DATA/train/<class>/)"
        return f"train/ and {self.val.name}/ (DATA/train/<class>/, DATA/{self.val.name}/<class>/)"

    @property
    def validation(self) -> str | None:
        """Where validation images come from, in words; None when they are split from train."""
        if self.lists is not None:
            return "meta/test.txt"
        if self.val is None:
            return None
        if self.val.name == TEST:
            return "test/ (there is no val/, valid/ or validation/)"
        return f"{self.val.name}/"


def find_folder_layout(root: Path) -> FolderLayout | None:
    """The layout of ``root``, or None when it holds no folders at all (not a classification dataset)."""
    if (root / TRAIN).is_dir():
        found = [root / name for name in (*VAL_NAMES, TEST) if (root / name).is_dir()]
        return FolderLayout(root, root / TRAIN, found[0] if found else None)
    lists = (root / "meta" / "train.txt", root / "meta" / "test.txt")
    if (root / "images").is_dir() and all(path.is_file() for path in lists):
        return FolderLayout(root, root / "images", None, lists)
    if subfolders(root):
        return FolderLayout(root, root, None)
    return None
