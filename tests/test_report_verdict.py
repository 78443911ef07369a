"""The one-sentence verdict, driven with hand-made events and memory summaries."""

from __future__ import annotations

from typing import Any

from oomguard.report.timeline import MemorySummary
from oomguard.report.verdict import verdict

GB = 10**9
T0 = 1_767_225_600.0


def ev(at: float, event: str, **details: Any) -> dict[str, Any]:
    return {"time": T0 + at, "event": event, **details}


def memory(peak: float, seconds: float = 3600, device: float = 0) -> MemorySummary:
    return MemorySummary(rows=100, start=T0, end=T0 + seconds, peak_tree_rss=int(peak),
                         peak_device_allocated=int(device), peak_device_reserved=int(device))


def two_kills() -> list[dict[str, Any]]:
    return [
        ev(0, "start", attempt=1, device="mps", budget=12 * GB),
        ev(5, "plan", microbatch=16, eval_microbatch=32, budget=12 * GB),
        ev(1000, "kill", cause="memory_kill", signal=9, attempt=1),
        ev(1002, "restart", cause="memory_kill", attempt=2),
        ev(1005, "start", attempt=2, device="mps", budget=12 * GB, epoch=3),
        ev(2000, "kill", cause="memory_kill", signal=9, attempt=2),
        ev(2002, "restart", cause="memory_kill", attempt=3),
        ev(2005, "start", attempt=3, device="mps", budget=12 * GB, epoch=6),
    ]


def test_finished_after_two_memory_kills() -> None:
    events = [*two_kills(), ev(3600, "finish", epochs=10)]
    assert verdict(events, memory(11.2 * GB)) == (
        "finished in 1h00m; 2 memory kills survived; peak 11.2 GB of a 12 GB budget; no leak"
    )


def test_unfinished_run_says_where_it_was_last_seen() -> None:
    events = [*two_kills(), ev(2600, "checkpoint", epoch=8, step=800, seconds=0.3)]
    assert verdict(events, memory(9.5 * GB, seconds=2700)) == (
        "unfinished: no finish event, still running or stopped without a trace (last record at epoch 8, "
        "45m00s in); 2 memory kills survived; peak 9.5 GB of a 12 GB budget; no leak"
    )


def test_last_kill_not_restarted() -> None:
    events = two_kills()[:6]
    assert verdict(events, memory(12.5 * GB)) == (
        "unfinished: ended by a memory kill that was not restarted; 2 memory kills (1 survived); "
        "peak 12.5 GB, over the 12 GB budget; no leak"
    )


def test_leak_ooms_and_pressure_are_named() -> None:
    events = [
        ev(0, "start", attempt=1, device="cpu", budget=4 * GB),
        ev(1, "plan", microbatch=64, eval_microbatch=128, budget=4 * GB),
        ev(50, "oom", phase="train", microbatch=64, peak=int(4.2 * GB), budget=4 * GB),
        ev(51, "shrink", phase="train", **{"from": 64, "to": 32}, reason="oom"),
        ev(60, "oom", phase="eval", microbatch=128, peak=None, budget=4 * GB),
        ev(61, "shrink", phase="eval", **{"from": 128, "to": 64}, reason="oom"),
        ev(300, "pressure", available=int(0.4 * GB)),
        ev(400, "leak", bytes_per_hour=int(1.2 * GB)),
        ev(500, "finish", epochs=3),
    ]
    assert verdict(events, memory(3.1 * GB, seconds=500)) == (
        "finished in 8m20s; 2 out-of-memory errors caught, microbatch 64 → 32; 1 memory-pressure warning; "
        "peak 3.1 GB of a 4 GB budget; leak suspected (+1.2 GB/h)"
    )


def test_cuda_peak_is_the_allocator_peak_and_no_budget() -> None:
    events = [ev(0, "start", device="cuda:0", budget=None), ev(90, "stop", reason="SIGTERM")]
    assert verdict(events, memory(3 * GB, device=7.5 * GB)) == (
        "stopped (SIGTERM); peak 7.5 GB, no budget; no leak"
    )


def test_command_exit_code_and_missing_data() -> None:
    # The supervisor's stop after a command that kept failing (the only writer of an exit code).
    events = [ev(0, "start", attempt=1), ev(30, "stop", cause="bug", reason="failed again", exit_code=3)]
    assert verdict(events, None) == "failed with exit code 3; no leak"
    assert verdict([], None) == "no events and no memory samples recorded"


def test_the_peak_is_the_timelines_memory_used_where_it_has_that_column() -> None:
    # On MPS the process tree's RSS leaves Metal's memory out; ``used`` holds both.
    events = [*two_kills(), ev(3600, "finish", epochs=10)]
    summary = MemorySummary(rows=100, start=T0, end=T0 + 3600, peak_tree_rss=int(4 * GB),
                            peak_device_reserved=int(7 * GB), peak_used=int(11.5 * GB))
    assert "peak 11.5 GB of a 12 GB budget" in verdict(events, summary)


def peak_check(at: float, epoch: int, predicted: float, measured: float, **details: Any) -> dict[str, Any]:
    return ev(at, "peak_check", epoch=epoch, predicted=int(predicted), measured=int(measured), microbatch=16,
              eval_microbatch=32, margin=0.05, parts={"process": int(predicted)}, measured_parts={},
              **details)


def test_a_peak_that_parted_from_its_prediction_is_named_with_the_part_that_grew() -> None:
    events = [
        *two_kills()[:2],
        peak_check(600, 1, 10 * GB, 10.4 * GB),  # 4%: within what the verdict lets pass
        peak_check(1200, 2, 10 * GB, 11.5 * GB, grew="evaluation", grew_by=int(1.3 * GB)),
        peak_check(1800, 3, 10 * GB, 8.8 * GB, grew="held", grew_by=int(-1.1 * GB)),
        ev(3600, "finish", epochs=3),
    ]
    assert verdict(events, memory(11.5 * GB)) == (
        "finished in 1h00m; peak 11.5 GB of a 12 GB budget; 2 epochs parted from the predicted peak by "
        "more than 10%; most, epoch 2 peaked 15% above its predicted 10 GB (11.5 GB measured): evaluation "
        "at the eval microbatch grew 1.3 GB against its prediction; no leak"
    )
    within = [*two_kills()[:2], peak_check(600, 1, 10 * GB, 10.9 * GB), ev(3600, "finish", epochs=1)]
    assert "parted" not in verdict(within, memory(10.9 * GB))


def test_the_memory_savers_in_force_at_the_end_are_named() -> None:
    events = [
        ev(0, "start", attempt=1, device="cpu", budget=2 * GB),
        ev(1, "saver", name="activation_checkpointing", on=True, reason="microbatch 1 did not fit"),
        ev(2, "plan", microbatch=2, eval_microbatch=4, budget=2 * GB, savers=["activation_checkpointing"]),
        ev(60, "saver", name="amp", on=True, reason="a step at microbatch 1 did not fit"),
        ev(3600, "finish", epochs=10),
    ]
    assert verdict(events, memory(1.5 * GB)) == (
        "finished in 1h00m; memory savers: activation_checkpointing, amp; peak 1.5 GB of a 2 GB budget; "
        "no leak")
    plain = [ev(0, "start", attempt=1, device="cpu", budget=2 * GB), ev(5, "plan", microbatch=8, savers=[]),
             ev(3600, "finish", epochs=10)]
    assert "memory savers" not in verdict(plain, memory(1.5 * GB))
