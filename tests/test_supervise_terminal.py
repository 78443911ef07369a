"""Supervised ``oomguard train`` shows the live progress bar on a terminal, plain lines through a pipe."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

from cli_helpers import oomguard

RUN = ["dev_samples=128", "epochs=1", "batch=16", "imgsz=16", "workers=0"]  # 8 steps
# The bar redraws at most every 0.2 s: an epoch of 64 steps lasts several redraws on a fast machine too.
LONG = ["dev_samples=1024", "epochs=1", "batch=16", "imgsz=16", "workers=0"]
BAR = "\u2501"  # the bar's line character


def test_through_a_terminal_the_supervised_run_shows_the_live_bar(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {**os.environ, "OOMGUARD_CACHE": str(tmp_path / "cache"), "TERM": "xterm-256color"}
    supervisor = subprocess.Popen([sys.executable, "-m", "oomguard", "train", *LONG, "name=tty"],
                                  cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer of the terminal is gone
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert supervisor.wait(timeout=300) == 0
    text = b"".join(chunks).decode("utf-8", "replace")
    assert BAR in text and "\x1b[2K" in text  # rich redraws its bar in place
    counts = {int(done) for done in re.findall(r"(\d+)/64\b", text)}
    assert len(counts) >= 2 and max(counts) > min(counts), "the bar never moved"
    assert "finished in" in text


def test_through_a_pipe_the_supervised_run_prints_plain_lines(tmp_path: Path) -> None:
    done = oomguard("train", *RUN, "name=pipe", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stdout and BAR not in done.stdout
    assert re.search(r"^epoch 1/1  loss [\d.]+ ", done.stdout, re.MULTILINE)
    assert "finished in" in done.stdout
