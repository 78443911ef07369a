"""``oomguard probe``, ``report`` and ``doctor`` as a user runs them: real subprocesses, real output."""

from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import oomguard


def test_probe_json_is_one_object_with_a_plan_that_fits(tmp_path: Path) -> None:
    done = oomguard("probe", "dev_samples=64", "batch=16", "imgsz=16", "memory_limit=4GB", "--json",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.strip().splitlines()
    plan = json.loads(line)
    assert 1 <= plan["microbatch"] <= 16 and plan["ceiling"] == 16
    assert plan["budget"] == 4_000_000_000
    assert plan["table"][0]["size"] == 1
    assert all(row["peak"] > 0 for row in plan["table"])
    assert not (tmp_path / "runs").exists()  # probing writes no run directory


def test_probe_prints_the_table_and_the_plan(tmp_path: Path) -> None:
    done = oomguard("probe", "dev_samples=64", "batch=8", "imgsz=16", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "train" in done.stdout and "eval" in done.stdout
    assert "plan: device cpu" in done.stdout.replace("\n", " ")


def test_report_rewrites_the_report_of_a_run(tmp_path: Path) -> None:
    assert oomguard("train", "--no-supervise", "dev_samples=32", "epochs=1", "batch=16", "imgsz=16",
                    cwd=tmp_path).returncode == 0
    run = tmp_path / "runs" / "exp"
    (run / "report.html").unlink()
    done = oomguard("report", "runs/exp", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    html = (run / "report.html").read_text()
    assert "<svg" in html and "finished" in html
    assert (run / "memory.png").stat().st_size > 10_000


def test_report_of_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    done = oomguard("report", "runs/nothing", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "oomguard: error: not a run directory: runs/nothing does not exist; give the folder of a run, "
        "like runs/exp"]


def test_doctor_explains_the_mps_watermark_setting(tmp_path: Path) -> None:
    done = oomguard("doctor", cwd=tmp_path, env={"PYTORCH_MPS_HIGH_WATERMARK_RATIO": "0.0"})
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "PYTORCH_MPS_HIGH_WATERMARK_RATIO" in text and "unset PYTORCH_MPS_HIGH_WATERMARK_RATIO" in text
