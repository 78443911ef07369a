"""build_model: output shapes of every builtin, local pretrained weights, clear errors."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from oomguard.errors import ConfigError
from oomguard.models import BUILTIN, build_model


@pytest.mark.parametrize("name", sorted(BUILTIN))
@pytest.mark.parametrize("imgsz", [16, 96])
def test_builtin_outputs(name: str, imgsz: int) -> None:
    model = build_model(f"builtin:{name}", num_classes=7, num_targets=3, imgsz=imgsz)
    out = model(torch.randn(2, 3, imgsz, imgsz))
    assert out.keys() == {"logits", "reg"}
    assert out["logits"].shape == (2, 7) and out["reg"].shape == (2, 3)
    plain = build_model(f"builtin:{name}", num_classes=4, num_targets=0, imgsz=imgsz).eval()
    assert plain(torch.randn(1, 3, imgsz, imgsz)).keys() == {"logits"}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_trains_on_a_microbatch_of_one(name: str) -> None:
    model = build_model(f"builtin:{name}", num_classes=3, num_targets=1).train()
    model(torch.randn(1, 3, 32, 32))["logits"].sum().backward()


def test_sizes() -> None:
    def params(spec: str) -> int:
        return sum(p.numel() for p in build_model(spec, 10, 2).parameters())

    assert params("builtin:tiny") < 300_000
    assert 500_000 <= params("builtin:resnet") <= 3_000_000
    assert 10_000_000 <= params("builtin:resnet18") <= 12_000_000


def test_weights_do_not_depend_on_image_size() -> None:
    small = build_model("builtin:resnet", 5, 2, imgsz=32)
    large = build_model("builtin:resnet", 5, 2, imgsz=224)
    large.load_state_dict(small.state_dict())  # strict: same names and shapes


def test_pretrained_local_file_keeps_matching_weights(tmp_path: Path) -> None:
    source = build_model("builtin:tiny", num_classes=10, num_targets=2)
    path = tmp_path / "last.pt"
    torch.save({"model": source.state_dict(), "epoch": 3}, path)  # an oomguard checkpoint
    model = build_model("builtin:tiny", num_classes=4, num_targets=0, pretrained=str(path))
    for name, tensor in source.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], tensor)
    assert model.head.classifier.weight.shape == (4, 128)  # new head, fresh weights
    backbone_only = tmp_path / "backbone.pth"
    torch.save(source.backbone.state_dict(), backbone_only)  # bare backbone keys, as in timm files
    again = build_model("builtin:tiny", num_classes=4, num_targets=0, pretrained=str(backbone_only))
    assert torch.equal(again.backbone[0][0].weight, source.backbone[0][0].weight)


def test_pretrained_errors(tmp_path: Path) -> None:
    missing = tmp_path / "none.pt"
    with pytest.raises(ConfigError) as err:
        build_model("builtin:tiny", 3, 0, pretrained=str(missing))
    assert str(err.value) == (
        f"pretrained={str(missing)!r} not found; give a local weights file or pretrained=false"
    )
    other = tmp_path / "other.pt"
    torch.save({"unrelated.weight": torch.zeros(3)}, other)
    with pytest.raises(ConfigError) as err:
        build_model("builtin:tiny", 3, 0, pretrained=str(other))
    assert str(err.value).startswith(f"pretrained={str(other)!r} matches none of the model's ")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage")
    with pytest.raises(ConfigError) as err:
        build_model("builtin:tiny", 3, 0, pretrained=str(junk))
    assert str(err.value).startswith(f"pretrained={str(junk)!r} is not a readable weights file (")
    with pytest.raises(ConfigError) as err:
        build_model("builtin:tiny", 3, 0, pretrained=True)
    assert str(err.value) == (
        "pretrained=true for builtin:tiny would need a download; give a local weights file: "
        "pretrained=path/to/weights.pth"
    )


def test_unknown_model() -> None:
    with pytest.raises(ConfigError) as err:
        build_model("builtin:huge", 3, 0)
    assert str(err.value) == (
        "unknown model 'builtin:huge'; expected one of builtin:tiny, builtin:resnet, builtin:resnet18 "
        "or timm:<name>"
    )


def test_timm_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` fails, as without the extra
    with pytest.raises(ConfigError) as err:
        build_model("timm:efficientnet_b0", 3, 0)
    assert str(err.value) == "model=timm:efficientnet_b0 needs timm: pip install 'oomguard[vision]'"


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed")
def test_timm_backbone_gets_the_shared_head() -> None:
    model = build_model("timm:resnet18", 6, 2)
    out = model(torch.randn(2, 3, 32, 32))
    assert out["logits"].shape == (2, 6) and out["reg"].shape == (2, 2)


HUB_LOAD = """
import json, sys, torch
from oomguard.errors import ConfigError
from oomguard.models import build_model
try:
    model = build_model("timm:resnet18", 6, 2, pretrained=True)
except ConfigError as err:
    print(json.dumps({"error": str(err)}))
else:
    source = torch.load(sys.argv[1], weights_only=True)
    loaded = model.backbone.state_dict()
    print(json.dumps({"equal": all(torch.equal(loaded[k], v) for k, v in source.items())}))
"""


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed")
def test_timm_pretrained_true_loads_through_timms_hub_cache(tmp_path: Path) -> None:
    """pretrained=true: timm's own hub loader, here from a prepared Hugging Face cache, offline."""
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("resnet18", pretrained=False, num_classes=0)
    weights = {k: v.contiguous() for k, v in source.state_dict().items()}
    torch.save(weights, tmp_path / "source.pt")
    tag = timm.models.get_pretrained_cfg("resnet18").hf_hub_id  # e.g. timm/resnet18.a1_in1k
    repo = tmp_path / "hub" / ("models--" + tag.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    save_file(weights, str(snapshot / "model.safetensors"))

    def load(cache: Path) -> dict[str, object]:
        env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
        done = subprocess.run([sys.executable, "-c", HUB_LOAD, str(tmp_path / "source.pt")], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    assert load(tmp_path / "hub") == {"equal": True}
    error = str(load(tmp_path / "empty")["error"])  # offline and nothing cached
    assert error.startswith("model=timm:resnet18 pretrained=true: timm could not get its weights (")
    assert error.endswith("connect once to download them, or give pretrained=path/to/weights")
