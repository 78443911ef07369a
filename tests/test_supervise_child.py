"""The child's output tail, and the supervisor's promise to start without torch."""

from __future__ import annotations

import subprocess
import sys

from oomguard.supervise.child import LineTail


def test_interleaved_streams_keep_their_lines_whole() -> None:
    tail = LineTail(maxlen=10)
    tail.feed("loading the data", stream=1)  # print() writes the text and the newline separately
    tail.feed("Traceback (most recent call last):\n  File", stream=2)
    tail.feed("\nepoch 1 10%\repoch 1 20%\r", stream=1)
    tail.feed(' "x.py"\nValueError: boom', stream=2)
    assert tail.lines() == ["Traceback (most recent call last):", "loading the data", "epoch 1 10%",
                            "epoch 1 20%", '  File "x.py"', "ValueError: boom"]


def test_the_tail_keeps_only_the_last_lines() -> None:
    tail = LineTail(maxlen=2)
    tail.feed("".join(f"line {i}\n" for i in range(100)))
    assert tail.lines() == ["line 98", "line 99"]


def test_the_supervisor_does_not_import_torch() -> None:
    code = "import sys, oomguard.supervise, oomguard.supervise.supervisor; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
