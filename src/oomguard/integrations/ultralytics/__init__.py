"""``task=detect``: YOLO detection trained by ultralytics, with oomguard's plan, records and resumes.

Ultralytics trains; oomguard adds what it lacks: a memory plan for ``batch``
(:mod:`.plan`), the memory timeline, events, ``results.csv`` and weights in
oomguard's format (:mod:`.record`), checkpoints under memory pressure
(:mod:`.pressure`), ``stages:`` (:mod:`.stages`) and supervised restarts.
Where ultralytics keeps a run's files is :mod:`.folders`' knowledge, shared
with the ``oomguard run`` preset. Nothing here imports ultralytics or torch
until a training starts.
"""

from __future__ import annotations

from oomguard.integrations.ultralytics.checks import check_detect_config, is_detect

__all__ = ["check_detect_config", "is_detect"]
