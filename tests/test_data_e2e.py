"""Real datasets as people have them, trained by a real ``oomguard train``: layouts, bad images, resumes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cli_helpers import COLOURS, oomguard
from oomguard.data.sampler import epoch_order
from test_data_decode import png16

FAST = ["batch=8", "microbatch=8", "val_batch=8", "imgsz=16", "warmup_epochs=0", "workers=0", "lr=0.01"]


def colour_image(path: Path, colour: tuple[int, int, int], rng: np.random.Generator, size: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = rng.integers(-40, 40, size=(size, size, 3))
    Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)).save(path)
    return path


def class_folders(root: Path, per_class: int, seed: int = 0) -> Path:
    """``root/<colour>/*.png``: an ImageFolder root, the colour is the class."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        for i in range(per_class):
            colour_image(root / name / f"{name}_{i:03d}.png", colour, rng)
    return root


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def events(run: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if line.strip()]


def data_events(run: Path, action: str) -> list[dict[str, object]]:
    return [e for e in events(run) if e["event"] == "data" and e["action"] == action]


def epochs_done(run: Path) -> int:
    with open(run / "results.csv", newline="") as file:
        return len(list(csv.DictReader(file)))


def warnings_about(output: str, name: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("warning:") and name in line]


def test_what_real_photo_folders_hold_trains_and_a_resume_keeps_its_split(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "photos", per_class=12)
    truncate(root / "red" / "red_004.png")
    Image.new("L", (20, 20), 120).save(root / "green" / "grey.png")
    Image.new("RGBA", (20, 20), (30, 200, 40, 90)).save(root / "green" / "alpha.png")
    png16(root / "blue" / "deep.png", np.full((20, 20, 3), 40 * 257, dtype=np.uint16))
    (root / "blue" / "notes.txt").write_text("taken at noon")
    (root / ".DS_Store").write_bytes(b"\0" * 8)

    refused = oomguard("train", "--no-supervise", f"data={root}", *FAST, "epochs=1", "strict_data=true",
                       "name=strict", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "oomguard: error: strict_data=true: 1 image cannot be read: red/red_004.png (image file is "
        "truncated); all are listed in runs/strict/skipped.csv; fix or remove them, or set strict_data=false "
        "to train without them"]
    assert "Traceback" not in refused.stderr
    strict = tmp_path / "runs" / "strict"
    assert not (strict / "weights" / "last.pt").exists() and not (strict / "events.jsonl").exists()

    done = oomguard("train", "--no-supervise", f"data={root}", *FAST, "epochs=1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "exp"
    assert warnings_about(done.stdout, "red_004.png") == [
        "warning: 1 image cannot be read and is left out: red/red_004.png (image file is truncated); all are "
        "listed in runs/exp/skipped.csv"]
    assert len([line for line in done.stdout.splitlines() if line.startswith("warning:")]) == 1
    assert f"data: class folders (DATA/<class>/) in {root}: 3 classes, 35 train / 3 val images" in done.stdout
    assert "data: 1 file that is not an image ignored (blue/notes.txt)" in done.stdout
    with open(run / "skipped.csv", newline="") as file:
        assert list(csv.DictReader(file)) == [
            {"image": "red/red_004.png", "split": "train", "reason": "image file is truncated"}]
    (indexed,) = data_events(run, "index")
    assert (indexed["train"], indexed["val"], indexed["skipped"], indexed["skipped_files"]) == (
        35, 3, 1, ["red/red_004.png"])
    assert [e["event"] for e in events(run)][:2] == ["start", "data"]
    recorded = json.loads((run / "dataset.json").read_text())
    trained = set(recorded["train"]["image"]) | set(recorded["val"]["image"])
    assert {"green/grey.png", "green/alpha.png", "blue/deep.png"} <= trained

    colour_image(root / "red" / "red_new.png", COLOURS["red"], np.random.default_rng(9))  # new since
    resumed = oomguard("train", "--no-supervise", "--resume", "epochs=2", "val_fraction=0.5", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert epochs_done(run) == 2
    assert json.loads((run / "dataset.json").read_text()) == recorded  # the same split, the same images
    last = data_events(run, "index")[-1]
    assert (last["recorded"], last["train"], last["val"]) == (True, 35, 3)
    assert "data: as recorded in runs/exp/dataset.json when the run started" in resumed.stdout
    assert warnings_about(resumed.stdout, "red_004.png") == []  # warned once, when it was left out


def food101(root: Path, per_class: int = 10) -> Path:
    """food-101's shape: images/<class>/<id>.jpg, meta/train.txt and meta/test.txt (``class/id``)."""
    rng = np.random.default_rng(1)
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for name, colour in zip(("apple_pie", "baklava", "churros"), COLOURS.values(), strict=True):
        for i in range(per_class):
            ident = str(100_000 + 7 * i)
            colour_image(root / "images" / name / f"{ident}.jpg", colour, rng)
            lines["test" if i % 5 == 0 else "train"].append(f"{name}/{ident}")
    (root / "meta").mkdir()
    for split, items in lines.items():
        (root / "meta" / f"{split}.txt").write_text("\n".join(items) + "\n")
    return root


def test_a_train_only_folder_and_food101_as_it_ships_each_train(tmp_path: Path) -> None:
    only = class_folders(tmp_path / "only" / "train", per_class=10).parent
    done = oomguard("train", "--no-supervise", f"data={only}", *FAST, "epochs=1", "name=only", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert ("3 classes, 27 train / 3 val images; validation: 10% of each class of the training images "
            "(val_fraction=0.1, seed=0)") in done.stdout
    assert epochs_done(tmp_path / "runs" / "only") == 1

    food = food101(tmp_path / "food-101")
    done = oomguard("train", "--no-supervise", f"data={food}", *FAST, "epochs=1", "name=food", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "data: food-101 (images/<class>/ listed by meta/train.txt and meta/test.txt)" in done.stdout
    assert "3 classes, 24 train / 6 val images; validation: meta/test.txt" in done.stdout
    assert epochs_done(tmp_path / "runs" / "food") == 1


def start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OOMGUARD_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "oomguard", "train", "--no-supervise", *args]
    return subprocess.Popen(command, cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def wait_for(process: subprocess.Popen[str], ready: object, limit: float = 120) -> None:
    """Poll the run's own files until ``ready()`` holds (the run must still be going)."""
    deadline = time.monotonic() + limit
    while not ready():  # type: ignore[operator]
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run did not get there in time"
        time.sleep(0.02)


def test_a_file_truncated_in_the_second_epoch_costs_one_warning_not_the_run(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "photos", per_class=16)
    process = start(tmp_path, f"data={root}", *FAST, "epochs=3", "workers=2")
    run = tmp_path / "runs" / "exp"
    wait_for(process, lambda: run.joinpath("results.csv").is_file() and epochs_done(run) >= 1)
    victim = root / json.loads((run / "dataset.json").read_text())["train"]["image"][0]
    truncate(victim)  # while epoch 2 runs (or just before): epoch 3 surely loads it again
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert epochs_done(run) == 3
    (warning,) = warnings_about(stdout, victim.name)
    assert warning.startswith(f"warning: image file {str(victim)!r} cannot be read (image file is truncated) "
                              "at epoch ")
    assert warning.endswith("left out of its batch, which is completed from the next images: fix or remove "
                            "it")
    skips = data_events(run, "skip")
    assert len(skips) >= 1 and {e["path"] for e in skips} == {str(victim)}
    assert all(int(e["epoch"]) >= 2 and e["phase"] == "train" for e in skips)  # type: ignore[call-overload]


STEPS = 12  # per epoch: 93 training images (4 of each class of 35 held out) in batches of 8
EXACT = ["batch=8", "microbatch=8", "val_batch=8", "imgsz=16", "warmup_epochs=0", "workers=0", "lr=0.01",
         "deterministic=true", "seed=3", "checkpoint_every=0.01s"]  # a checkpoint at nearly every step


def checkpointed_after_a_skip(run: Path) -> bool:
    """A checkpoint inside an epoch was written after the broken image was skipped (a resume starts there)."""
    logged = events(run)
    skips = [float(e["time"]) for e in logged if e["event"] == "data" and e["action"] == "skip"]  # type: ignore[arg-type]
    return bool(skips) and any(
        e["event"] == "checkpoint" and "path" in e and int(e["step"]) % STEPS  # type: ignore[call-overload]
        and float(e["time"]) > skips[0] for e in logged)  # type: ignore[arg-type]


def test_a_run_with_an_image_broken_since_it_started_resumes_exactly_after_a_kill(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "photos", per_class=35)
    first = oomguard("train", "--no-supervise", f"data={root}", *EXACT, "epochs=1", "name=ref", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    reference = tmp_path / "runs" / "ref"
    train = json.loads((reference / "dataset.json").read_text())["train"]["image"]
    assert -(-len(train) // 8) == STEPS
    victim = root / train[epoch_order(len(train), seed=3, epoch=1)[3]]  # the 4th sample of the second epoch
    truncate(victim)  # broken while no run is going: both resumes below meet it at the same step
    shutil.copytree(reference, tmp_path / "runs" / "killed")

    # Five epochs after the first: long enough to be caught after its skip, whatever the load.
    done = oomguard("train", "--no-supervise", "--resume", "epochs=6", "name=ref", cwd=tmp_path)
    assert done.returncode == 0, done.stderr

    killed = tmp_path / "runs" / "killed"
    process = start(tmp_path, "--resume", "epochs=6", "name=killed")
    wait_for(process, lambda: checkpointed_after_a_skip(killed))
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    final = oomguard("train", "--no-supervise", "--resume", "name=killed", cwd=tmp_path)
    assert final.returncode == 0, final.stderr

    expected = torch.load(reference / "weights" / "last.pt", weights_only=True)["model"]
    got = torch.load(killed / "weights" / "last.pt", weights_only=True)["model"]
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert {e["path"] for e in data_events(killed, "skip")} == {str(victim)}
