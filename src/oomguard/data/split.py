"""A validation split made from the training images: seeded, stratified, the same for the same files.

Each class gives ``val_fraction`` of its images (rounded, at least one of a
class of two or more, never all of them), chosen by a generator seeded with
the run's ``seed`` and the class's name, over the class's files in sorted
order: the split depends on the files, the fraction and the seed only, not
on the order the file system lists them in or on the other classes. The run
directory records it (:mod:`.record`), so a resume uses the very same split.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from oomguard.data.entries import Entries
from oomguard.data.sampler import mix_seed


def val_count(size: int, fraction: float) -> int:
    """Images of a class of ``size`` that go to validation."""
    if size < 2:
        return 0
    return min(size - 1, max(1, math.floor(size * fraction + 0.5)))


def stratified_split(entries: Entries, classes: list[str], fraction: float, seed: int
                     ) -> tuple[Entries, Entries]:
    """(train, val) of ``entries``, each in the original order."""
    order = sorted(range(len(entries)), key=lambda i: entries.paths[i])
    sorted_labels = entries.labels[order]
    val: list[int] = []
    for number, name in enumerate(classes):
        members = [order[i] for i in np.flatnonzero(sorted_labels == number).tolist()]
        generator = np.random.default_rng(mix_seed(seed, zlib.crc32(name.encode()), 5))
        chosen = generator.permutation(len(members))[:val_count(len(members), fraction)]
        val += [members[i] for i in chosen.tolist()]
    is_val = np.zeros(len(entries), dtype=bool)
    is_val[val] = True
    return entries.take(np.flatnonzero(~is_val)), entries.take(np.flatnonzero(is_val))


def describe_split(fraction: float, seed: int) -> str:
    """How the split was made, for the console and the ``data`` event."""
    return f"{fraction:.0%} of each class of the training images (val_fraction={fraction:g}, seed={seed})"
