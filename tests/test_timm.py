"""``model=timm:<name>``: a timm EfficientNet trained by ``oomguard train`` like a builtin model."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from cli_helpers import make_folder_dataset, oomguard

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("timm") is None,
    reason="timm is not installed (.ci/install-vision installs it with a CPU-loadable torchvision)",
)

ARGS = ["task=classify", "model=timm:efficientnet_b0", "batch=8", "imgsz=64", "warmup_epochs=0",
        "lr=0.01", "workers=0"]


def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "results.csv", newline="") as file:
        return list(csv.DictReader(file))


def events(run: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def test_efficientnet_trains_into_a_run_directory_then_seeds_another(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "colours", per_class=8)
    done = oomguard("train", "--no-supervise", f"data={data}", *ARGS, "epochs=2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "exp"
    for name in ("config.yaml", "events.jsonl", "memory.csv", "weights/best.pt"):
        assert (run / name).is_file(), name
    checkpoint = torch.load(run / "weights" / "last.pt", weights_only=True)
    weights = checkpoint["model"]
    assert "backbone.conv_stem.weight" in weights and weights["head.classifier.weight"].shape == (3, 1280)
    table = rows(run)
    assert [int(row["epoch"]) for row in table] == [1, 2]
    assert all(float(row["train_loss"]) > 0 and int(row["microbatch"]) >= 1 for row in table)
    plans = [event for event in events(run) if event["event"] == "plan"]
    assert len(plans) == 1 and plans[0]["microbatch"] == int(table[0]["microbatch"])
    assert events(run)[-1]["event"] == "finish"

    # The finished run's weights as local pretrained weights of a new run: the backbone carries over.
    seeded = oomguard("train", "--no-supervise", f"data={data}", *ARGS, "epochs=1", "name=seeded",
                      f"pretrained={run / 'weights' / 'last.pt'}", "lr=0.000001", cwd=tmp_path)
    assert seeded.returncode == 0, seeded.stderr
    start = next(event for event in events(tmp_path / "runs" / "seeded") if event["event"] == "start")
    assert start["config"]["pretrained"] == str(run / "weights" / "last.pt")  # type: ignore[index]
    after = torch.load(tmp_path / "runs" / "seeded" / "weights" / "last.pt", weights_only=True)["model"]
    stem = weights["backbone.conv_stem.weight"]
    assert torch.allclose(after["backbone.conv_stem.weight"], stem, atol=1e-3)


def test_the_predicted_epoch_peak_holds_within_a_tenth_under_a_budget(tmp_path: Path) -> None:
    # A budget the steps come near (so the heap is trimmed before each, as in any run close to its budget).
    data = make_folder_dataset(tmp_path / "colours", per_class=8)
    done = oomguard("train", "--no-supervise", f"data={data}", *ARGS, "epochs=3", "memory_limit=650MB",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    table = rows(tmp_path / "runs" / "exp")
    assert [int(row["epoch"]) for row in table] == [1, 2, 3]
    for row in table:
        predicted, measured = float(row["predicted_peak_mb"]), float(row["peak_memory_mb"])
        assert abs(measured / predicted - 1) <= 0.10 and measured <= 650, row
    (plan,) = [event for event in events(tmp_path / "runs" / "exp") if event["event"] == "plan"]
    assert {"model", "optimizer", "snapshot", "activations", "evaluation"} <= set(plan["components"])  # type: ignore[arg-type]


def test_timm_bare_backbone_weights_load(tmp_path: Path) -> None:
    import timm

    from oomguard.models import build_model

    source = timm.create_model("efficientnet_b0", pretrained=False, num_classes=1000)
    path = tmp_path / "efficientnet_b0.pth"
    torch.save(source.state_dict(), path)  # a timm/ImageNet file: bare keys and a 1000-class classifier
    model = build_model("timm:efficientnet_b0", 4, 0, pretrained=str(path), imgsz=64)
    assert torch.equal(model.backbone.conv_stem.weight, source.conv_stem.weight)
    assert model.head.classifier.weight.shape == (4, 1280)


def test_an_image_too_small_for_batchnorm_is_one_line(tmp_path: Path) -> None:
    data = make_folder_dataset(tmp_path / "colours", per_class=2)
    done = oomguard("train", "--no-supervise", f"data={data}", *ARGS, "imgsz=32", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "oomguard: error: imgsz=32 is too small for model=timm:efficientnet_b0: it downsamples 32x, "
        "leaving 1x1 BatchNorm inputs that cannot train a microbatch of 1; use imgsz>=64"
    )
