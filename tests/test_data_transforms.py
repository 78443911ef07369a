"""Transforms: deterministic given the generator, crops within bounds, eval has no randomness."""

from __future__ import annotations

import numpy as np
import torch

from oomguard.data.transforms import MEAN, SCALE, STD, crop_box, eval_transform, train_transform


def image(height: int = 20, width: int = 24) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_train_transform_is_a_function_of_the_generator_seed() -> None:
    picture = image()
    first = train_transform(picture, 16, torch.Generator().manual_seed(5))
    again = train_transform(picture, 16, torch.Generator().manual_seed(5))
    assert first.shape == (3, 16, 16) and first.dtype == torch.float32
    assert torch.equal(first, again)
    others = [train_transform(picture, 16, torch.Generator().manual_seed(s)) for s in range(6, 12)]
    assert not any(torch.equal(first, other) for other in others)


def test_train_transform_ignores_the_global_rng() -> None:
    picture = image()
    torch.manual_seed(1)
    first = train_transform(picture, 16, torch.Generator().manual_seed(5))
    torch.manual_seed(2)
    assert torch.equal(first, train_transform(picture, 16, torch.Generator().manual_seed(5)))


def test_crop_boxes_stay_inside_and_keep_the_scale() -> None:
    for seed in range(200):
        top, left, h, w = crop_box(40, 50, torch.Generator().manual_seed(seed))
        assert top >= 0 and left >= 0
        assert top + h <= 40 and left + w <= 50
        assert SCALE[0] * 0.7 <= h * w / (40 * 50) <= SCALE[1]


def test_flip_happens_about_half_the_time() -> None:
    # a left-dark, right-bright image: a flip makes the left half brighter than the right half
    ramp = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 1, 3))
    flips = 0
    for seed in range(100):
        out = train_transform(ramp, 32, torch.Generator().manual_seed(seed))
        flips += int(out[0, :, :16].mean() > out[0, :, 16:].mean())
    assert 30 <= flips <= 70


def test_eval_transform_resizes_and_normalises() -> None:
    flat = np.full((10, 30, 3), 255, dtype=np.uint8)
    out = eval_transform(flat, 12)
    assert out.shape == (3, 12, 12)
    assert torch.allclose(out, ((1 - MEAN) / STD).expand(3, 12, 12), atol=1e-5)
    same = image(12, 12)
    unresized = eval_transform(same, 12)
    expected = (torch.from_numpy(same).permute(2, 0, 1).float() / 255 - MEAN) / STD
    assert torch.allclose(unresized, expected, atol=1e-6)
