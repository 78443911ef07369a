"""``build_model(spec, ...)``: builtin CNNs or timm backbones, all returning {"logits", "reg"}."""

from __future__ import annotations

from torch import nn

from oomguard.errors import ConfigError
from oomguard.models.builtin import BUILTIN, Net, build_builtin
from oomguard.models.weights import load_matching

__all__ = ["BUILTIN", "Net", "build_model"]

WEIGHT_PREFIXES = ("", "backbone.")  # our own checkpoints, then bare backbone weights (timm files)


def _timm_net(name: str, num_classes: int, num_targets: int) -> Net:
    try:
        import timm
    except ImportError:
        raise ConfigError(f"model=timm:{name} needs timm: pip install 'oomguard[vision]'") from None
    try:
        # pretrained=False always: weights come only from a local file, never from the network.
        backbone = timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as err:  # timm's "Unknown model (...)"
        raise ConfigError(f"model=timm:{name}: {err}; see timm.list_models() for names") from None
    return Net(backbone, int(backbone.num_features), num_classes, num_targets)


def build_model(spec: str, num_classes: int, num_targets: int, pretrained: bool | str = False,
                imgsz: int | None = None) -> nn.Module:
    """The model for ``spec`` (``builtin:tiny|resnet|resnet18`` or ``timm:<name>``).

    ``pretrained`` is False or the path of local weights (a state_dict, an
    oomguard checkpoint, or a timm/.safetensors file), loaded where names and
    shapes match so a head for another number of classes is simply retrained.
    ``imgsz`` lets builtin ResNets pick stem strides; weights do not depend on it.
    """
    kind, _, name = spec.partition(":")
    if kind == "builtin" and name in BUILTIN:
        model = build_builtin(name, num_classes, num_targets, imgsz)
    elif kind == "timm" and name:
        model = _timm_net(name, num_classes, num_targets)
    else:
        names = ", ".join(f"builtin:{n}" for n in BUILTIN)
        raise ConfigError(f"unknown model {spec!r}; expected one of {names} or timm:<name>")
    if pretrained is True:
        raise ConfigError(
            f"pretrained=true for {spec} would need a download; give a local weights file: "
            "pretrained=path/to/weights.pth"
        )
    if pretrained:
        load_matching(model, str(pretrained), WEIGHT_PREFIXES)
    return model
