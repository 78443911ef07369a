"""Where ultralytics keeps a training's files, worked out as ultralytics 8.4 does, without importing it.

A ``yolo ... train`` command line (or ``ultralytics ...``) names its run by
``project``/``name`` and ``task``; ultralytics turns that into a save
directory (``ultralytics.cfg.get_save_dir``):

- ``project`` absolute: ``project/name``; relative or absent:
  ``RUNS/<task>/<project>/<name>``, ``RUNS`` being the ``runs_dir`` of
  ultralytics' settings file (``settings.json`` in ``$YOLO_CONFIG_DIR/Ultralytics``,
  else the platform's config folder), or, while ultralytics believes tests are
  running (``PYTEST_CURRENT_TEST``, or GitHub Actions), ``tests/tmp/runs`` beside
  its package;
- ``name`` defaults to the mode (``train``), ``task`` to the model's (guessed
  from its file name: ``-seg``, ``-cls``, ``-pose``, ``-obb``, ... else ``detect``);
- without ``exist_ok`` an existing folder is not reused: ``name-2``,
  ``name-3``, ... (``ultralytics.utils.files.increment_path``).

The training writes ``weights/last.pt`` there (:func:`last_checkpoint`), the
file ``resume`` continues from, and :func:`saved_epoch` reads which epoch it
holds; ``oomguard train task=detect`` names its own ultralytics folder and
finds and reads its ``last.pt`` by the same rules.

Older ultralytics (before 8.4) put a relative ``project`` under the current
folder instead; the task of a ``.pt`` is read from the file by ultralytics,
here only from its name. Nothing here imports ultralytics or torch: the
supervisor starts without them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickletools
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

TASKS = ("detect", "segment", "semantic", "depth", "classify", "pose", "obb")
MODES = ("train", "val", "predict", "export", "track", "benchmark")
#: ``-seg`` in a model's file name means ``segment``, and so on; anything else is ``detect``.
_TASK_BY_NAME = (("-sem", "semantic"), ("-seg", "segment"), ("-cls", "classify"), ("-pose", "pose"),
                 ("-obb", "obb"), ("-depth", "depth"))
_GITHUB = ("GITHUB_ACTIONS", "GITHUB_WORKFLOW", "RUNNER_OS")


def last_checkpoint(save_dir: Path) -> Path:
    """The ``last.pt`` a training in ``save_dir`` writes at each epoch end (what ``resume`` takes)."""
    return save_dir / "weights" / "last.pt"


_INTS = frozenset({"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"})
_MEMO = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})


def saved_epoch(checkpoint: Path) -> int | None:
    """The epoch an ultralytics checkpoint holds: the last finished one (0-based), -1 once training ended.

    Ultralytics resumes after a checkpoint's ``epoch`` and refuses one whose
    ``epoch`` is -1: the end of a training (or its early stop) strips the
    optimizer from ``last.pt`` and marks it so. None for a file that is no
    whole ``torch.save`` archive (a kill cut it short) or holds no epoch. The
    value is read from the pickle's opcodes, never unpickled: no torch, no code run.
    """
    try:
        with zipfile.ZipFile(checkpoint) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
            data = archive.read(name) if name is not None else b""
        ops = pickletools.genops(data)
        for op, arg, _ in ops:
            if op.name.endswith("UNICODE") and arg == "epoch":  # the first "epoch" is the top-level key
                value = next((a for o, a, _ in ops if o.name not in _MEMO), None)
                return value if isinstance(value, int) else None
    except (OSError, zipfile.BadZipFile, ValueError, KeyError):
        return None
    return None


def command_arguments(command: Sequence[str]) -> list[str] | None:
    """The arguments of ``command`` for ultralytics (``yolo ARGS``, ``python -m ultralytics ARGS``, ...).

    None when ``command`` does not run ultralytics' command line.
    """
    if not command:
        return None
    program = Path(command[0]).name.removesuffix(".exe")
    if program in ("yolo", "ultralytics"):
        return list(command[1:])
    for index in range(1, len(command) - 1):
        if command[index] == "-m" and command[index + 1] == "ultralytics":
            return list(command[index + 2:])
    return None


def _value(text: str) -> str | bool | None:
    """A value as ultralytics reads it where it matters here: none, true and false, else the text."""
    lower = text.strip().lower()
    return {"none": None, "true": True, "false": False}.get(lower, text.strip())


def _merge_equals(args: Sequence[str]) -> list[str]:
    """``key = value``, ``key= value`` and ``key =value`` as one ``key=value`` (ultralytics allows them)."""
    merged: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "=" and merged and index + 1 < len(args):
            arg, index = f"{merged.pop()}={args[index + 1]}", index + 1
        elif arg.endswith("=") and index + 1 < len(args) and "=" not in args[index + 1]:
            arg, index = arg + args[index + 1], index + 1
        elif arg.startswith("=") and merged:
            arg = merged.pop() + arg
        merged.append(arg)
        index += 1
    return merged


def read_arguments(args: Sequence[str]) -> dict[str, str | bool | None]:
    """The settings an ultralytics command line gives (``key=value``, bare task and mode words, ``cfg=``).

    Keys of a ``cfg=`` YAML file count unless the command line gives them too;
    a bare boolean word (``resume``, ``exist_ok``) means true.
    """
    given: dict[str, str | bool | None] = {}
    from_file: dict[str, str | bool | None] = {}
    for arg in _merge_equals(args):
        arg = arg.removeprefix("--").removesuffix(",")
        key, sep, text = arg.partition("=")
        if sep:
            key = key.strip()
            if key == "cfg":
                from_file = _cfg_file(text.strip())
            else:
                given[key] = _value(text)
        elif arg in TASKS:
            given["task"] = arg
        elif arg in MODES:
            given["mode"] = arg
        elif arg in ("resume", "exist_ok"):
            given[arg] = True
    return {**from_file, **given}


def _cfg_file(path: str) -> dict[str, str | bool | None]:
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return {}  # ultralytics will say what is wrong with it
    if not isinstance(loaded, dict):
        return {}
    return {str(k): v if isinstance(v, bool) or v is None else str(v) for k, v in loaded.items()}


def model_task(model: str | None) -> str:
    """The task ultralytics guesses from a model's file name (``yolov8n-seg.yaml`` -> ``segment``)."""
    if not model:
        return "detect"
    path = Path(model)
    for marker, task in _TASK_BY_NAME:
        if marker in path.stem:
            return task
    return next((task for task in TASKS if task in path.parts), "detect")


def _truthy(value: str | bool | None) -> bool:
    if isinstance(value, str):
        return value.strip() not in ("", "0", "0.0")
    return bool(value)


@dataclass(frozen=True)
class TrainFolder:
    """Where a training command's run goes: the folder before any ``-N`` suffix, and the one it will use."""

    wanted: Path  # project/name as asked for
    save_dir: Path  # the folder the next start of the command writes to (``wanted`` or ``wanted-N``)
    exist_ok: bool

    @property
    def last(self) -> Path:
        return last_checkpoint(self.save_dir)


def train_folder(settings: Mapping[str, str | bool | None], cwd: Path,
                 env: Mapping[str, str] | None = None) -> TrainFolder:
    """Where a training with command-line ``settings`` (:func:`read_arguments`) started in ``cwd`` saves."""
    environ = os.environ if env is None else env
    task = settings.get("task")
    task = task if isinstance(task, str) and task in TASKS else model_task(_text(settings.get("model")))
    project = _text(settings.get("project")) or ""
    root = Path(project) if Path(project).is_absolute() else runs_dir(cwd, environ) / task / project
    name = _text(settings.get("name")) or _text(settings.get("mode")) or "train"
    wanted = _absolute(root / name, cwd)
    exist_ok = _truthy(settings.get("exist_ok"))
    return TrainFolder(wanted, increment_path(wanted, exist_ok), exist_ok)


def _text(value: str | bool | None) -> str | None:
    return value if isinstance(value, str) and value else None


def _absolute(path: Path, cwd: Path) -> Path:
    return (path if path.is_absolute() else cwd / path).resolve()


def increment_path(path: Path, exist_ok: bool) -> Path:
    """``path`` itself when it is free or ``exist_ok``, else the first free ``path-2``, ``path-3``, ..."""
    if exist_ok or not path.exists():
        return path
    return next((candidate for n in range(2, 9999)
                 if not (candidate := path.with_name(f"{path.name}-{n}")).exists()), path)


def runs_dir(cwd: Path, env: Mapping[str, str] | None = None) -> Path:
    """Ultralytics' runs directory for a command started in ``cwd`` with environment ``env``."""
    environ = os.environ if env is None else env
    package = _package_dir()
    if package is not None and _tests_running(environ):
        base = package.parent / "tests" / "tmp" / "runs"
        worker = environ.get("PYTEST_XDIST_WORKER")
        return base / worker if worker else base
    configured = _settings(environ).get("runs_dir")
    if isinstance(configured, str) and configured:
        return _absolute(Path(configured), cwd)
    # No settings yet: ultralytics will write runs/ in the git checkout it is installed from, or here.
    git_root = None if package is None else next(
        (d for d in (package, *package.parents) if (d / ".git").exists()), None)
    return _absolute((git_root or Path()) / "runs", cwd)


def _tests_running(env: Mapping[str, str]) -> bool:
    return "PYTEST_CURRENT_TEST" in env or all(name in env for name in _GITHUB)


def settings_file(env: Mapping[str, str] | None = None, platform: str = sys.platform) -> Path:
    """Ultralytics' ``settings.json`` (``$YOLO_CONFIG_DIR/Ultralytics`` or the platform's config folder)."""
    environ = os.environ if env is None else env
    home = Path(environ.get("HOME") or Path.home())
    if environ.get("YOLO_CONFIG_DIR"):
        folder = Path(environ["YOLO_CONFIG_DIR"]).expanduser()
    elif platform.startswith("win"):
        folder = home / "AppData" / "Roaming"
    elif platform == "darwin":
        folder = home / "Library" / "Application Support"
    else:
        folder = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    return folder / "Ultralytics" / "settings.json"


def _settings(env: Mapping[str, str]) -> dict[str, object]:
    try:
        loaded = json.loads(settings_file(env).read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _package_dir() -> Path | None:
    """Where the ultralytics package is installed (found, not imported)."""
    try:
        spec = importlib.util.find_spec("ultralytics")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).resolve().parent
