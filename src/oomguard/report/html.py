"""The self-contained ``report.html``: inline CSS, inline SVG charts, one small script, no network."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import yaml

from oomguard import events as ev
from oomguard.report.describe import clock, describe, since, value_text
from oomguard.report.prediction import rows as prediction_rows
from oomguard.report.read import RunData
from oomguard.report.verdict import budget_of, cause_words, size
from oomguard.units import format_duration

ROUTINE = ("checkpoint", "epoch", "shrink", "grow", "pressure", "plan")  # clipped first from the table
QUIET = ("checkpoint", "epoch")  # hidden from the events table until asked for
MAX_ROWS = 400  # per table; the full record stays in events.jsonl

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1240px;
 padding:18px 24px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.verdict{font-size:17px;padding:10px 14px;border-radius:6px;margin:8px 0 12px}
.verdict.ok{background:#e8f5e9;border-left:5px solid #2e7d32}
.verdict.bad{background:#fff4e5;border-left:5px solid #ef6c00}
dl.facts{display:grid;grid-template-columns:max-content 1fr max-content 1fr;gap:2px 14px;margin:0}
dl.facts dt{color:#666}dl.facts dd{margin:0}
svg.chart{width:100%;height:auto;display:block}figure{margin:0}figcaption{color:#666;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eee;vertical-align:top}
th{background:#f6f6f6;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#777}.note{color:#777;font-size:12px}pre{background:#f6f6f6;padding:10px;overflow:auto}
#event-filter button{margin:0 4px 6px 0;padding:2px 9px;border:1px solid #bbb;border-radius:12px;
 background:#fff;cursor:pointer;font-size:12px}#event-filter button.on{background:#1d1d1f;color:#fff}
"""

_SCRIPT = """
(function () {
  var rows = Array.prototype.slice.call(document.querySelectorAll('#event-table tbody tr'));
  var box = document.getElementById('event-filter');
  var count = document.getElementById('event-count');
  var kinds = ['notable', ''];
  rows.forEach(function (r) { if (kinds.indexOf(r.dataset.kind) < 0) { kinds.push(r.dataset.kind); } });
  var buttons = kinds.map(function (kind) {
    var b = document.createElement('button');
    b.type = 'button';
    b.dataset.kind = kind;
    b.textContent = kind || 'all';
    if (kind === 'notable') { b.title = 'everything but checkpoints and epochs'; }
    b.addEventListener('click', function () { show(kind); });
    box.appendChild(b);
    return b;
  });
  function show(kind) {
    var shown = 0;
    rows.forEach(function (r) {
      var on = !kind || r.dataset.kind === kind || (kind === 'notable' && !r.dataset.quiet);
      r.hidden = !on;
      if (on) { shown += 1; }
    });
    buttons.forEach(function (b) { b.classList.toggle('on', b.dataset.kind === kind); });
    count.textContent = 'showing ' + shown + ' of ' + rows.length + ' events';
  }
  show(rows.some(function (r) { return !r.dataset.quiet; }) ? 'notable' : '');
})();
"""


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], table_id: str = "",
           kinds: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        attr = ""
        if kinds is not None:
            attr = f' data-kind="{escape(kinds[i])}"' + (' data-quiet="1"' if kinds[i] in QUIET else "")
        cells = "".join(f"<td>{escape(cell)}</td>" for cell in row)
        body.append(f"<tr{attr}>{cells}</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _clip(events: Sequence[ev.Event], limit: int = MAX_ROWS) -> tuple[list[ev.Event], str]:
    """At most ``limit`` events: all notable ones, then routine ones in time order."""
    if len(events) <= limit:
        return list(events), ""
    notable = [e for e in events if ev.name_of(e) not in ROUTINE]
    routine = [e for e in events if ev.name_of(e) in ROUTINE][: max(0, limit - len(notable))]
    kept = sorted(notable[:limit] + routine, key=lambda e: e.time)
    return kept, f"{len(events) - len(kept)} more events are in events.jsonl"


def _plan_rows(run: RunData) -> list[list[str]]:
    rows = []
    t0 = run.start
    for event in run.events:
        phase, budget = "", None
        train: Any
        evalmb: Any
        if isinstance(event, ev.Plan):
            train, evalmb, budget = event.microbatch, event.eval_microbatch, event.budget
        elif isinstance(event, ev.Restart) and (event.plan or event.overrides):
            overrides: dict[str, Any] = event.overrides if isinstance(event.overrides, dict) else {}
            train, evalmb = overrides.get("microbatch", ""), overrides.get("val_batch", "")
        elif isinstance(event, ev.Shrink | ev.Grow):
            phase = str(event.phase or "")
            train, evalmb = (event.to, "") if phase != "eval" else ("", event.to)
        elif isinstance(event, ev.Fallback | ev.Stage):
            train, evalmb = "", ""
        elif isinstance(event, ev.Saver):
            phase = "train"
            train, evalmb = event.microbatch if event.microbatch is not None else "", ""
        else:
            continue
        budget_text = size(budget) if isinstance(budget, int | float) else ""
        rows.append([since(event.time, t0), event.kind, phase, "" if train is None else str(train),
                     "" if evalmb is None else str(evalmb), budget_text, describe(event)])
    return rows


def _restart_rows(run: RunData) -> list[list[str]]:
    rows = []
    for event in run.events:
        if isinstance(event, ev.Kill | ev.Restart):
            cause = cause_words(event.cause) if event.cause else ""
            attempt = "" if event.attempt is None else str(event.attempt)
            rows.append([since(event.time, run.start), clock(event.time), event.kind, attempt, cause,
                         describe(event)])
    return rows


def _facts(run: RunData) -> list[tuple[str, str]]:
    starts = ev.of_kind(run.events, ev.Start)
    facts = [("run directory", str(run.root))]
    if run.start is not None and run.end is not None:
        facts += [("started", clock(run.start)), ("last record", clock(run.end)),
                  ("span", format_duration(run.end - run.start))]
    if starts:
        facts.append(("device", str(starts[-1].device or "?")))
        facts.append(("attempts", str(len(starts))))
    budget = budget_of(run.events)
    facts.append(("budget", size(budget) if budget else "none recorded"))
    savers = ev.savers_in_force(run.events)
    facts.append(("memory savers", ", ".join(savers) if savers else "none"))
    if run.results:
        facts.append(("epochs recorded", str(len(run.results))))
    if run.timeline is not None:
        summary = run.timeline.summary
        facts.append(("memory samples", f"{summary.rows:,}"))
        if summary.min_available is not None:
            facts.append(("lowest system available", size(summary.min_available)))
    facts.append(("events", f"{len(run.events):,}"))
    return facts


def _results_table(results: Sequence[Mapping[str, float | None]]) -> str:
    headers = list(results[0])
    rows = [["" if r.get(h) is None else value_text(h, r[h]) for h in headers] for r in results]
    return _table(headers, rows)


def render_html(run: RunData, verdict: str, memory_svg: str, curves_svg: str | None) -> str:
    """The whole page as one string."""
    ok = verdict.startswith("finished")
    facts = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in _facts(run))
    if curves_svg is not None:
        curves = f'<figure id="curves-chart">{curves_svg}</figure>'
        curves += f"<details><summary>results.csv</summary>{_results_table(run.results)}</details>"
    else:
        curves = ('<p class="muted">no results.csv: a run of <code>oomguard run</code> (or one killed '
                  "before its first epoch ended) has no per-epoch metrics.</p>")
    plan_rows = _plan_rows(run)
    plan_note = ""
    if len(plan_rows) > MAX_ROWS:
        plan_note = f'<p class="note">the first {len(plan_rows) - MAX_ROWS} changes are in events.jsonl</p>'
        plan_rows = plan_rows[-MAX_ROWS:]
    plan = (_table(["when", "event", "phase", "microbatch", "eval microbatch", "budget", "detail"], plan_rows)
            if plan_rows else '<p class="muted">no plan recorded</p>') + plan_note
    checks = prediction_rows(run.events)
    headers = ["epoch", "microbatch", "eval microbatch", "predicted peak", "measured peak",
               "measured vs predicted", "margin after", "part that grew"]
    predicted = _table(headers, checks, "prediction-table") if checks else (
        '<p class="muted">no predicted peak recorded (a given microbatch is not probed, and '
        "<code>oomguard run</code> plans nothing)</p>")
    restart_rows = _restart_rows(run)
    restarts = (_table(["when", "time", "event", "attempt", "cause", "detail"], restart_rows)
                if restart_rows else '<p class="muted">no kills and no restarts</p>')
    shown, note = _clip(run.events)
    event_rows = [[since(e.time, run.start), clock(e.time), ev.name_of(e), describe(e)] for e in shown]
    kinds = [ev.name_of(e) for e in shown]
    events = _table(["when", "time", "event", "detail"], event_rows, "event-table", kinds)
    config = ""
    if run.config is not None:
        config = ("<h2>Configuration</h2><details><summary>config.yaml</summary><pre>"
                  f"{escape(yaml.safe_dump(run.config, sort_keys=False))}</pre></details>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>oomguard report: {escape(run.name)}</title><style>{_CSS}</style></head>
<body>
<h1>oomguard report: {escape(run.name)}</h1>
<p class="verdict {'ok' if ok else 'bad'}" id="verdict">{escape(verdict)}</p>
<dl class="facts">{facts}</dl>
<h2>Memory</h2>
<figure id="memory-chart">{memory_svg}
<figcaption>Lines are the highest value in each time slice (lowest for system available), bands the
range within it. Hover an event marker for its details. Also saved as memory.png.</figcaption></figure>
<h2>Training curves</h2>{curves}
<h2>Plan over time</h2>{plan}
<h2>Predicted peak against measured</h2>{predicted}
<h2>Kills and restarts</h2>{restarts}
<h2>Events</h2><div id="event-filter"></div><p class="note" id="event-count"></p>{events}
{f'<p class="note">{escape(note)}</p>' if note else ''}
{config}
<script>{_SCRIPT}</script>
</body></html>
"""
