"""Vectorised drawing of the builtin shapes: masks from implicit functions, noisy backgrounds.

Each shape is an implicit function of local coordinates ``(u, v)`` (the shape
fills roughly the unit disc), evaluated on a supersampled grid for every image
of a chunk at once, so 7000 images take a few seconds with no per-pixel Python.
Shapes are told apart by their outline, never by orientation, because every
image is rotated at random and flipped by the training augmentation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

FloatArray = np.ndarray

SUPERSAMPLE = 3  # drawn at 3x and averaged down: anti-aliased edges, fractional areas


def _radial(n: int, inner: float) -> Callable[[FloatArray, FloatArray], FloatArray]:
    """A star/regular polygon with ``n`` outer vertices at radius 1 and inner vertices at ``inner``."""
    sector = np.pi / n

    def mask(u: FloatArray, v: FloatArray) -> FloatArray:
        radius = np.hypot(u, v)
        phi = np.abs(np.mod(np.arctan2(v, u), 2 * sector) - sector)
        phi = sector - phi  # angle from the nearest outer vertex, in [0, sector]
        edge = inner * np.sin(sector) / (np.sin(phi) + inner * np.sin(sector - phi))
        return radius <= edge

    return mask


def _circle(u: FloatArray, v: FloatArray) -> FloatArray:
    return u * u + v * v <= 0.85


def _ring(u: FloatArray, v: FloatArray) -> FloatArray:
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.4)


def _cross(u: FloatArray, v: FloatArray) -> FloatArray:
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))


def _bar(u: FloatArray, v: FloatArray) -> FloatArray:
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.3)


def _crescent(u: FloatArray, v: FloatArray) -> FloatArray:
    return (u * u + v * v <= 1.0) & ((u - 0.5) ** 2 + v * v >= 0.7)


def _arrow(u: FloatArray, v: FloatArray) -> FloatArray:
    shaft = (u >= -1.0) & (u <= 0.05) & (np.abs(v) <= 0.22)
    head = (u >= 0.0) & (np.abs(v) <= 0.7 * (1.0 - u))
    return shaft | head


# Class order is the label order. Names are what users see in reports.
SHAPES: dict[str, Callable[[FloatArray, FloatArray], FloatArray]] = {
    "circle": _circle,
    "square": _radial(4, float(np.cos(np.pi / 4))),
    "triangle": _radial(3, 0.5),
    "star": _radial(5, 0.42),
    "cross": _cross,
    "ring": _ring,
    "hexagon": _radial(6, float(np.cos(np.pi / 6))),
    "bar": _bar,
    "crescent": _crescent,
    "arrow": _arrow,
}


def _backgrounds(rng: np.random.Generator, n: int, size: int) -> FloatArray:
    """Coloured gradients with blotchy low-frequency texture, float in [0, 255], [n, size, size, 3]."""
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    base = rng.uniform(30, 225, (n, 1, 1, 3)).astype(np.float32)
    slope = rng.uniform(-50, 50, (n, 2, 1, 1, 3)).astype(np.float32)
    gradient = slope[:, 0] * ramp[None, :, None, None] + slope[:, 1] * ramp[None, None, :, None]
    coarse = rng.normal(0, 28, (n, 5, 5, 3)).astype(np.float32)
    blotches = np.repeat(np.repeat(coarse, -(-size // 4), axis=1), -(-size // 4), axis=2)
    blotches = _blur(blotches[:, :size, :size])
    return base + gradient + blotches


def _blur(images: FloatArray) -> FloatArray:
    """A 3x3 box blur along both image axes (edges clamped)."""
    for axis in (1, 2):
        padded = np.concatenate(
            [np.take(images, [0], axis=axis), images, np.take(images, [-1], axis=axis)], axis=axis
        )
        length = images.shape[axis]
        images = (
            np.take(padded, range(0, length), axis=axis)
            + np.take(padded, range(1, length + 1), axis=axis)
            + np.take(padded, range(2, length + 2), axis=axis)
        ) / 3
    return images


def _coverage(kinds: np.ndarray, rng: np.random.Generator, size: int) -> FloatArray:
    """Fraction of each pixel the shape covers, [n, size, size], for random pose and scale."""
    n = len(kinds)
    fine = size * SUPERSAMPLE
    grid = (np.arange(fine, dtype=np.float32) + 0.5) / SUPERSAMPLE  # pixel units
    radius = rng.uniform(0.24, 0.42, n).astype(np.float32) * size
    margin = radius * 0.95
    cx = rng.uniform(margin, size - margin).astype(np.float32)
    cy = rng.uniform(margin, size - margin).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    dx = (grid[None, None, :] - cx[:, None, None]) / radius[:, None, None]
    dy = (grid[None, :, None] - cy[:, None, None]) / radius[:, None, None]
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    fine_mask = np.zeros((n, fine, fine), dtype=np.float32)
    for label, draw in enumerate(SHAPES.values()):
        chosen = kinds == label
        if chosen.any():
            fine_mask[chosen] = draw(u[chosen], v[chosen])
    return fine_mask.reshape(n, size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(2, 4))


def render(kinds: np.ndarray, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8 [n, size, size, 3]) of the shapes ``kinds`` and their targets (float32 [n, 2]).

    Targets: the shape's area in pixels and the brightness (0-255 luma) of its
    colour, so the multitask head has two things to learn besides the class.
    """
    n = len(kinds)
    cover = _coverage(kinds, rng, size)[..., None]
    background = _backgrounds(rng, n, size)
    colour = rng.uniform(0, 255, (n, 3)).astype(np.float32)
    # Keep the shape visible: push its colour away from the background's mean.
    mean_bg = background.mean(axis=(1, 2))
    gap = colour - mean_bg
    distance = np.linalg.norm(gap, axis=1, keepdims=True)
    too_close = distance < 90
    push = np.where(too_close, gap / np.maximum(distance, 1e-3) * 90, gap)
    colour = np.clip(mean_bg + push, 0, 255)
    image = background * (1 - cover) + colour[:, None, None, :] * cover
    image += rng.normal(0, 12, image.shape).astype(np.float32)
    area = cover.sum(axis=(1, 2, 3))
    brightness = colour @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    targets = np.stack([area, brightness], axis=1).astype(np.float32)
    return np.clip(image, 0, 255).round().astype(np.uint8), targets
