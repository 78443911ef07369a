"""What ``oomguard probe`` prints: the measured table and the plan, as text, rich table or JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from oomguard.engine.plan import Plan, Row
from oomguard.units import format_bytes, format_duration


@dataclass
class ProbeResult:
    plan: Plan
    device: str
    budget: str

    def rows(self) -> list[tuple[str, int, int, str]]:
        """``(phase, size, peak, verdict)`` for every probed size, train then eval."""
        plan = self.plan
        out: list[tuple[str, int, int, str]] = []
        for phase, rows in (("train", plan.table), ("eval", plan.eval_table)):
            out.extend((phase, row.size, row.peak, _verdict(row, plan.target)) for row in rows)
        return out

    def summary(self) -> str:
        plan = self.plan
        parts = [f"device {self.device}", f"budget {self.budget}"]
        if plan.table:
            parts.append(f"microbatch {plan.microbatch} of {plan.ceiling}")
        if plan.eval_microbatch is not None:
            parts.append(f"eval microbatch {plan.eval_microbatch}")
        if plan.savers:
            parts.append(f"memory savers {', '.join(plan.savers)}")
        parts.append(f"fit {format_bytes(plan.fit.a)} + {format_bytes(plan.fit.b)}/sample")
        parts.append(f"predicted epoch peak {format_bytes(plan.prediction.peak)}")
        if plan.budget is not None:
            parts.append(f"margin {plan.margin:.0%} of the room")
        parts.append(f"probe took {format_duration(plan.seconds)}")
        return "plan: " + ", ".join(parts)

    def prediction(self) -> str:
        """The epoch's predicted peak for this plan, one line per part (what ``rehearse=true`` prints too)."""
        plan = self.plan
        head = f"predicted epoch peak at microbatch {plan.microbatch}"
        if plan.eval_microbatch is not None:
            head += f", eval microbatch {plan.eval_microbatch}"
        return "\n".join([head + ":", *plan.prediction.lines()])

    def table(self) -> str:
        """Plain text: one line per probed size, then the plan and its predicted peak."""
        lines = [f"{'phase':<6} {'size':>6} {'peak':>10}  verdict"]
        for phase, size, peak, verdict in self.rows():
            lines.append(f"{phase:<6} {size:>6} {format_bytes(peak):>10}  {verdict}")
        lines.append(self.summary())
        lines.append(self.prediction())
        return "\n".join(lines)

    def rich_table(self) -> Any:
        """The same as a ``rich.table.Table`` (its caption is the plan)."""
        from rich.table import Table

        table = Table(title="oomguard probe", caption=self.summary())
        for name, justify in (("phase", "left"), ("size", "right"), ("peak", "right"), ("verdict", "left")):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for phase, size, peak, verdict in self.rows():
            table.add_row(phase, str(size), format_bytes(peak), verdict)
        return table

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "budget_source": self.budget, **self.plan.event().details()}

    def to_json(self) -> str:
        """One JSON object (one line): the ``plan`` event's details plus the device."""
        return json.dumps(self.to_dict(), separators=(",", ":"))


def _verdict(row: Row, target: float | None) -> str:
    if not row.ok:
        return "out of memory"
    if target is not None and row.peak > target:
        return "over target"
    return "fits"
