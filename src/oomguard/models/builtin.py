"""The builtin models: a tiny CNN for the default run and ResNet-like nets, all with one shared head.

Every model is ``Net(backbone, head)``: the backbone maps images to a flat
feature vector, and ``Head`` turns it into ``{"logits": [B, C], "reg": [B, T]}``
(``reg`` only when there are regression targets), so tasks never care which
backbone they train. No BatchNorm after global pooling: a microbatch of one
sample must still train.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class Head(nn.Module):
    """Class logits and, for multitask, standardised regression outputs from pooled features."""

    def __init__(self, num_features: int, num_classes: int, num_targets: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(num_features, num_classes)
        self.regressor = nn.Linear(num_features, num_targets) if num_targets > 0 else None

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = {"logits": self.classifier(features)}
        if self.regressor is not None:
            outputs["reg"] = self.regressor(features)
        return outputs


class Net(nn.Module):
    """A backbone producing [B, num_features] followed by the shared Head.

    ``blocks``: the backbone's repeated blocks, each recomputed as a whole under activation
    checkpointing (:meth:`checkpoint_blocks`); none for a backbone from elsewhere (timm has its own).
    """

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int, num_targets: int,
                 blocks: list[nn.Module] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = Head(num_features, num_classes, num_targets)
        self._blocks = list(blocks or [])  # a plain list: the modules stay registered under ``backbone`` only

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.backbone(x))

    def checkpoint_blocks(self) -> list[nn.Module]:
        """The blocks activation checkpointing recomputes: a forward keeps only each one's input."""
        return list(self._blocks)


def conv_bn(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def tiny(imgsz: int | None) -> tuple[nn.Module, int]:
    """Five conv layers, ~200k parameters: trains builtin:shapes to >93% in about a minute on one CPU core."""
    stride = 1 if (imgsz or 32) <= 64 else 2  # big images: downsample first, same weights
    layers = nn.Sequential(
        conv_bn(3, 24, stride), nn.MaxPool2d(2),
        conv_bn(24, 48), nn.MaxPool2d(2),
        conv_bn(48, 64), conv_bn(64, 96), nn.MaxPool2d(2),
        conv_bn(96, 128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    return layers, 128


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (a 1x1 conv when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(cin, cout, stride),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def resnet(widths: tuple[int, ...], blocks: tuple[int, ...], imgsz: int | None) -> tuple[nn.Module, int]:
    """A ResNet whose stem depends on image size only through strides, so weights move between sizes.

    Up to 64 px the stem keeps full resolution (CIFAR style); larger images get a
    stride-2 stem and, from 128 px, a max-pool too (ImageNet style).
    """
    size = imgsz or 32
    stem: list[nn.Module] = [conv_bn(3, widths[0], stride=1 if size <= 64 else 2)]
    if size >= 128:
        stem.append(nn.MaxPool2d(3, 2, 1))
    stages: list[nn.Module] = []
    cin = widths[0]
    for stage, (width, count) in enumerate(zip(widths, blocks, strict=True)):
        for block in range(count):
            stages.append(BasicBlock(cin, width, 2 if stage > 0 and block == 0 else 1))
            cin = width
    # Stem and stages are separate containers so the optional pool never shifts parameter names.
    layers = nn.Sequential(
        nn.Sequential(*stem), nn.Sequential(*stages), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    return layers, cin


BUILTIN: dict[str, Callable[[int | None], tuple[nn.Module, int]]] = {
    "tiny": tiny,
    "resnet": lambda imgsz: resnet((32, 64, 128, 256), (1, 1, 1, 1), imgsz),
    "resnet18": lambda imgsz: resnet((64, 128, 256, 512), (2, 2, 2, 2), imgsz),
}


def _blocks(backbone: nn.Module) -> list[nn.Module]:
    """The stem and each conv_bn of ``tiny``; the stem and each residual block of a ResNet."""
    blocks: list[nn.Module] = []
    for child in backbone.children():
        if isinstance(child, nn.Sequential) and any(isinstance(c, BasicBlock) for c in child):
            blocks.extend(child.children())
        elif any(True for _ in child.parameters()):
            blocks.append(child)
    return blocks


def build_builtin(name: str, num_classes: int, num_targets: int, imgsz: int | None) -> Net:
    backbone, num_features = BUILTIN[name](imgsz)
    return Net(backbone, num_features, num_classes, num_targets, _blocks(backbone))
