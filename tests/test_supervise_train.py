"""``oomguard train`` supervision with a stand-in child that speaks the run-directory contract.

The stand-in writes ``config.yaml`` and the ``start``/``plan``/``checkpoint``
events the real loop writes, records the arguments it was given, then does
what its script says for this attempt: grow past the memory cap, SIGKILL
itself, fail with a usage error, or finish.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from oomguard.events import read_events
from oomguard.supervise import child_argv, supervise_train

MB = 1000**2
CAP = 200 * MB

CHILD = """
import json, os, signal, sys, time
from pathlib import Path
import yaml
from oomguard import events as ev
from oomguard.events import EventLog

run_dir, spec, args = Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3:]
attempt = int(os.environ["OOMGUARD_ATTEMPT"])
action = spec["actions"][attempt - 1]
with open(run_dir.parent / "argv.jsonl", "a") as record:
    record.write(json.dumps(args) + "\\n")
if action != "early-kill":
    run_dir.mkdir(exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(spec["config"]))
    overrides = {k: yaml.safe_load(v) for k, _, v in (a.partition("=") for a in args if "=" in a)}
    config = {**spec["config"], **overrides}
    log = EventLog(run_dir / "events.jsonl")
    log.emit(ev.Start(pid=os.getpid(), attempt=attempt, resume=attempt > 1, device=spec["device"],
                      budget=spec.get("budget", 10**9), config=config, savers_usable=spec.get("savers")))
    planned = [config[key] if isinstance(config[key], int) else auto for key, auto in
               (("microbatch", 32), ("val_batch", 64))]
    log.emit(ev.Plan(microbatch=planned[0], eval_microbatch=planned[1], ceiling=planned[0], budget=10**9,
                     fit={}, table=[], eval_fit=None, eval_table=[], optimizer_peak=0, snapshot_bytes=0,
                     start=0, seconds=0.0))
    log.emit(ev.Checkpoint(step=spec.get("step") or 10 * attempt))
if action == "grow-with-workers":  # two forked loader workers, each holding spec["hold"] bytes of its own
    import multiprocessing
    from oomguard.memory.sampler import MemorySampler
    context = multiprocessing.get_context("fork")
    def work(ready):
        held = bytearray(b"\x01") * spec["hold"]
        ready.set()
        time.sleep(60)
    for _ in range(2):
        ready = context.Event()
        context.Process(target=work, args=(ready,), daemon=True).start()
        assert ready.wait(30)
    began = time.time()
    sampler = MemorySampler(csv_path=run_dir / "memory.csv").start()  # the timeline the supervisor reads
    deadline = time.monotonic() + 30
    def measured():  # a row of this attempt in the file, not the sampler's latest (its first is not written)
        rows = [row.split(",") for row in (run_dir / "memory.csv").read_text().splitlines()[1:]]
        return any(float(r[0]) >= began and int(r[-1]) >= spec["hold"] for r in rows if len(r) == 11)
    while time.monotonic() < deadline and not measured():
        time.sleep(0.02)  # until a written sample has measured the workers
    action = "grow"
if action == "grow":
    blocks = [bytearray(10_000_000) for _ in range(40)]
    time.sleep(10)  # the cap kills it before or here
    sys.exit(3)
if action in ("kill", "early-kill"):
    os.kill(os.getpid(), signal.SIGKILL)
if action == "usage":
    print("oomguard: error: epochs: expected a positive integer, got -1", file=sys.stderr)
    sys.exit(2)
"""

CONFIG = {"microbatch": "auto", "val_batch": "auto", "workers": 2, "val_every": 1, "cache": False,
          "imgsz": 64, "device": "auto"}


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def print(self, *objects: Any) -> None:
        self.lines.append(" ".join(str(o) for o in objects))


def _supervise(tmp_path: Path, actions: list[str], memory_cap: int | None = CAP, step: int | None = 7,
               config: dict[str, Any] | None = None, device: str = "cpu", max_restarts: int = 5,
               **more: int) -> int:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    spec = json.dumps({"actions": actions, "step": step, "config": config or CONFIG, "device": device,
                       **more})
    argv = [sys.executable, str(script), str(tmp_path / "run"), spec, "--no-supervise"]
    return supervise_train(argv, tmp_path / "run", max_restarts=max_restarts, memory_cap=memory_cap,
                           allow_degrade=False, console=Lines())


def _argvs(tmp_path: Path) -> list[list[str]]:
    return [json.loads(line) for line in (tmp_path / "argv.jsonl").read_text().splitlines()]


def _events(tmp_path: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in read_events(tmp_path / "run" / "events.jsonl") if e["event"] == kind]


def test_child_argv_runs_oomguard_train_unsupervised() -> None:
    assert child_argv(["cfg.yaml", "epochs=2"]) == [sys.executable, "-m", "oomguard", "train", "cfg.yaml",
                                                    "epochs=2", "--no-supervise"]


def test_memory_kills_halve_the_microbatch_again_before_the_next_rung(tmp_path: Path) -> None:
    assert _supervise(tmp_path, ["grow", "grow", "ok"]) == 0
    assert _argvs(tmp_path) == [
        ["--no-supervise"],
        ["--no-supervise", "--resume", "microbatch=16"],
        ["--no-supervise", "--resume", "microbatch=8"],
    ]
    assert [k["cause"] for k in _events(tmp_path, "kill")] == ["memory_kill", "memory_kill"]
    restarts = _events(tmp_path, "restart")
    assert [(r["rung"], r["overrides"]) for r in restarts] == [
        ("microbatch", {"microbatch": 16}),
        ("microbatch", {"microbatch": 8}),
    ]
    assert restarts[0]["plan"]["microbatch"] == 16


def test_an_unexplained_kill_resumes_with_the_same_plan(tmp_path: Path) -> None:
    assert _supervise(tmp_path, ["kill", "ok"], memory_cap=None) == 0
    assert _argvs(tmp_path) == [["--no-supervise"], ["--no-supervise", "--resume"]]
    [kill] = _events(tmp_path, "kill")
    assert (kill["cause"], kill["step"]) == ("unexplained_kill", 7)
    assert _events(tmp_path, "restart")[0]["overrides"] == {}


def test_memory_kills_at_the_same_step_go_on_down_the_ladder(tmp_path: Path) -> None:
    # Issue 16: "the same failure three times" is for a plan that can no longer change; each memory kill
    # here ran a smaller microbatch than the one before, so the run goes on and finishes.
    assert _supervise(tmp_path, ["grow", "grow", "grow", "ok"]) == 0
    assert [argv[-1] for argv in _argvs(tmp_path)[1:]] == ["microbatch=16", "microbatch=8", "microbatch=4"]
    assert [k["step"] for k in _events(tmp_path, "kill")] == [7, 7, 7]
    assert not _events(tmp_path, "stop")


def test_stops_when_no_safer_plan_is_left(tmp_path: Path) -> None:
    lean = {**CONFIG, "microbatch": 1, "val_batch": 1, "workers": 0, "imgsz": None, "release_every": 1}
    assert _supervise(tmp_path, ["grow", "grow", "ok"], step=None, config=lean) == 137
    assert _argvs(tmp_path)[1] == ["--no-supervise", "--resume", "val_every=2"]
    [stop] = _events(tmp_path, "stop")
    assert stop["reason"].endswith("and no safer plan is left")


def test_memory_savers_come_on_after_the_microbatch_rungs_and_amp_after_them(tmp_path: Path) -> None:
    lean = {**CONFIG, "microbatch": 1, "val_batch": 1, "workers": 0, "imgsz": None, "release_every": 1}
    usable = ["activation_checkpointing", "amp"]
    assert _supervise(tmp_path, ["grow", "grow", "grow", "ok"], step=None, config=lean, savers=usable) == 0
    assert [r["rung"] for r in _events(tmp_path, "restart")] == ["eval", "savers", "amp"]
    assert [argv[2:] for argv in _argvs(tmp_path)[1:]] == [
        ["val_every=2"],
        ["val_every=2", "savers=[activation_checkpointing]"],
        ["val_every=2", "savers=[activation_checkpointing,amp]"],
    ]


def test_a_usage_error_is_not_retried(tmp_path: Path) -> None:
    assert _supervise(tmp_path, ["usage", "ok"], memory_cap=None) == 2
    assert len(_argvs(tmp_path)) == 1
    [stop] = _events(tmp_path, "stop")
    assert stop["cause"] == "error"
    assert stop["error"] == "oomguard: error: epochs: expected a positive integer, got -1"


def test_a_kill_before_the_run_directory_exists_restarts_without_resume(tmp_path: Path) -> None:
    assert _supervise(tmp_path, ["early-kill", "ok"], memory_cap=None) == 0
    assert _argvs(tmp_path) == [["--no-supervise"], ["--no-supervise"]]
    # held back until the child had made the run directory, then written
    assert [k["cause"] for k in _events(tmp_path, "kill")] == ["unexplained_kill"]
    assert [r["attempt"] for r in _events(tmp_path, "restart")] == [2]


def test_the_last_rung_moves_to_the_cpu_and_says_so_with_a_fallback_event(tmp_path: Path) -> None:
    lean = {**CONFIG, "microbatch": 1, "val_batch": 1, "workers": 0, "imgsz": None, "release_every": 1}
    assert _supervise(tmp_path, ["grow", "grow", "ok"], step=None, config=lean, device="cuda:0") == 0
    assert [r["rung"] for r in _events(tmp_path, "restart")] == ["eval", "device"]
    assert _argvs(tmp_path)[2][-1] == "device=cpu"
    [fallback] = _events(tmp_path, "fallback")
    assert fallback["to"] == "cpu" and fallback["attempt"] == 3


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers' own memory is measured on Linux")
@pytest.mark.parametrize(("hold", "rung"), [(40 * MB, "loader"), (0, "release")])
def test_workers_go_only_when_their_own_memory_would_have_made_the_difference(tmp_path: Path, hold: int,
                                                                             rung: str) -> None:
    # Killed by the cap twice with two real forked workers: after the eval rung, workers=0 only when
    # the 2 x 40 MB they hold of their own would bring a peak at the cap under 90% of the 170 MB budget.
    lean = {**CONFIG, "microbatch": 1, "val_batch": 1, "workers": 2, "release_every": None}
    actions = ["grow-with-workers", "grow-with-workers", "ok"]
    assert _supervise(tmp_path, actions, step=None, config=lean, hold=hold, budget=170 * MB) == 0
    assert [k["cause"] for k in _events(tmp_path, "kill")] == ["memory_kill", "memory_kill"]
    restarts = _events(tmp_path, "restart")
    assert [r["rung"] for r in restarts] == ["eval", rung]
    loader = restarts[1]["plan"]["loader"]
    assert loader["private"] >= 2 * hold and loader["limit"] == 170 * MB
    assert ("workers=0" in _argvs(tmp_path)[2]) == (rung == "loader")
