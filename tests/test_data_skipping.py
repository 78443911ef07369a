"""Images that become unreadable during training: skipped, the batch completed, the resume position exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oomguard.data.dataset import TargetScale
from oomguard.data.images import FileDataset
from oomguard.data.loader import make_eval_loader, make_rank_loader, make_train_loader
from oomguard.data.sampler import ResumableSampler, epoch_order
from oomguard.data.shard import RankBatches
from oomguard.data.skipping import WARNED, SkipReport, Unreadable
from oomguard.errors import DataError
from oomguard.events import Data as DataEvent
from oomguard.events import EventLog, load_events

COUNT, BATCH, SEED, EPOCH = 40, 8, 5, 1
BROKEN = (5, 17, 18, 33)


def numbered_images(root: Path, broken: tuple[int, ...] = BROKEN) -> FileDataset:
    """``COUNT`` images whose label is their own number; those in ``broken`` truncated on disk."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(COUNT):
        path = root / f"{number:02d}.png"
        noise = np.random.default_rng(number).integers(0, 256, (10, 10, 3), dtype=np.uint8)
        Image.fromarray(noise).save(path)
        if number in broken:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])  # cut in the middle of its pixels
        paths.append(path)
    no_targets = np.zeros((COUNT, 0))
    return FileDataset(paths, np.arange(COUNT), no_targets, TargetScale.fit([], no_targets), 8)


def expected_batches(start: int = 0) -> list[tuple[list[int], int]]:
    """(sample numbers, unreadable positions passed over) per batch from ``start``: readable ones in order."""
    order = epoch_order(COUNT, SEED, EPOCH).tolist()[start:]
    batches, current, passed = [], [], 0
    for number in order:
        if number in BROKEN:
            passed += 1
            continue
        current.append(number)
        if len(current) == BATCH:
            batches.append((current, passed))
            current, passed = [], 0
    if current:
        batches.append((current, passed))
    return batches


def run_epoch(dataset: FileDataset, workers: int, start: int = 0, report: SkipReport | None = None
              ) -> list[tuple[list[int], int]]:
    sampler = ResumableSampler(COUNT, SEED)
    sampler.set_epoch(EPOCH)
    sampler.set_start(start)
    loader = make_train_loader(dataset, BATCH, sampler, workers=workers, seed=SEED, report=report)
    seen = []
    for batch in loader:
        assert batch["image"].shape[1:] == (3, 8, 8)
        seen.append((batch["label"].tolist(), loader.skipped))
    return seen


@pytest.mark.parametrize("workers", [0, 2])
def test_the_batch_is_completed_from_the_next_samples_and_says_what_it_passed_over(tmp_path: Path,
                                                                                   workers: int) -> None:
    dataset = numbered_images(tmp_path / "images")
    said: list[str] = []
    log = EventLog(tmp_path / "events.jsonl")
    report = SkipReport(log, said.append, where=lambda: (2, 7))
    seen = run_epoch(dataset, workers, report=report)
    assert seen == expected_batches()
    assert [len(labels) for labels, _ in seen] == [8, 8, 8, 8, 4]  # 36 readable samples: full batches
    assert sum(passed for _, passed in seen) + sum(len(labels) for labels, _ in seen) == COUNT
    skips = [e for e in load_events(log.path) if isinstance(e, DataEvent)]  # type: ignore[arg-type]
    assert sorted(Path(str(e.path)).name for e in skips) == [f"{n:02d}.png" for n in BROKEN]
    assert {(e.action, e.phase, e.epoch, e.step, e.reason) for e in skips} == {
        ("skip", "train", 2, 7, "image file is truncated")}
    assert len(said) == len(BROKEN) and all(line.startswith("warning: image file ") for line in said)
    run_epoch(dataset, workers, report=report)  # the next epoch meets them again: events, no new warning
    assert len(said) == len(BROKEN) and report.count == 2 * len(BROKEN)


def test_no_unreadable_image_means_the_loader_batches_pass_through(tmp_path: Path) -> None:
    dataset = numbered_images(tmp_path / "fine", broken=())
    order = epoch_order(COUNT, SEED, EPOCH).tolist()
    seen = run_epoch(dataset, workers=0)
    assert seen == [(order[i:i + BATCH], 0) for i in range(0, COUNT, BATCH)]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resume_at_the_counted_position_continues_with_the_very_same_batches(tmp_path: Path,
                                                                               workers: int) -> None:
    dataset = numbered_images(tmp_path / "images")
    whole = run_epoch(dataset, workers)
    position = 0
    for done in range(len(whole)):  # the loop's count after each step: size + skipped
        assert run_epoch(dataset, workers, start=position) == whole[done:]
        assert expected_batches(position) == whole[done:]
        labels, passed = whole[done]
        position += len(labels) + passed


def test_validation_leaves_unreadable_images_out(tmp_path: Path) -> None:
    dataset = numbered_images(tmp_path / "images")
    seen: list[Unreadable] = []

    def remember(unreadable: Unreadable, phase: str) -> None:
        assert phase == "val"
        seen.append(unreadable)

    labels = [batch["label"].tolist() for batch in make_eval_loader(dataset, 16, workers=0, report=remember)]
    spans = ((0, 16), (16, 32), (32, 40))
    assert labels == [[n for n in range(lo, hi) if n not in BROKEN] for lo, hi in spans]
    assert [Path(u.path).name for u in seen] == [f"{n:02d}.png" for n in BROKEN]


def test_a_rank_keeps_its_batch_size_with_a_readable_neighbour_in_place(tmp_path: Path) -> None:
    dataset = numbered_images(tmp_path / "images")
    order = epoch_order(COUNT, SEED, EPOCH).tolist()
    for rank in range(2):
        sampler = ResumableSampler(COUNT, SEED)
        sampler.set_epoch(EPOCH)
        loader = make_rank_loader(dataset, RankBatches(sampler, BATCH, rank, 2), workers=0, seed=SEED)
        for offset, batch in zip(range(0, COUNT, BATCH), loader, strict=True):
            mine = order[offset + rank * 4: offset + rank * 4 + 4]
            got = batch["label"].tolist()
            assert len(got) == 4 and loader.skipped == 0
            for place, number in enumerate(mine):
                if number in BROKEN:
                    assert got[place] in mine and got[place] not in BROKEN
                else:
                    assert got[place] == number


def test_a_cached_dataset_skips_a_file_that_could_not_be_decoded_into_the_cache(tmp_path: Path) -> None:
    source = numbered_images(tmp_path / "images")
    cached = FileDataset(source.paths, source.labels, np.zeros((COUNT, 0)), source.scale, 8, cache=True)
    assert sum(isinstance(item, np.ndarray) for item in cached.cached or []) == COUNT - len(BROKEN)
    sampler = ResumableSampler(COUNT, SEED)
    sampler.set_epoch(EPOCH)
    loader = make_train_loader(cached, BATCH, sampler, workers=0, seed=SEED)
    assert [(batch["label"].tolist(), loader.skipped) for batch in loader] == expected_batches()
    assert torch.equal(cached[0]["image"], source[0]["image"])


def test_an_epoch_with_nothing_readable_stops_with_words_not_an_empty_run(tmp_path: Path) -> None:
    dataset = numbered_images(tmp_path / "gone", broken=tuple(range(COUNT)))
    with pytest.raises(DataError) as err:
        run_epoch(dataset, workers=0)
    assert str(err.value) == ("none of the 40 images left in this epoch can be read (the last warnings say "
                              "why); check that the dataset is still there, then resume")


def test_warnings_stop_after_a_few_files_the_events_go_on(tmp_path: Path) -> None:
    said: list[str] = []
    log = EventLog(tmp_path / "events.jsonl")
    report = SkipReport(log, said.append)
    for number in range(WARNED + 5):
        report(Unreadable(f"/d/{number}.png", "not found"), "train")
        report(Unreadable(f"/d/{number}.png", "not found"), "train")
    assert len(said) == WARNED + 1
    assert said[-1] == (f"warning: more than {WARNED} image files cannot be read; the others are recorded as "
                        "data events in events.jsonl only")
    assert len(load_events(log.path)) == 2 * (WARNED + 5)  # type: ignore[arg-type]
