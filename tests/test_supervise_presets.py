"""Restart presets of ``oomguard run``: Ultralytics YOLO, Hugging Face Trainer, generic resume args."""

from __future__ import annotations

from pathlib import Path

import pytest

from oomguard.supervise.presets import (
    GenericPreset,
    HuggingFacePreset,
    YoloPreset,
    newest_checkpoint,
    preset_for,
    smaller_yolo_batch,
)

YOLO = ["/venv/bin/yolo", "detect", "train", "data=rdd.yaml", "model=yolov8s.pt", "batch=16", "imgsz=640"]


def test_yolo_is_recognised() -> None:
    assert isinstance(preset_for(YOLO, None), YoloPreset)
    assert isinstance(preset_for(["python", "-m", "ultralytics", "train", "data=x.yaml"], None), YoloPreset)
    assert isinstance(preset_for(["yolo", "val", "data=x.yaml"], None), GenericPreset)


def test_yolo_resumes_with_the_same_batch_after_an_unexplained_kill() -> None:
    argv = YoloPreset(YOLO).restart_argv(YOLO, memory=False)
    assert argv == [*YOLO, "resume=True"]


def test_yolo_resumes_with_a_smaller_batch_after_a_memory_kill() -> None:
    preset = YoloPreset(YOLO)
    first = preset.restart_argv(YOLO, memory=True)
    assert first == [*[a for a in YOLO if a != "batch=16"], "resume=True", "batch=12"]
    second = preset.restart_argv(first, memory=True)
    assert second.count("resume=True") == 1
    assert [a for a in second if a.startswith("batch=")] == ["batch=9"]


@pytest.mark.parametrize(("batch", "smaller"), [("16", "12"), ("1", "1"), ("2", "1"), (None, "12"),
                                                 ("0.8", "0.6"), ("-1", "0.45")])
def test_smaller_yolo_batch(batch: str | None, smaller: str) -> None:
    assert smaller_yolo_batch(batch) == smaller


def _checkpoints(root: Path, *steps: int) -> Path:
    for step in steps:
        (root / "out" / f"checkpoint-{step}").mkdir(parents=True)
    (root / "out" / "checkpoint-999.json").write_text("{}")  # a file, not a checkpoint folder
    return root / "out"


def test_hf_picks_the_newest_checkpoint_by_number(tmp_path: Path) -> None:
    out = _checkpoints(tmp_path, 500, 1500, 1000)
    assert newest_checkpoint(out) == out / "checkpoint-1500"
    command = ["python", "train_hf.py", "--output_dir", "out", "--per_device_train_batch_size", "8"]
    preset = preset_for(command, None, cwd=tmp_path)
    assert isinstance(preset, HuggingFacePreset)
    assert preset.restart_argv(command, memory=False) == [*command, "--resume_from_checkpoint",
                                                          "out/checkpoint-1500"]


def test_hf_memory_kill_halves_the_batch_and_keeps_the_effective_batch(tmp_path: Path) -> None:
    _checkpoints(tmp_path, 20)
    command = ["python", "train_hf.py", "--output_dir=out", "--per_device_train_batch_size", "6",
               "--gradient_accumulation_steps", "2"]
    argv = HuggingFacePreset(command, cwd=tmp_path).restart_argv(command, memory=True)
    assert argv == ["python", "train_hf.py", "--output_dir=out", "--per_device_train_batch_size", "3",
                    "--gradient_accumulation_steps", "4", "--resume_from_checkpoint", "out/checkpoint-20"]


def test_hf_without_a_checkpoint_starts_over(tmp_path: Path) -> None:
    command = ["python", "train_hf.py", "--output_dir", "out"]
    assert HuggingFacePreset(command, cwd=tmp_path).restart_argv(command, memory=False) == command


def test_generic_appends_resume_args_once_and_they_win_over_presets() -> None:
    preset = preset_for(YOLO, "--resume --ckpt 'last run.pt'")
    assert isinstance(preset, GenericPreset)
    first = preset.restart_argv(YOLO, memory=True)
    assert first == [*YOLO, "--resume", "--ckpt", "last run.pt"]
    assert preset.restart_argv(first, memory=False) == first
