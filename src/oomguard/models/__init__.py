"""``build_model(spec, ...)``: builtin CNNs or timm backbones, all returning {"logits", "reg"}."""

from __future__ import annotations

from torch import nn

from oomguard.errors import ConfigError
from oomguard.models.builtin import BUILTIN, Net, build_builtin
from oomguard.models.weights import load_matching

__all__ = ["BUILTIN", "Net", "build_model"]

WEIGHT_PREFIXES = ("", "backbone.")  # our own checkpoints, then bare backbone weights (timm files)


def _check_feature_size(name: str, backbone: nn.Module, imgsz: int | None) -> None:
    """Refuse an image size that leaves 1x1 BatchNorm inputs: a microbatch of one sample cannot train there.

    The memory engine may shrink to a microbatch of 1, and BatchNorm in training
    mode needs more than one value per channel.
    """
    info = getattr(backbone, "feature_info", None)
    reduction = int(info[-1]["reduction"]) if isinstance(info, list) and info else 0
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules())
    if imgsz and reduction and has_bn and imgsz // reduction < 2:
        raise ConfigError(
            f"imgsz={imgsz} is too small for model=timm:{name}: it downsamples {reduction}x, leaving "
            f"1x1 BatchNorm inputs that cannot train a microbatch of 1; use imgsz>={2 * reduction}"
        )


def _timm_net(name: str, num_classes: int, num_targets: int, imgsz: int | None = None,
              hub: bool = False) -> Net:
    """A timm backbone with oomguard's heads; ``hub``: its pretrained weights through timm's own hub
    mechanism (the Hugging Face cache, downloaded once when online)."""
    try:
        import timm
    except ImportError:
        raise ConfigError(f"model=timm:{name} needs timm: pip install 'oomguard[vision]'") from None
    try:
        backbone = timm.create_model(name, pretrained=hub, num_classes=0)
    except RuntimeError as err:  # timm's "Unknown model (...)"
        raise ConfigError(f"model=timm:{name}: {err}; see timm.list_models() for names") from None
    except Exception as err:  # the hub: offline without a cached copy, no such weights, a broken file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise ConfigError(f"model=timm:{name} pretrained=true: timm could not get its weights "
                          f"({type(err).__name__}: {first}); connect once to download them, or give "
                          "pretrained=path/to/weights") from None
    _check_feature_size(name, backbone, imgsz)
    features = backbone.num_features
    assert isinstance(features, int), f"timm model {name} did not report its feature width"
    return Net(backbone, features, num_classes, num_targets)


def build_model(spec: str, num_classes: int, num_targets: int, pretrained: bool | str = False,
                imgsz: int | None = None) -> nn.Module:
    """The model for ``spec`` (``builtin:tiny|resnet|resnet18`` or ``timm:<name>``).

    ``pretrained`` is False, True (timm models: their published weights through
    timm's hub cache) or the path of local weights (a state_dict, an oomguard
    checkpoint, or a timm/.safetensors file), loaded where names and shapes
    match so a head for another number of classes is simply retrained.
    ``imgsz`` lets builtin ResNets pick stem strides; weights do not depend on it.
    """
    kind, _, name = spec.partition(":")
    if kind == "builtin" and name in BUILTIN:
        model = build_builtin(name, num_classes, num_targets, imgsz)
    elif kind == "timm" and name:
        model = _timm_net(name, num_classes, num_targets, imgsz, hub=pretrained is True)
    else:
        names = ", ".join(f"builtin:{n}" for n in BUILTIN)
        raise ConfigError(f"unknown model {spec!r}; expected one of {names} or timm:<name>")
    if pretrained is True and kind != "timm":
        raise ConfigError(  # oomguard's own models have no published weights
            f"pretrained=true for {spec} would need a download; give a local weights file: "
            "pretrained=path/to/weights.pth"
        )
    if pretrained and pretrained is not True:
        load_matching(model, str(pretrained), WEIGHT_PREFIXES)
    return model
