"""Tasks: auto resolution, the loss the Guard calls, predictions, and metrics in original units."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from oomguard.config import Config
from oomguard.data import shapes
from oomguard.data.dataset import ArrayDataset, TargetScale
from oomguard.errors import ConfigError, DataError
from oomguard.tasks import Task, build_task
from oomguard.tasks.base import metric_key
from oomguard.tasks.multitask import MultitaskTask


@pytest.fixture
def tiny_shapes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OOMGUARD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(shapes, "TRAIN_COUNT", 32)
    monkeypatch.setattr(shapes, "VAL_COUNT", 8)
    monkeypatch.setattr(shapes, "IMAGE_SIZE", 16)


def make_folder(root: Path, with_csv: bool) -> Path:
    for split, count in (("train", 2), ("val", 1)):
        for name in ("a", "b"):
            for i in range(count):
                path = root / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (10, 10), (i * 40, 0, 0)).save(path)
    if with_csv:
        (root / "train.csv").write_text("image,label,kcal\ntrain/a/0.png,a,1\ntrain/b/0.png,b,3\n")
        (root / "val.csv").write_text("image,label,kcal\nval/a/0.png,a,2\n")
    return root


def table_task(values: np.ndarray, reg_weight: float = 1.0, label_smoothing: float = 0.0) -> MultitaskTask:
    """A multitask Task over 3 classes with one target whose raw values are ``values``."""
    count = len(values)
    images = np.zeros((count, 8, 8, 3), dtype=np.uint8)
    scale = TargetScale.fit(["Energy (kcal)"], values)
    dataset = ArrayDataset(images, np.arange(count) % 3, values, scale, imgsz=8)
    config = Config(reg_weight=reg_weight, label_smoothing=label_smoothing)
    return MultitaskTask(config, ["x", "y", "z"], dataset, dataset, imgsz=8)


def test_auto_resolution(tiny_shapes: None, tmp_path: Path) -> None:
    task = build_task(Config())
    assert (task.kind, task.imgsz, task.classes) == ("multitask", 32, shapes.CLASSES)
    assert task.target_names == ["area", "brightness"]
    assert task.metric_names == ["val_loss", "accuracy", "top5", "mae_area", "mae_brightness"]
    assert task.primary_metric == "accuracy"
    assert (len(task.train_set), len(task.val_set)) == (32, 8)
    assert build_task(Config(task="classify", dev_samples=8, imgsz=16)).target_names == []

    folder = build_task(Config(data=str(make_folder(tmp_path / "f", with_csv=False))))
    assert (folder.kind, folder.imgsz, folder.classes) == ("classify", 224, ["a", "b"])
    assert folder.target_names == []
    table = build_task(Config(data=str(make_folder(tmp_path / "t", with_csv=True)), imgsz=16))
    assert (table.kind, table.imgsz, table.target_names) == ("multitask", 16, ["kcal"])
    both = build_task(Config(data=str(tmp_path / "t"), task="classify"))
    assert (both.kind, len(both.train_set), both.target_names) == ("classify", 2, [])  # csv wins, no targets


def test_resolution_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        build_task(Config(data="roads/data.yaml"))
    assert str(err.value) == ("task=detect trains only with oomguard train (through ultralytics); "
                              "this command supports task=classify and task=multitask")
    folder = make_folder(tmp_path / "f", with_csv=False)
    with pytest.raises(DataError) as data_err:
        build_task(Config(data=str(folder), task="multitask"))
    assert str(data_err.value) == (
        f"task=multitask needs {folder}/train.csv with columns image,label,<targets>; "
        f"{str(folder)!r} has only image folders (use task=classify)"
    )


def test_loss_is_cross_entropy_plus_weighted_mse() -> None:
    task = table_task(np.array([[0.0], [10.0], [20.0]]), reg_weight=0.5, label_smoothing=0.1)
    torch.manual_seed(0)
    model = task.build_model()
    batch = {"image": torch.randn(3, 3, 8, 8), "label": torch.tensor([0, 2, 1]),
             "targets": torch.tensor([[-1.0], [0.0], [1.0]])}
    out = model(batch["image"])
    expected = F.cross_entropy(out["logits"], batch["label"], label_smoothing=0.1) + 0.5 * F.mse_loss(
        out["reg"], batch["targets"]
    )
    loss = task.loss(model, batch)
    assert loss.shape == () and torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    assert model.head.regressor.weight.grad is not None
    predicted = task.predict(model, batch)
    assert predicted["logits"].shape == (3, 3) and not predicted["logits"].requires_grad


def test_perfect_predictions_score_perfectly() -> None:
    task = table_task(np.array([[3.0], [5.0], [9.0], [11.0]]))
    metrics = task.new_metrics()
    for labels, targets in (([0, 1], [[-1.2], [0.3]]), ([2], [[0.9]])):
        batch = {"label": torch.tensor(labels), "targets": torch.tensor(targets)}
        outputs = {"logits": F.one_hot(batch["label"], 3).float() * 50, "reg": batch["targets"].clone()}
        metrics.update(outputs, batch)
    result = metrics.compute()
    assert result["accuracy"] == 1.0 and result["top5"] == 1.0
    assert result["mae_energy_kcal"] == 0.0
    assert result["val_loss"] < 1e-6
    assert list(result) == task.metric_names
    assert not any(isinstance(value, torch.Tensor) for value in vars(metrics).values())


def test_mae_is_in_original_units() -> None:
    # raw targets 0 and 10: mean 5, std 5, so standardised -1 and +1
    task = table_task(np.array([[0.0], [10.0]]))
    np.testing.assert_allclose(task.scale.std, [5.0])
    metrics = task.new_metrics()
    batch = {"label": torch.tensor([0, 1]), "targets": torch.tensor([[-1.0], [1.0]])}
    # predicting standardised 0 and 0.5, i.e. 5 and 7.5 in original units: errors 5 and 2.5
    metrics.update({"logits": torch.tensor([[1.0, 0, 0], [1.0, 0, 0]]), "reg": torch.tensor([[0.0], [0.5]])},
                   batch)
    result = metrics.compute()
    assert result["mae_energy_kcal"] == pytest.approx(3.75)
    assert result["accuracy"] == 0.5 and result["top5"] == 1.0  # three classes: top-5 is all of them
    expected_ce = F.cross_entropy(torch.tensor([[1.0, 0, 0], [1.0, 0, 0]]), torch.tensor([0, 1]))
    expected_mse = ((0 + 1) ** 2 + (0.5 - 1) ** 2) / 2
    assert result["val_loss"] == pytest.approx(float(expected_ce) + expected_mse, rel=1e-6)


def test_classify_metrics_top5_and_empty() -> None:
    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    scale = TargetScale.fit([], np.zeros((2, 0)))
    dataset = ArrayDataset(images, np.array([0, 1]), np.zeros((2, 0)), scale, imgsz=8)
    task = Task(Config(task="classify"), [str(i) for i in range(7)], dataset, dataset, imgsz=8)
    assert task.new_metrics().compute()["accuracy"] != task.new_metrics().compute()["accuracy"]  # NaN
    metrics = task.new_metrics()
    logits = torch.arange(7.0).repeat(2, 1)  # ranking: 6, 5, 4, 3, 2, 1, 0
    metrics.update({"logits": logits}, {"label": torch.tensor([2, 1]), "targets": torch.zeros(2, 0)})
    result = metrics.compute()
    assert (result["accuracy"], result["top5"]) == (0.0, 0.5)
    assert metric_key("Fat, g") == "mae_fat_g"
