"""CheckpointStore: atomic saves, rotation, checksums, fallback past corruption, failing disks."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
from pathlib import Path

import pytest
import torch

from oomguard.checkpoint import CheckpointError, CheckpointStore, load_checkpoint
from oomguard.events import EventLog, read_events


def tiny_state(step: int, size: int = 500) -> dict:
    return {"model": {"w": torch.full((size,), float(step))}, "epoch": 0, "step": step}


def make_store(tmp_path: Path, keep: int = 2) -> tuple[CheckpointStore, list[str]]:
    messages: list[str] = []
    store = CheckpointStore(tmp_path / "weights", keep=keep, events=EventLog(tmp_path / "events.jsonl"),
                            console=messages.append)
    return store, messages


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def checkpoint_events(tmp_path: Path, key: str) -> list[dict]:
    return [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "checkpoint" and key in e]


def test_save_publishes_checkpoint_last_pt_and_checksum(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    result = store.save(tiny_state(5), step=5)
    ckpt = tmp_path / "weights" / "ckpt-000000005.pt"
    assert result.ok and result.path == ckpt and result.bytes == ckpt.stat().st_size
    sidecar = tmp_path / "weights" / "ckpt-000000005.pt.sha256"
    assert sidecar.read_text() == f"{sha(ckpt)}  ckpt-000000005.pt\n"
    assert result.sha256 == sha(ckpt)
    last = torch.load(tmp_path / "weights" / "last.pt", weights_only=True)
    assert torch.equal(last["model"]["w"], torch.full((500,), 5.0))
    assert store.last.samefile(ckpt)  # a hard link, not a second copy
    (event,) = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "checkpoint"]
    assert event["path"] == str(ckpt) and event["step"] == 5 and event["epoch"] == 0
    assert event["bytes"] == ckpt.stat().st_size and event["seconds"] >= 0


def test_keep_two_leaves_two_checkpoints_and_best_survives_rotation(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path, keep=2)
    for step in range(1, 6):
        assert store.save(tiny_state(step), step, best=step == 2).ok
    assert names(tmp_path / "weights") == [
        "best.pt", "best.pt.sha256", "ckpt-000000004.pt", "ckpt-000000004.pt.sha256",
        "ckpt-000000005.pt", "ckpt-000000005.pt.sha256", "last.pt", "last.pt.sha256",
    ]
    assert store.load(store.best)["step"] == 2
    assert store.load(store.last)["step"] == 5
    assert torch.load(store.best, weights_only=True)["model"]["w"][0].item() == 2.0


def test_resaving_a_step_replaces_it_and_later_steps_of_an_abandoned_timeline_go(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path, keep=3)
    for step in (1, 2, 3):
        store.save(tiny_state(step), step)
    store.save(tiny_state(20), step=2)  # resumed from step 2, ran differently
    assert [s for s, _ in store.checkpoints()] == [2, 1]
    state, path = store.load_latest()
    assert path.name == "ckpt-000000002.pt" and state["step"] == 20
    assert len((tmp_path / "weights" / "ckpt-000000002.pt.sha256").read_text().splitlines()) == 1


@pytest.mark.parametrize("damage", ["truncate", "bitflip"])
def test_damaged_newest_checkpoint_falls_back_to_older_and_reports(tmp_path: Path, damage: str) -> None:
    store, messages = make_store(tmp_path)
    store.save(tiny_state(1), 1)
    store.save(tiny_state(2), 2)
    newest = tmp_path / "weights" / "ckpt-000000002.pt"
    data = bytearray(newest.read_bytes())
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    else:
        data[len(data) // 2] ^= 0x01
        newest.write_bytes(data)
    state, path = store.load_latest()
    assert path.name == "ckpt-000000001.pt" and state["step"] == 1
    (event,) = checkpoint_events(tmp_path, "corrupt")  # last.pt is the same file: reported once, not twice
    assert event["corrupt"] == str(newest) and "checksum mismatch" in event["reason"]
    assert any("ckpt-000000002.pt is corrupt" in message for message in messages)


def test_only_corrupt_checkpoints_give_a_one_line_error(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    store.save(tiny_state(1), 1)
    store.save(tiny_state(2), 2)
    for path in (tmp_path / "weights").glob("ckpt-*.pt"):
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError) as caught:
        store.load_latest()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"no usable checkpoint in {tmp_path / 'weights'}: 2 found, none verifies")
    assert message.endswith("restore a good copy there or start a new run (another name=)")
    assert len(checkpoint_events(tmp_path, "corrupt")) == 2


def test_load_latest_of_an_empty_run_is_none(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    assert store.load_latest() is None


def test_explicit_checkpoint_errors_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match=r"^checkpoint .*nope\.pt does not exist; give the path"):
        load_checkpoint(missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip archive")
    with pytest.raises(CheckpointError, match=r"^checkpoint .*garbage\.pt is unreadable: torch cannot read"):
        load_checkpoint(garbage)
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": {}, "config": Path("x")}, pickled)  # a pickled object: refused weights-only
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(pickled)
    assert "\n" not in str(caught.value) and "weights_only=True" in str(caught.value)
    # A foreign file without a sidecar loads; the store itself insists on the checksum.
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"w": torch.ones(2)}}, foreign)
    assert torch.equal(load_checkpoint(foreign)["model"]["w"], torch.ones(2))
    store, _ = make_store(tmp_path)
    with pytest.raises(CheckpointError, match=r"no checksum file foreign\.pt\.sha256"):
        store.load(foreign)


def test_leftovers_of_a_killed_writer_are_removed_on_first_save(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / ".ckpt-000000003.pt.tmp-999999999-0").write_bytes(b"torn")
    (weights / "ckpt-000000001.pt.sha256").write_text("0" * 64 + "  ckpt-000000001.pt\n")
    store, _ = make_store(tmp_path)
    store.save(tiny_state(4), 4)
    assert names(weights) == ["ckpt-000000004.pt", "ckpt-000000004.pt.sha256", "last.pt", "last.pt.sha256"]


def assert_failed_save_kept_step_one(tmp_path: Path, store: CheckpointStore, messages: list[str],
                                     before: dict[str, str], code: str) -> None:
    weights = tmp_path / "weights"
    assert {name: sha(weights / name) for name in names(weights)} == before  # nothing touched, no tmp files
    state, path = store.load_latest()
    assert state["step"] == 1 and path.name == "ckpt-000000001.pt"
    (event,) = checkpoint_events(tmp_path, "error")
    assert event["step"] == 2 and code in event["error"]
    (warning,) = messages
    assert warning.startswith("oomguard: warning: checkpoint of step 2 not saved: ")
    assert "ckpt-000000001.pt is intact; training goes on" in warning


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE (POSIX)")
def test_disk_full_in_the_middle_of_a_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    import resource

    store, messages = make_store(tmp_path)
    store.save(tiny_state(1, size=50_000), 1)
    weights = tmp_path / "weights"
    before = {name: sha(weights / name) for name in names(weights)}
    (tmp_path / "events.jsonl").write_text("")
    # The kernel refuses writes past 64 kB (EFBIG): the 200 kB checkpoint is torn off mid-file,
    # as on a full disk.
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, hard))
    try:
        result = store.save(tiny_state(2, size=50_000), 2)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert not result.ok and result.path is None and "EFBIG" in (result.error or "")
    assert_failed_save_kept_step_one(tmp_path, store, messages, before, "EFBIG")


def test_fsync_failing_with_no_space_keeps_the_previous_checkpoint(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    store, messages = make_store(tmp_path)
    store.save(tiny_state(1), 1)
    weights = tmp_path / "weights"
    before = {name: sha(weights / name) for name in names(weights)}
    (tmp_path / "events.jsonl").write_text("")

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    result = store.save(tiny_state(2), 2)
    monkeypatch.undo()
    assert result.error == "No space left on device [ENOSPC]"
    assert_failed_save_kept_step_one(tmp_path, store, messages, before, "ENOSPC")


def test_weights_directory_that_cannot_exist_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("a file where the run directory should be")
    messages: list[str] = []
    store = CheckpointStore(tmp_path / "run" / "weights", events=EventLog(tmp_path / "events.jsonl"),
                            console=messages.append)
    result = store.save(tiny_state(1), 1)
    assert not result.ok and "ENOTDIR" in (result.error or "")
    assert "no earlier checkpoint exists" in messages[0]
    assert [e["error"] for e in read_events(tmp_path / "events.jsonl")] == [result.error]


def test_failure_after_publishing_keeps_the_new_checkpoint_and_old_last_pt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, messages = make_store(tmp_path)
    store.save(tiny_state(1), 1)

    def no_space(source: object, target: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "link", no_space)
    result = store.save(tiny_state(2), 2)
    monkeypatch.undo()
    assert result.error == "No space left on device [ENOSPC]"
    assert result.path == tmp_path / "weights" / "ckpt-000000002.pt"
    assert store.load(store.last)["step"] == 1  # intact and verifiable
    assert store.load_latest()[0]["step"] == 2
    assert "saved as ckpt-000000002.pt, but updating last.pt failed" in messages[0]
    assert not [name for name in names(tmp_path / "weights") if ".tmp-" in name]


def test_file_systems_without_hard_links_get_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(source: object, target: object) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))  # FAT, exFAT, some network mounts

    monkeypatch.setattr(os, "link", no_links)
    store, messages = make_store(tmp_path, keep=1)
    store.save(tiny_state(1), 1, best=True)
    store.save(tiny_state(2), 2)
    assert not messages and not store.last.samefile(store.path_for(2))
    assert store.load(store.last)["step"] == 2 and store.load(store.best)["step"] == 1
    assert [step for step, _ in store.checkpoints()] == [2]
