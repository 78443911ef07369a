"""Restart presets of ``oomguard run``: Ultralytics YOLO, Hugging Face Trainer, Lightning, resume args.

What the real libraries do with these commands is tested end to end in
``test_run_yolo.py``, ``test_run_huggingface.py`` and ``test_run_lightning.py``.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest

from oomguard.supervise.presets import (
    GenericPreset,
    HuggingFacePreset,
    LightningPreset,
    YoloPreset,
    newest_checkpoint,
    preset_for,
    smaller_yolo_batch,
)
from oomguard.supervise.presets.checkpoints import complete_torch_file

YOLO = ["/venv/bin/yolo", "detect", "train", "data=rdd.yaml", "model=yolov8s.pt", "batch=16", "imgsz=640",
        "project=p", "name=y"]


def _torch_file(path: Path, epoch: int = 0, note: str = "") -> Path:
    """A checkpoint as ``torch.save`` writes it: a zip archive whose ``data.pkl`` holds the dict.

    A double of an ultralytics or Lightning checkpoint: the presets read no
    more than this (whether the archive is whole, and its ``epoch``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"note": note, "epoch": epoch}, protocol=2))
    return path


def _yolo(tmp_path: Path, command: list[str] = YOLO) -> YoloPreset:
    """The preset for ``command`` run in ``tmp_path``, ultralytics' runs directory in ``tmp_path/runs``."""
    settings = tmp_path / "config" / "Ultralytics" / "settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"runs_dir": str(tmp_path / "runs")}))
    preset = preset_for(command, None, cwd=tmp_path, env={"YOLO_CONFIG_DIR": str(tmp_path / "config")})
    assert isinstance(preset, YoloPreset)
    return preset


def test_yolo_is_recognised() -> None:
    assert isinstance(preset_for(YOLO, None), YoloPreset)
    assert isinstance(preset_for(["python", "-m", "ultralytics", "train", "data=x.yaml"], None), YoloPreset)
    assert isinstance(preset_for(["ultralytics", "segment", "mode=train"], None), YoloPreset)
    assert isinstance(preset_for(["yolo", "val", "data=x.yaml"], None), GenericPreset)


def test_yolo_resumes_the_runs_own_last_pt_with_the_same_batch(tmp_path: Path) -> None:
    preset = _yolo(tmp_path)
    last = _torch_file(tmp_path / "runs" / "detect" / "p" / "y" / "weights" / "last.pt")
    restart = preset.restart(YOLO, memory=False)
    assert restart.argv == [*[a for a in YOLO if a != "model=yolov8s.pt"], f"model={last}", "resume=True"]
    assert restart.resume_from == str(last)
    assert restart.note == f"resumes from {last}"


def test_yolo_memory_kills_lower_the_batch_and_the_lower_batch_stays(tmp_path: Path) -> None:
    preset = _yolo(tmp_path)
    _torch_file(tmp_path / "runs" / "detect" / "p" / "y" / "weights" / "last.pt")
    first = preset.restart(YOLO, memory=True)
    assert [a for a in first.argv if a.startswith("batch=")] == ["batch=12"]
    second = preset.restart(first.argv, memory=True)
    assert second.argv.count("resume=True") == 1 and len(second.argv) == len(first.argv)
    assert [a for a in second.argv if a.startswith("batch=")] == ["batch=9"]
    after_a_plain_kill = preset.restart(second.argv, memory=False)
    assert [a for a in after_a_plain_kill.argv if a.startswith("batch=")] == ["batch=9"]


def test_yolo_before_any_checkpoint_starts_over_in_the_same_folder(tmp_path: Path) -> None:
    preset = _yolo(tmp_path)
    (tmp_path / "runs" / "detect" / "p" / "y" / "weights").mkdir(parents=True)  # what the first start made
    restart = preset.restart(YOLO, memory=True)
    assert restart.argv == [*[a for a in YOLO if a != "batch=16"], "exist_ok=True", "batch=12"]
    assert restart.resume_from is None
    assert restart.note == f"starts over in {tmp_path / 'runs/detect/p/y'} (no epoch had finished)"


def test_yolo_in_a_folder_taken_before_the_start_keeps_ultralytics_suffix(tmp_path: Path) -> None:
    for taken in ("y", "y-2"):
        _torch_file(tmp_path / "runs" / "detect" / "p" / taken / "weights" / "last.pt")
    preset = _yolo(tmp_path)
    y3 = tmp_path / "runs" / "detect" / "p" / "y-3"
    assert preset.folder.save_dir == y3
    again = preset.restart(YOLO, memory=False)  # the older runs' last.pt are not this run's
    assert again.argv == [*[a for a in YOLO if a != "name=y"], "name=y-3", "exist_ok=True"]
    last = _torch_file(y3 / "weights" / "last.pt")
    assert preset.restart(again.argv, memory=False).resume_from == str(last)


def test_yolo_does_not_resume_a_last_pt_left_from_before_the_start(tmp_path: Path) -> None:
    command = [*YOLO, "exist_ok=True"]
    stale = _torch_file(tmp_path / "runs" / "detect" / "p" / "y" / "weights" / "last.pt", 7, "an older run")
    preset = _yolo(tmp_path, command)
    assert preset.restart(command, memory=False).argv == command  # starts over, in y (exist_ok)
    _torch_file(stale, 0, "this run's epoch 1")
    assert preset.restart(command, memory=False).resume_from == str(stale)


def test_yolo_does_not_resume_a_last_pt_that_a_kill_cut_short(tmp_path: Path) -> None:
    preset = _yolo(tmp_path)
    last = _torch_file(tmp_path / "runs" / "detect" / "p" / "y" / "weights" / "last.pt")
    whole = last.read_bytes()
    last.write_bytes(whole[: len(whole) // 2])
    restart = preset.restart(YOLO, memory=False)
    assert restart.resume_from is None and "exist_ok=True" in restart.argv
    assert restart.note.endswith("(its last.pt is torn)")


def test_yolo_killed_in_its_closing_validation_only_validates_again(tmp_path: Path) -> None:
    preset = _yolo(tmp_path)
    run = tmp_path / "runs" / "detect" / "p" / "y"
    _torch_file(run / "weights" / "last.pt", epoch=-1)  # ultralytics' mark of a training that ended
    best = _torch_file(run / "weights" / "best.pt", epoch=-1)
    restart = preset.restart(YOLO, memory=True)
    assert restart.argv == ["/venv/bin/yolo", "detect", "val", f"model={best}", "data=rdd.yaml", "imgsz=640",
                            f"project={run.parent}", "name=y", "exist_ok=True", "batch=12"]
    assert restart.resume_from is None
    assert restart.note.startswith(f"validates {best}: its training had ended")


def test_a_real_torch_save_is_whole_and_a_cut_one_is_not(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "last.pt"
    torch.save({"model": torch.zeros(1000)}, path)
    assert complete_torch_file(path)
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 10):
        path.write_bytes(data[:cut])
        assert not complete_torch_file(path), cut


def test_yolo_that_resumes_by_itself_is_restarted_as_it_is(tmp_path: Path) -> None:
    command = ["yolo", "train", "resume", "model=p/y/weights/last.pt"]
    restart = _yolo(tmp_path, command).restart(command, memory=True)
    assert restart.argv == [*command, "batch=12"]
    assert restart.resume_from == str(tmp_path / "p/y/weights/last.pt")


@pytest.mark.parametrize(("batch", "smaller"), [("16", "12"), ("1", "1"), ("2", "1"), (None, "12"),
                                                 ("0.8", "0.6"), ("-1", "0.45")])
def test_smaller_yolo_batch(batch: str | None, smaller: str) -> None:
    assert smaller_yolo_batch(batch) == smaller


def _hf_checkpoint(out: Path, step: int, whole: bool = True) -> Path:
    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}) if whole else '{"global_')
    return folder


def test_hf_resumes_from_the_newest_whole_checkpoint_this_run_wrote(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _hf_checkpoint(out, 5000)  # an earlier run's, already there before the start
    command = ["python", "train_hf.py", "--output_dir", "out", "--per_device_train_batch_size", "8"]
    preset = preset_for(command, None, cwd=tmp_path)
    assert isinstance(preset, HuggingFacePreset)
    for step in (500, 1500, 1000):
        _hf_checkpoint(out, step)
    _hf_checkpoint(out, 2000, whole=False)  # killed while the Trainer wrote it
    (out / "checkpoint-999.json").write_text("{}")  # a file, not a checkpoint folder
    assert newest_checkpoint(out) == out / "checkpoint-5000"
    restart = preset.restart(command, memory=False)
    assert restart.argv == [*command, "--resume_from_checkpoint", "out/checkpoint-1500"]
    assert (restart.resume_from, restart.note) == ("out/checkpoint-1500", "resumes from out/checkpoint-1500")


def test_hf_memory_kill_halves_the_batch_and_keeps_the_effective_batch(tmp_path: Path) -> None:
    command = ["python", "train_hf.py", "--output_dir=out", "--per_device_train_batch_size", "6",
               "--gradient_accumulation_steps", "2"]
    preset = HuggingFacePreset(command, cwd=tmp_path)
    _hf_checkpoint(tmp_path / "out", 20)
    argv = preset.restart(command, memory=True).argv
    assert argv == ["python", "train_hf.py", "--output_dir=out", "--per_device_train_batch_size", "3",
                    "--gradient_accumulation_steps", "4", "--resume_from_checkpoint", "out/checkpoint-20"]


def test_hf_without_a_checkpoint_starts_over(tmp_path: Path) -> None:
    command = ["python", "train_hf.py", "--output_dir", "out"]
    restart = HuggingFacePreset(command, cwd=tmp_path).restart(command, memory=False)
    assert (restart.argv, restart.resume_from) == (command, None)
    assert restart.note == "starts over: no whole checkpoint-N in out yet"


LIGHTNING = ["python", "train_pl.py", "fit", "--trainer.default_root_dir", "root", "--data.batch_size", "32"]


def test_lightning_is_recognised_by_its_fit_subcommand() -> None:
    assert isinstance(preset_for(LIGHTNING, None), LightningPreset)
    assert isinstance(preset_for(["my-cli", "fit", "--config", "c.yaml"], None), LightningPreset)
    assert isinstance(preset_for(["python", "-m", "pkg.train", "fit"], None), LightningPreset)
    assert isinstance(preset_for(["python", "train.py", "--mode", "fit"], None), GenericPreset)


def test_lightning_resumes_from_the_newest_whole_checkpoint_of_this_run(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _torch_file(root / "lightning_logs" / "version_0" / "checkpoints" / "epoch=9-step=90.ckpt")  # earlier run
    preset = preset_for(LIGHTNING, None, cwd=tmp_path)
    assert isinstance(preset, LightningPreset)
    first = _torch_file(root / "lightning_logs" / "version_1" / "checkpoints" / "epoch=0-step=10.ckpt")
    second = _torch_file(root / "lightning_logs" / "version_1" / "checkpoints" / "epoch=1-step=20.ckpt")
    os.utime(first, ns=(1, 1))  # older than ``second``
    torn = _torch_file(root / "lightning_logs" / "version_1" / "checkpoints" / "epoch=2-step=30.ckpt")
    torn.write_bytes(torn.read_bytes()[:20])
    restart = preset.restart(LIGHTNING, memory=False)
    assert restart.argv == [*LIGHTNING, "--ckpt_path", str(second)]
    assert restart.resume_from == str(second)
    memory = preset.restart(restart.argv, memory=True)
    assert memory.argv == ["python", "train_pl.py", "fit", "--trainer.default_root_dir", "root",
                           "--data.batch_size", "16", "--trainer.accumulate_grad_batches", "2",
                           "--ckpt_path", str(second)]


def test_lightning_finds_its_root_in_a_config_file_and_starts_over_with_no_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("trainer:\n  default_root_dir: from_config\n  max_epochs: 3\n")
    command = ["python", "train_pl.py", "fit", "--config", "c.yaml"]
    preset = LightningPreset(command, cwd=tmp_path)
    assert preset.root == tmp_path / "from_config"
    restart = preset.restart([*command, "--ckpt_path", "old.ckpt"], memory=False)
    assert (restart.argv, restart.resume_from) == (command, None)
    assert restart.note == f"starts over: no checkpoint of this run under {tmp_path / 'from_config'} yet"


def test_generic_appends_resume_args_once_and_they_win_over_presets() -> None:
    preset = preset_for(YOLO, "--resume --ckpt 'last run.pt'")
    assert isinstance(preset, GenericPreset)
    first = preset.restart(YOLO, memory=True)
    assert first.argv == [*YOLO, "--resume", "--ckpt", "last run.pt"]
    assert preset.restart(first.argv, memory=False).argv == first.argv
    assert first.resume_from is None
