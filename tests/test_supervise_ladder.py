"""The restart ladder and how the supervisor reads the child's plan from its run directory."""

from __future__ import annotations

from pathlib import Path

from oomguard import events as ev
from oomguard.events import EventLog
from oomguard.rundir import RunDir
from oomguard.supervise.history import attempt_record, child_report, loader_memory
from oomguard.supervise.ladder import LoaderMemory, PlanState, next_rung

FULL = PlanState(microbatch=32, eval_microbatch=64, val_every=1, workers=4, cache=True, imgsz=224,
                 device="mps", release_every=10)


def _walk(state: PlanState, allow_degrade: bool) -> list[tuple[str, dict[str, object]]]:
    """Every rung taken from the top, as (name, overrides)."""
    taken, after = [], -1
    while (rung := next_rung(state, after, allow_degrade)) is not None:
        taken.append((rung.name, rung.overrides))
        after = rung.index
    return taken


def test_every_rung_in_order_with_allow_degrade() -> None:
    assert _walk(FULL, allow_degrade=True) == [
        ("microbatch", {"microbatch": 16}),
        ("eval", {"val_every": 2, "val_batch": 32}),
        ("loader", {"workers": 0, "cache": False}),
        ("release", {"release_every": 5}),
        ("imgsz", {"imgsz": 160}),
        ("device", {"device": "cpu"}),
    ]


def test_imgsz_only_with_allow_degrade() -> None:
    names = [name for name, _ in _walk(FULL, allow_degrade=False)]
    assert names == ["microbatch", "eval", "loader", "release", "device"]


def test_rungs_that_change_nothing_are_skipped_and_the_ladder_ends() -> None:
    lean = PlanState(microbatch=1, eval_microbatch=None, val_every=3, workers=0, cache=False, imgsz=None,
                     device="cpu", release_every=1)
    assert _walk(lean, allow_degrade=True) == [("eval", {"val_every": 6})]
    assert next_rung(lean, 1, allow_degrade=True) is None


def test_small_imgsz_rounds_to_a_multiple_of_8() -> None:
    state = PlanState(imgsz=40, device="cpu")
    rung = next_rung(state, 3, allow_degrade=True)
    assert rung is not None and rung.overrides == {"imgsz": 24}


def plan(microbatch: int, eval_microbatch: int) -> ev.Plan:
    return ev.Plan(microbatch=microbatch, eval_microbatch=eval_microbatch, ceiling=microbatch, budget=None,
                   fit={}, table=[], eval_fit=None, eval_table=[], optimizer_peak=0, snapshot_bytes=0,
                   start=0, seconds=0.0)


def test_child_report_reads_only_the_last_attempt(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    config = {"microbatch": "auto", "workers": 4, "val_every": 1, "imgsz": 224, "cache": True}
    log.emit(ev.Start(pid=1, attempt=1, resume=False, device="cuda:0", budget=8_000_000_000, config=config))
    log.emit(plan(microbatch=64, eval_microbatch=128))
    log.emit(ev.Start(pid=2, attempt=2, resume=True, device="cuda:0", budget=7_000_000_000,
                      config={"microbatch": 32, "workers": 4, "val_every": 1, "imgsz": 224, "cache": True}))
    log.emit(plan(microbatch=32, eval_microbatch=128))
    log.emit(ev.Shrink(phase="train", from_=32, to=24, reason="oom", predicted=None))
    log.emit(ev.Shrink(phase="eval", from_=128, to=96, reason="oom", predicted=None))
    assert log.path is not None
    report = child_report(ev.load_events(log.path), {}, {})
    assert report.budget == 7_000_000_000
    assert report.state == PlanState(microbatch=24, eval_microbatch=96, val_every=1, workers=4, cache=True,
                                     imgsz=224, device="cuda:0", release_every=None)


def test_child_report_without_a_start_uses_config_and_overrides() -> None:
    report = child_report([], {"microbatch": 8, "workers": 2, "device": "auto"}, {"workers": 0})
    assert (report.state.microbatch, report.state.workers, report.state.device) == (8, 0, "auto")
    assert report.budget is None


HEADER = "time,process_rss,children_rss,system_available,device_allocated,device_reserved,used,step,rank\n"


def _start(log: EventLog, at: float, step: int) -> None:
    start = ev.Start(pid=1, attempt=1, resume=step > 0, device="cpu", budget=None, config={}, step=step)
    log.emit(start, at=at)


def test_an_attempt_reached_the_last_step_of_its_own_events_and_timeline_rows(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    log = EventLog(run.events)
    _start(log, 100.0, 0)
    log.emit(ev.Checkpoint(path="ckpt-120.pt", step=120, seconds=0.5), at=110.0)
    run.memory.write_text(HEADER + "111.0,1,0,1,0,0,1,130,0\n112.0,1,0,1,0,0,1,135,0\n113.0,1,0")  # torn
    record = attempt_record(run, since=99.0, until=112.5)
    assert (record.started, record.step, record.progressed) == (True, 135, True)
    assert record.lost_seconds == 3.0  # 112.5 - (110.0 - 0.5): since the checkpoint's state was taken


def test_an_attempt_that_died_before_its_resume_completed_reached_no_step(tmp_path: Path) -> None:
    # The measured case of issue 16: attempt 1 reached step 92 (checkpoint at 88); attempt 2 was killed
    # while loading the checkpoint of step 88. It failed in start-up, not "at step 92".
    run = RunDir(tmp_path)
    log = EventLog(run.events)
    _start(log, 100.0, 0)
    log.emit(ev.Checkpoint(path="ckpt-88.pt", step=88), at=150.0)
    run.memory.write_text(HEADER + "151.0,1,0,1,0,0,1,92,0\n")
    record = attempt_record(run, since=160.0, until=163.0)
    assert (record.started, record.step, record.lost_seconds, record.progressed) == (False, None, 0.0, False)
    _start(log, 165.0, 88)  # the third attempt resumed at 88 and died before its first step
    record = attempt_record(run, since=164.0, until=166.0)
    assert (record.started, record.step, record.progressed) == (True, 88, False)
    assert record.lost_seconds == 1.0  # since its resume completed: the checkpoint is older


MB = 1000**2


def test_workers_go_only_when_their_own_memory_would_bring_the_peak_under_the_line() -> None:
    # Budget 900 MB: a death near it counts as one for memory from 90% (810 MB) up.
    assert LoaderMemory(private=120 * MB, peak=900 * MB, limit=900 * MB).would_matter()
    assert not LoaderMemory(private=30 * MB, peak=900 * MB, limit=900 * MB).would_matter()
    assert not LoaderMemory(private=200 * MB, peak=1200 * MB, limit=900 * MB).would_matter()  # 390 MB over
    assert LoaderMemory(private=120 * MB, peak=1000 * MB, limit=None).would_matter()  # 10% of the peak


def test_the_loader_rung_keeps_workers_whose_own_memory_would_not_help() -> None:
    small = LoaderMemory(private=20 * MB, peak=900 * MB, limit=900 * MB)
    large = LoaderMemory(private=300 * MB, peak=900 * MB, limit=900 * MB)
    after_eval = 1
    kept = next_rung(PlanState(workers=2, cache=False, loader=small), after_eval, allow_degrade=False)
    assert kept is not None and kept.name == "release"  # the loader rung changes nothing: skipped
    cache_only = next_rung(PlanState(workers=2, cache=True, loader=small), after_eval, allow_degrade=False)
    assert cache_only is not None and (cache_only.name, cache_only.overrides) == ("loader", {"cache": False})
    taken = next_rung(PlanState(workers=2, cache=False, loader=large), after_eval, allow_degrade=False)
    assert taken is not None and (taken.name, taken.overrides) == ("loader", {"workers": 0, "cache": False})


COLUMNS = ("time,process_rss,children_rss,system_available,device_allocated,device_reserved,used,step,rank,"
           "tree_memory,children_private\n")


def _row(t: float, rank: int, tree: int, private: int) -> str:
    return f"{t},{tree + 500 * MB},{private + 400 * MB},1,0,0,{tree},1,{rank},{tree},{private}\n"


def test_loader_memory_reads_the_last_samples_of_the_attempt_summed_over_ranks(tmp_path: Path) -> None:
    path = tmp_path / "memory.csv"
    assert loader_memory(path, None, None) is None  # no timeline: not known
    rows = [_row(100.0, 0, 2000 * MB, 900 * MB)]  # the previous attempt: not this one's
    rows += [_row(200.0 + i * 0.05, rank, (300 + i) * MB, (10 + i) * MB)
             for i in range(60) for rank in (0, 1)]
    path.write_text(COLUMNS + "".join(rows) + "203.1,0,1")  # ends torn by the kill
    found = loader_memory(path, since=150.0, budget=400 * MB)
    assert found == LoaderMemory(private=2 * 69 * MB, peak=2 * 359 * MB, limit=800 * MB)
    old = "time,process_rss,children_rss,system_available,device_allocated,device_reserved,used,step,rank\n"
    path.write_text(old + "1.0,1,0,1,0,0,1,1,0\n")
    assert loader_memory(path, None, None) is None  # written before the children_private column


# -- memory savers (issue 17): after the microbatch rungs, before any imgsz change --------------------


def test_savers_then_amp_come_after_release_and_before_imgsz() -> None:
    state = PlanState(microbatch=1, val_every=1, workers=0, imgsz=640, device="cuda:0", release_every=1,
                      savers=(), savers_usable=("activation_checkpointing", "amp", "optimizer_offload"))
    assert _walk(state, allow_degrade=True) == [
        ("eval", {"val_every": 2}),
        ("savers", {"savers": ["activation_checkpointing", "optimizer_offload"]}),
        ("amp", {"savers": ["activation_checkpointing", "amp", "optimizer_offload"]}),
        ("imgsz", {"imgsz": 480}),
        ("device", {"device": "cpu"}),
    ]


def test_savers_rungs_keep_what_is_on_and_skip_what_cannot_help() -> None:
    on_cpu = PlanState(microbatch=1, device="cpu", release_every=1, savers=("activation_checkpointing",),
                       savers_usable=("activation_checkpointing",))  # amp=false: not usable
    assert _walk(on_cpu, allow_degrade=False) == [("eval", {"val_every": 2})]
    unknown = PlanState(microbatch=1, device="cpu", release_every=1)  # the attempt did not say
    assert [name for name, _ in _walk(unknown, allow_degrade=False)] == ["eval"]


def test_child_report_reads_the_savers_usable_and_in_force(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    log.emit(ev.Start(pid=1, attempt=1, resume=False, device="cpu", budget=10**9,
                      config={"savers": "auto"}, savers_usable=["activation_checkpointing", "amp"]))
    log.emit(ev.Saver(name="activation_checkpointing", on=True, reason="microbatch 1 did not fit"))
    log.emit(plan(microbatch=2, eval_microbatch=4))  # an older plan event: no savers field
    log.emit(ev.Saver(name="amp", on=True, reason="a step at microbatch 1 did not fit"))
    assert log.path is not None
    state = child_report(ev.load_events(log.path), {}, {}).state
    assert state.savers == ("activation_checkpointing", "amp")
    assert state.savers_usable == ("activation_checkpointing", "amp")
    listed = child_report([], {"savers": ["activation_checkpointing"]}, {}).state
    assert (listed.savers, listed.savers_usable) == (("activation_checkpointing",), None)
    # A resume switches its checkpoint's savers on before its start event, which says so.
    log.emit(ev.Start(pid=2, attempt=2, resume=True, device="cpu", budget=10**9, config={"savers": "auto"},
                      savers_usable=["activation_checkpointing", "amp"], savers=["activation_checkpointing"]))
    resumed = child_report(ev.load_events(log.path), {}, {}).state
    assert resumed.savers == ("activation_checkpointing",)
