"""macOS memory deaths, with real processes: Metal's memory is invisible to the supervisor's RSS samples.

The child trains "on MPS" through the MPS double (its Metal memory is a number the driver reports,
not the process's RSS), writes its run directory as ``oomguard train`` does, with the real memory
sampler, and then dies as macOS makes it die: a SIGKILL with the memory near the budget (what
"zsh: killed" is), or an MPSNDArray assertion that aborts the process. The supervisor must read
the child's own timeline and take the ladder one rung down, not restart the same plan forever.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from oomguard.events import read_events
from oomguard.supervise import supervise_train
from oomguard.supervise.attribution import Evidence, attribute

GIB = 1024**3
TESTS = Path(__file__).parent

CHILD = """
import os, signal, sys, time
from pathlib import Path
import pytest, yaml
sys.path.insert(0, sys.argv[2])
from device_doubles import GIB, MPSChip
from oomguard import events as ev, host
from oomguard.events import EventLog
from oomguard.memory.sampler import MemorySampler

run, action = Path(sys.argv[1]), sys.argv[3]
attempt = int(os.environ["OOMGUARD_ATTEMPT"])
config = yaml.safe_load((run / "config.yaml").read_text())
chip = MPSChip().install(pytest.MonkeyPatch())
budget = host.tree_memory(fresh=True).total + 1 * GIB
log = EventLog(run / "events.jsonl")
log.emit(ev.Start(pid=os.getpid(), attempt=attempt, resume=attempt > 1, device="mps", budget=budget,
                  config=config))
log.emit(ev.Plan(microbatch=config["microbatch"], eval_microbatch=None, ceiling=64, budget=budget, fit={},
                 table=[], eval_fit=None, eval_table=[], optimizer_peak=0, snapshot_bytes=0, start=0,
                 seconds=0.0))
if attempt > 1:
    sys.exit(0)
sampler = MemorySampler(chip.device(), run / "memory.csv", interval=0.02).start()
chip.pool.alloc(int(0.97 * GIB))  # Metal's memory: the driver's, not in this process's RSS
if action == "abort":
    print("/AppleInternal/Library/BuildRoots/4~B5E4ugDCh2Rsu/Library/Caches/com.apple.xbs/Sources/"
          "MetalPerformanceShaders/MPSCore/Types/MPSNDArray.mm:850: failed assertion `[MPSNDArray "
          "initWithDevice:descriptor:isTextureBacked:] Error: total bytes of NDArray > 2**32'",
          file=sys.stderr, flush=True)
    os.abort()
# Wait for the sampler's row that shows it (a row written before the kill survives it), as macOS
# would kill only once the memory is really taken.
deadline = time.monotonic() + 60
while True:
    header, *rows = [line.split(",") for line in (run / "memory.csv").read_text().splitlines()]
    used = header.index("used")
    if any(int(row[used]) > budget * 0.9 for row in rows if len(row) == len(header)):
        break
    assert time.monotonic() < deadline, "no sample showed Metal's memory"
    time.sleep(0.01)
os.kill(os.getpid(), signal.SIGKILL)  # the OS's memory kill: "zsh: killed"
"""

CONFIG = {"microbatch": 32, "val_batch": "auto", "batch": 64, "workers": 0, "val_every": 1, "cache": False,
          "imgsz": 64, "device": "mps"}


def _supervise(tmp_path: Path, action: str) -> tuple[int, list[dict[str, Any]]]:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    argv = [sys.executable, str(script), str(run), str(TESTS), action]
    code = supervise_train(argv, run, max_restarts=3, memory_cap=None, allow_degrade=False,
                           console=type("Quiet", (), {"print": lambda self, *a: None})())
    return code, list(read_events(run / "events.jsonl"))


def test_a_macos_memory_kill_with_metal_memory_outside_rss_goes_one_rung_down(tmp_path: Path) -> None:
    code, events = _supervise(tmp_path, "kill")
    assert code == 0
    [kill] = [e for e in events if e["event"] == "kill"]
    assert kill["cause"] == "memory_kill", kill["reason"]
    assert "with device memory" in kill["reason"]
    assert kill["peak"] > 0.9 * kill["limit"]
    [restart] = [e for e in events if e["event"] == "restart"]
    assert (restart["rung"], restart["overrides"]) == ("microbatch", {"microbatch": 16})


def test_an_mpsndarray_assertion_that_aborts_the_process_is_a_memory_failure(tmp_path: Path) -> None:
    code, events = _supervise(tmp_path, "abort")
    assert code == 0
    [kill] = [e for e in events if e["event"] == "kill"]
    assert (kill["cause"], kill["signal"]) == ("oom", "SIGABRT")
    assert "total bytes of NDArray > 2**32" in kill["reason"]
    assert [e["rung"] for e in events if e["event"] == "restart"] == ["microbatch"]


def test_the_same_kill_without_the_childs_own_reading_is_unexplained() -> None:
    seen = Evidence(peak_rss=400_000_000, min_available=8 * GIB, total=16 * GIB, limit=1_500_000_000)
    assert attribute(-signal.SIGKILL, seen).kind == "unexplained_kill"
    told = Evidence(peak_rss=400_000_000, min_available=8 * GIB, total=16 * GIB, limit=1_500_000_000,
                    peak_used=1_450_000_000)
    cause = attribute(-signal.SIGKILL, told)
    assert cause.kind == "memory_kill" and "97% of the limit" in cause.reason
