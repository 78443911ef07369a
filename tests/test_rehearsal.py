"""``rehearse=true``: a short run that projects the end of the full run and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import oomguard
from oomguard.loop.rehearsal import project

MB = 10**6  # format_bytes is decimal


def test_a_climb_is_projected_to_the_end_of_the_run() -> None:
    flat = project(peak=500 * MB, slope=-3.0, steps=200, total_steps=10_000, budget=1000 * MB)
    assert flat.projected == 500 * MB and flat.fits
    climbing = project(peak=500 * MB, slope=0.1 * MB, steps=200, total_steps=10_000, budget=1000 * MB)
    assert climbing.projected == 500 * MB + 980 * MB and not climbing.fits
    assert climbing.words().endswith("projected peak at the end: 1.5 GB of budget 1.0 GB: will not fit")


def test_rehearse_says_it_fits_and_writes_no_run(tmp_path: Path) -> None:
    done = oomguard("train", "rehearse=true", "dev_samples=64", "epochs=50", "batch=16", "imgsz=16",
                    "workers=0", "warmup_epochs=0", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rehearsed 4 of 200 steps, a validation pass and a checkpoint" in done.stdout
    assert done.stdout.strip().endswith(": fits")
    assert not (tmp_path / "runs").exists()
