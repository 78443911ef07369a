"""The run report: events on the chart, tolerant reading, bounded downsampling, files written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from oomguard.errors import RunDirError
from oomguard.report import load_run, write_report
from oomguard.report.plot import memory_figure, svg_text
from oomguard.report.read import read_results
from oomguard.report.timeline import read_timeline
from report_rundirs import GB, T0, supervised_command_run, train_run, write_events, write_memory


def _memory_svg(html: str) -> str:
    start = html.index('<figure id="memory-chart">')
    return html[start:html.index("</figure>", start)]


def test_report_marks_every_event_on_the_memory_chart(tmp_path: Path) -> None:
    paths = write_report(train_run(tmp_path / "run"))

    assert paths.html == tmp_path / "run" / "report.html"
    assert paths.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = paths.html.read_text()
    svg = _memory_svg(html)
    assert "<svg" in svg
    for kind in ("plan", "shrink", "grow", "oom", "pressure", "checkpoint", "kill", "restart", "finish"):
        assert f">{kind}</text>" in svg, kind  # the event lane's row label
    assert "<title>oom +30m00s: train, microbatch 32, peak 12.4 GB</title>" in svg
    assert "<title>kill +50m00s: memory kill, signal 9, exit code -9, attempt 1</title>" in svg
    assert svg.count(">memory kill</text>") == 2  # the two kills are labelled on the chart
    for legend in ("process RSS + children", "system available (min 2.8 GB)", "budget 12 GB", "cap 14 GB",
                   "peak 11.2 GB", "memory (GB)", "time since start (min)"):
        assert f">{legend}</text>" in svg, legend


def test_report_is_self_contained_and_has_the_tables(tmp_path: Path) -> None:
    html = write_report(train_run(tmp_path / "run")).html.read_text()

    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html and "<script src" not in html
    assert ('<p class="verdict ok" id="verdict">finished in 1h59m; 2 memory kills survived; '
            "1 out-of-memory error caught, microbatch 32 → 12; 1 memory-pressure warning; "
            "peak 11.2 GB of a 12 GB budget; no leak</p>") in html
    assert '<figure id="curves-chart">' in html
    for curve in ("train_loss", "val_loss", "accuracy", "top5", "mae_calories"):
        assert f">{curve}</text>" in html
    # the plan over time: first plan, the in-process shrink, the plan after the restart, the grow
    assert "<td>+30m01s</td><td>shrink</td><td>train</td><td>16</td><td></td><td></td>" in html
    assert ("<td>+1h20m</td><td>restart</td><td></td><td>8</td><td>16</td><td></td>"
            "<td>memory kill, attempt 3, then microbatch=8 val_batch=16</td>") in html
    assert html.count('<tr data-kind="kill">') == 2
    assert "memory_cap: 14GB" in html


def test_command_run_without_results_or_config(tmp_path: Path) -> None:
    paths = write_report(supervised_command_run(tmp_path / "cmd"))

    html = paths.html.read_text()
    assert paths.png.exists()
    assert "no results.csv" in html and 'id="curves-chart"' not in html
    assert "unfinished: no finish event" in html
    assert "1 memory kill survived" in html
    assert "<td>memory kill, attempt 2, then --resume</td>" in html
    assert "Configuration" not in html


def test_torn_last_lines_are_skipped(tmp_path: Path) -> None:
    root = train_run(tmp_path / "run", finished=False)
    before = load_run(root)
    assert before.timeline is not None
    with open(root / "memory.csv", "a") as file:
        file.write(f"{T0 + 7300},123456")  # killed mid-row: too few cells, no newline
    with open(root / "events.jsonl", "a") as file:
        file.write('{"time": 1767233000.0, "event": "chec')
    with open(root / "results.csv", "a") as file:
        file.write("10,0.51,0.6")

    run = load_run(root)
    assert run.timeline is not None and run.timeline.summary == before.timeline.summary
    assert run.events == before.events  # the torn checkpoint line is skipped
    assert [r["epoch"] for r in run.results] == [float(e) for e in range(1, 10)]
    html = write_report(root).html.read_text()
    assert '<p class="verdict bad" id="verdict">unfinished: no finish event' in html


def test_resumed_epochs_keep_the_last_row_and_blank_cells_are_none(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text("epoch,train_loss,val_loss\n1,2.0,\n2,1.5,1.6\n2,1.4,1.5\n")
    assert read_results(path) == [
        {"epoch": 1.0, "train_loss": 2.0, "val_loss": None},
        {"epoch": 2.0, "train_loss": 1.4, "val_loss": 1.5},
    ]


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(RunDirError) as err:
        write_report(tmp_path)
    message = str(err.value)
    assert message.startswith(f"not a run directory: {tmp_path} has no memory.csv and no events.jsonl")
    assert "\n" not in message
    with pytest.raises(RunDirError, match="does not exist"):
        write_report(tmp_path / "missing")


def test_long_timeline_is_bounded_and_keeps_spikes_and_dips(tmp_path: Path) -> None:
    rows = []
    for i in range(20_000):
        for rank in (0, 1):
            rss = (2 + rank) * GB + (7 * GB if (i, rank) == (12_345, 1) else 0)
            available = 1 * GB if i == 7_777 else 9 * GB
            rows.append((T0 + i * 0.05, rss, 0, available, 0, 0, i, rank))
    path = tmp_path / "memory.csv"
    write_memory(path, rows)

    timeline = read_timeline(path, max_points=100)
    assert timeline is not None
    assert sorted(timeline.ranks) == [0, 1]
    for series in timeline.ranks.values():
        assert 50 <= len(series.time) <= 200
    assert max(timeline.ranks[1].high["tree_rss"]) == 10 * GB  # a 50 ms spike survives
    assert max(timeline.ranks[0].high["tree_rss"]) == 2 * GB
    assert min(timeline.ranks[0].low["system_available"]) == 1 * GB  # and so does a dip
    assert timeline.summary.rows == 40_000
    assert timeline.summary.peak_tree_rss == 10 * GB
    assert timeline.summary.peak_tree_rss_time == pytest.approx(T0 + 12_345 * 0.05)
    assert timeline.summary.min_available == 1 * GB


def test_ranks_are_separate_lines(tmp_path: Path) -> None:
    root = tmp_path / "run"
    root.mkdir()
    write_memory(root / "memory.csv", [(T0 + i, (1 + r) * GB, 0, 8 * GB, r * GB, r * GB, i, r)
                                       for i in range(50) for r in (0, 1)])
    start = {"time": T0, "event": "start", "device": "cuda:0", "budget": 4 * GB}
    write_events(root / "events.jsonl", [start])

    figure, tooltips = memory_figure(load_run(root))
    svg = svg_text(figure, "t", tooltips)
    for label in ("process RSS + children rank 0", "process RSS + children rank 1",
                  "device allocated rank 1", "device reserved rank 1", "budget 4 GB"):
        assert f">{label}</text>" in svg, label


def test_many_events_stay_readable(tmp_path: Path) -> None:
    root = tmp_path / "run"
    root.mkdir()
    write_memory(root / "memory.csv", [(T0 + i, GB, 0, 8 * GB, 0, 0, i, 0) for i in range(0, 3000, 3)])
    events = [{"time": T0 + i, "event": "checkpoint", "epoch": i, "step": i} for i in range(1000)]
    events.append({"time": T0 + 2500, "event": "kill", "cause": "unexplained_kill", "signal": 9})
    write_events(root / "events.jsonl", events)

    html = write_report(root).html.read_text()
    assert "<title>checkpoint: 1000 events</title>" in html  # one scatter, not a thousand markers
    assert '<tr data-kind="kill">' in html  # notable events are never clipped from the table
    assert html.count('<tr data-kind="checkpoint" data-quiet="1">') == 399
    assert "601 more events are in events.jsonl" in html
    assert "unfinished: ended by an unexplained kill that was not restarted" in html


def test_report_does_not_import_torch(tmp_path: Path) -> None:
    root = supervised_command_run(tmp_path / "cmd")
    code = ("import sys; from oomguard.report import write_report; "
            f"write_report({str(root)!r}); print(json.dumps('torch' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert json.loads(out.stdout) is False


def test_events_only_and_an_empty_memory_csv(tmp_path: Path) -> None:
    root = tmp_path / "run"
    root.mkdir()
    (root / "memory.csv").write_text("time,process_rss,children_rss,system_available,device_allocated,"
                                     "device_reserved,step,rank\n")
    write_events(root / "events.jsonl", [
        {"time": T0, "event": "start", "device": "cpu", "budget": 2 * GB},
        {"time": T0 + 9, "event": "oom", "phase": "eval", "microbatch": 64, "peak": None, "budget": 2 * GB},
        {"time": "garbage", "event": "plan"},
    ])
    html = write_report(root).html.read_text()
    assert ">no memory.csv samples</text>" in html
    assert "<title>oom +9.0s: eval, microbatch 64</title>" in html
    assert "1 out-of-memory error caught; no leak" in html


def test_the_timeline_counts_the_tree_once_per_page_where_memory_csv_says(tmp_path: Path) -> None:
    # Two workers mapping a 1 GB parent copy-on-write: 3 GB of RSS, 1.2 GB of pages.
    path = tmp_path / "run" / "memory.csv"
    path.parent.mkdir()
    header = ("time,process_rss,children_rss,system_available,device_allocated,device_reserved,used,step,"
              "rank,tree_memory,children_private\n")
    rows = [f"{T0 + i},{GB},{2 * GB},{8 * GB},0,0,{GB + GB // 5 + i},{i},0,{GB + GB // 5 + i},{GB // 10}\n"
            for i in range(10)]
    path.write_text(header + "".join(rows))
    timeline = read_timeline(path)
    assert timeline is not None
    assert timeline.summary.peak_tree_rss == GB + GB // 5 + 9
    assert max(timeline.ranks[0].high["tree_rss"]) == GB + GB // 5 + 9
    write_events(path.parent / "events.jsonl", [{"time": T0, "event": "start", "device": "cpu"}])
    svg = _memory_svg(write_report(path.parent).html.read_text())
    assert "process tree, each page once" in svg and "process RSS + children" not in svg


def test_the_predicted_peak_against_the_measured_one_per_epoch(tmp_path: Path) -> None:
    run = train_run(tmp_path / "run")
    checks = [
        {"time": T0 + 600, "event": "peak_check", "epoch": 1, "predicted": int(10 * GB),
         "measured": int(10.2 * GB), "microbatch": 16, "eval_microbatch": 32, "margin": 0.05, "parts": {},
         "measured_parts": {}},
        {"time": T0 + 1200, "event": "peak_check", "epoch": 2, "predicted": int(10 * GB),
         "measured": int(11.6 * GB), "microbatch": 12, "eval_microbatch": 32, "margin": 0.24, "parts": {},
         "measured_parts": {}, "grew": "activations", "grew_by": int(1.5 * GB)},
    ]
    with open(run / "events.jsonl", "a") as file:
        file.writelines(json.dumps(check) + "\n" for check in checks)
    html = write_report(run).html.read_text()
    table = html[html.index('<table id="prediction-table">'):]
    table = table[:table.index("</table>")]
    assert ("<td>1</td><td>16</td><td>32</td><td>10 GB</td><td>10.2 GB</td><td>+2.0%</td><td>5%</td>"
            "<td></td>") in table
    assert ("<td>2</td><td>12</td><td>32</td><td>10 GB</td><td>11.6 GB</td><td>+16.0%</td><td>24%</td>"
            "<td>training step at the microbatch +1.5 GB</td>") in table
    assert "epoch 2 peaked 16% above its predicted 10 GB" in html[html.index('id="verdict"'):][:600]
