"""Whether a config trains detection, and refusing one that cannot work, before any run directory exists."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from oomguard.config import Config
from oomguard.errors import ConfigError


def is_detect(config: Config) -> bool:
    """``task=detect``, or ``task=auto`` with an ultralytics ``data.yaml``."""
    return config.task == "detect" or (config.task == "auto" and config.data.endswith((".yaml", ".yml")))


def check_detect_config(config: Config) -> None:
    """Refuse a detection config that cannot work, in one line."""
    if importlib.util.find_spec("ultralytics") is None:
        raise ConfigError("task=detect needs ultralytics: pip install 'oomguard[detect]'")
    if not config.model.endswith((".yaml", ".yml", ".pt")):
        raise ConfigError(f"task=detect needs a YOLO model file, got model={config.model!r}; "
                          "give model=yolov8n.yaml or a local .pt")
    if not config.data.endswith((".yaml", ".yml")) or not Path(config.data).is_file():
        raise ConfigError(f"task=detect needs data= an ultralytics data.yaml, got {config.data!r}")
    if config.world_size > 1:
        raise ConfigError("nproc/nnodes are not available with task=detect yet; train detection on one "
                          "process (ultralytics' own multi-GPU runs outside oomguard)")
    class_count(config.data)


def class_count(data_yaml: str) -> int:
    """The number of classes in an ultralytics data.yaml (``names`` as a list or a mapping, or ``nc``)."""
    try:
        spec = yaml.safe_load(Path(data_yaml).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"data={data_yaml!r} is not a readable data.yaml ({type(err).__name__})") from None
    spec = spec if isinstance(spec, dict) else {}
    names = spec.get("names")
    count = len(names) if isinstance(names, list | dict) else spec.get("nc")
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"data={data_yaml!r} names no classes; give names: {{0: cat, ...}} "
                          "as ultralytics does")
    return count


_IMAGE_SUFFIXES = {".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".dng", ".mpo", ".heic"}


def train_images(data_yaml: str) -> int | None:
    """How many training images a data.yaml names (folders of images or ``.txt`` lists); None when
    that cannot be told without ultralytics' own resolution (a download, a dataset name)."""
    try:
        spec = yaml.safe_load(Path(data_yaml).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    spec = spec if isinstance(spec, dict) else {}
    root = Path(str(spec.get("path") or "."))
    root = root if root.is_absolute() else Path(data_yaml).parent / root
    train = spec.get("train")
    entries = train if isinstance(train, list) else [train]
    count = 0
    for entry in entries:
        where = root / str(entry) if entry is not None else None
        if where is not None and where.is_dir():
            count += sum(1 for path in where.rglob("*") if path.suffix.lower() in _IMAGE_SUFFIXES)
        elif where is not None and where.suffix == ".txt" and where.is_file():
            count += sum(1 for line in where.read_text().splitlines() if line.strip())
        else:
            return None
    return count
