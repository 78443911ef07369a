"""Cutting batches into microbatches and joining outputs back."""

from __future__ import annotations

import itertools
from collections import namedtuple

import pytest
import torch

from oomguard.engine.split import batch_size, chunk_spans, concat, take
from oomguard.errors import DataError


@pytest.mark.parametrize(("total", "microbatch", "sizes"), [
    (10, 3, [3, 3, 2, 2]),
    (64, 44, [32, 32]),
    (64, 64, [64]),
    (64, 100, [64]),
    (7, 1, [1] * 7),
    (64, 22, [22, 21, 21]),
])
def test_chunk_spans_are_few_and_balanced(total: int, microbatch: int, sizes: list[int]) -> None:
    spans = chunk_spans(total, microbatch)
    assert [stop - start for start, stop in spans] == sizes
    assert spans[0][0] == 0 and spans[-1][1] == total
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))


def test_take_cuts_tensors_and_per_sample_lists_and_passes_the_rest() -> None:
    x, y = torch.arange(20).reshape(10, 2), torch.arange(10)
    weights = torch.ones(3)
    batch = {"x": x, "y": y, "names": [str(i) for i in range(10)], "epoch": 4, "weights": weights,
             "pair": (x, y)}
    part = take(batch, 3, 6, 10)
    assert torch.equal(part["x"], x[3:6]) and torch.equal(part["y"], y[3:6])
    assert part["names"] == ["3", "4", "5"]
    assert part["epoch"] == 4 and part["weights"] is weights
    assert torch.equal(part["pair"][1], y[3:6])


def test_take_keeps_named_tuples_and_top_level_lists_as_structure() -> None:
    Batch = namedtuple("Batch", "images labels")
    images, labels = torch.zeros(4, 3), torch.arange(4)
    part = take(Batch(images, labels), 0, 2, 4)
    assert isinstance(part, Batch) and part.labels.tolist() == [0, 1]
    pair = take([images, labels], 2, 4, 4)  # a top-level list of length 2 is (inputs, targets), not samples
    assert isinstance(pair, list) and pair[1].tolist() == [2, 3]


def test_batch_size_and_the_error_for_a_batch_without_tensors() -> None:
    assert batch_size({"names": ["a"], "x": torch.zeros(5, 2)}) == 5
    assert batch_size((torch.zeros(3), torch.zeros(3))) == 3
    with pytest.raises(DataError, match=r"batch holds no tensor with a batch dimension \(got list\)"):
        batch_size(["a", "b"])


def test_concat_joins_same_structures() -> None:
    parts = [{"logits": torch.ones(2, 3), "loss": torch.tensor(1.0), "ids": [1, 2]},
             {"logits": torch.zeros(1, 3), "loss": torch.tensor(2.0), "ids": [3]}]
    joined = concat(parts)
    assert joined["logits"].shape == (3, 3)
    assert joined["loss"].tolist() == [1.0, 2.0]
    assert joined["ids"] == [1, 2, 3]
    assert concat([(torch.ones(2),), (torch.ones(3),)])[0].shape == (5,)
