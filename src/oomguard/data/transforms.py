"""Image transforms on plain torch: random resized crop + flip for training, resize for eval.

No torchvision: a crop is a slice and a resize is ``F.interpolate``. All
randomness comes from the ``torch.Generator`` the caller passes, seeded per
sample by the sampler, so a resumed run (or one with more workers) draws the
same augmentation for the same sample.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# ImageNet statistics: right for pretrained backbones, harmless for models trained from scratch.
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

SCALE = (0.6, 1.0)  # fraction of the image area a training crop keeps
RATIO = (3 / 4, 4 / 3)  # aspect ratio range of a training crop


def to_chw(image: np.ndarray) -> torch.Tensor:
    """A uint8 HxWx3 array as a uint8 3xHxW tensor (no copy when the array is contiguous)."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


def resize(image: torch.Tensor, imgsz: int) -> torch.Tensor:
    """uint8 3xHxW -> float32 3 x imgsz x imgsz, values in [0, 1] (anti-aliased when shrinking)."""
    pixels = image.unsqueeze(0).float().div_(255)
    if pixels.shape[-2:] != (imgsz, imgsz):
        pixels = F.interpolate(pixels, size=(imgsz, imgsz), mode="bilinear", align_corners=False,
                               antialias=True).clamp_(0, 1)
    return pixels.squeeze(0)


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - MEAN) / STD


def crop_box(height: int, width: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop keeping SCALE of the area at an aspect ratio in RATIO."""
    draws = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
    area = height * width * (SCALE[0] + (SCALE[1] - SCALE[0]) * draws[0])
    log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
    ratio = math.exp(log_lo + (log_hi - log_lo) * draws[1])
    w = min(width, max(1, round(math.sqrt(area * ratio))))
    h = min(height, max(1, round(math.sqrt(area / ratio))))
    offsets = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
    top = int(offsets[0] * (height - h + 1))
    left = int(offsets[1] * (width - w + 1))
    return top, left, h, w


def train_transform(image: np.ndarray, imgsz: int, generator: torch.Generator) -> torch.Tensor:
    """Random resized crop, horizontal flip half of the time, resize, normalise -> float32 3xSxS."""
    chw = to_chw(image)
    top, left, h, w = crop_box(chw.shape[1], chw.shape[2], generator)
    crop = chw[:, top : top + h, left : left + w]
    if torch.rand(1, generator=generator).item() < 0.5:
        crop = crop.flip(-1)
    return normalize(resize(crop, imgsz))


def eval_transform(image: np.ndarray, imgsz: int) -> torch.Tensor:
    """Resize the whole image to imgsz x imgsz and normalise -> float32 3xSxS."""
    return normalize(resize(to_chw(image), imgsz))
