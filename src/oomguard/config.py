"""The configuration: flat keys from a YAML file and/or ``key=value`` overrides.

Everything is validated here, when the config is built, so a bad value stops
the command before any work starts, with one line naming the key, what was
expected and what was given.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from oomguard.errors import ConfigError
from oomguard.units import parse_duration, parse_memory_limit, parse_size

# What each key expects, in words, for error messages.
EXPECTED: dict[str, str] = {
    "task": "one of auto, classify, multitask, detect",
    "data": "a dataset path or builtin:shapes",
    "model": "builtin:<name>, timm:<name> or a YOLO .yaml/.pt",
    "pretrained": "true, false or a path to local weights",
    "epochs": "a positive integer",
    "batch": "a positive integer (the effective batch the optimizer sees)",
    "microbatch": "auto or a positive integer",
    "imgsz": "an integer image size of at least 8 pixels",
    "device": "one of auto, cpu, cuda, cuda:N, mps",
    "workers": "a non-negative integer",
    "seed": "an integer",
    "deterministic": "true or false",
    "val_every": "a positive integer (epochs between validations)",
    "val_batch": "auto or a positive integer",
    "lr": "a positive number",
    "optimizer": "one of sgd, adamw",
    "momentum": "a number in [0, 1)",
    "weight_decay": "a non-negative number",
    "schedule": "one of cosine, step, constant",
    "warmup_epochs": "a non-negative number of epochs",
    "amp": "true or false",
    "memory_limit": "auto, off, a size like 2GB or 1500MB, or a fraction like 0.8",
    "memory_cap": "a size like 2GB, or null",
    "min_available": "auto or a size like 1GB",
    "checkpoint_every": "a duration like 30s or 10m",
    "keep": "a positive integer",
    "max_restarts": "a non-negative integer",
    "dev_samples": "a positive integer or null",
    "project": "a directory path",
    "name": "a run name without slashes",
    "allow_degrade": "true or false",
    "cache": "true or false",
    "reg_weight": "a non-negative number",
    "label_smoothing": "a number in [0, 1)",
    "sample_every": "a duration like 50ms or 0.1s",
    "release_every": "a positive number of steps between cache releases, or null",
    "rehearse": "true or false",
    "tensorboard": "true or false",
    "stages": "a list of mappings of overrides",
    "nproc": "a positive number of processes per machine",
    "nnodes": "a positive number of machines",
    "node_rank": "this machine's index, from 0 to nnodes - 1",
    "master_addr": "the host name or address of machine 0",
    "master_port": "a TCP port from 1 to 65535, or 0 (a free one, on one machine)",
}


def _positive_size(value: Any) -> int:
    size = parse_size(value)
    if size <= 0:
        raise ValueError("must be positive")
    return size


class Config(BaseModel):
    """A resolved, validated configuration. Field names are the public keys."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    task: Literal["auto", "classify", "multitask", "detect"] = "auto"
    data: str = "builtin:shapes"
    model: str = "builtin:tiny"
    pretrained: bool | str = False
    epochs: int = Field(12, ge=1)
    batch: int = Field(64, ge=1)
    microbatch: Literal["auto"] | int = "auto"
    imgsz: int | None = Field(None, ge=8)
    device: str = "auto"
    workers: int = Field(0, ge=0)
    seed: int = 0
    deterministic: bool = False
    val_every: int = Field(1, ge=1)
    val_batch: Literal["auto"] | int = "auto"
    lr: float | None = Field(None, gt=0)
    optimizer: Literal["sgd", "adamw"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = Field(1.0, ge=0)
    amp: bool = False
    memory_limit: Literal["auto", "off"] | float | int = "auto"
    memory_cap: int | None = None
    min_available: Literal["auto"] | int = "auto"
    checkpoint_every: float = 300.0
    keep: int = Field(2, ge=1)
    max_restarts: int = Field(10, ge=0)
    dev_samples: int | None = Field(None, ge=1)
    project: str = "runs"
    name: str = "exp"
    allow_degrade: bool = False
    cache: bool = False
    reg_weight: float = Field(1.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    sample_every: float = 0.05
    release_every: int | None = Field(None, ge=1)
    rehearse: bool = False
    tensorboard: bool = False
    stages: list[dict[str, Any]] | None = None
    nproc: int = Field(1, ge=1)
    nnodes: int = Field(1, ge=1)
    node_rank: int = Field(0, ge=0)
    master_addr: str = "127.0.0.1"
    master_port: int = Field(0, ge=0, le=65535)

    @model_validator(mode="after")
    def _node_rank_in_range(self) -> Config:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank={self.node_rank} is not below nnodes={self.nnodes}")
        if self.nnodes > 1 and self.master_port == 0:
            raise ValueError("nnodes > 1 needs master_port= a port every machine can reach, e.g. 29500")
        return self

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    @field_validator("microbatch", "val_batch", mode="before")
    @classmethod
    def _auto_or_positive(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError("bad value")
        number = int(value)
        if number < 1:
            raise ValueError("must be positive")
        return number

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        name = value.strip().lower()
        if name in ("auto", "cpu", "cuda", "mps") or (
            name.startswith("cuda:") and name[5:].isdigit()
        ):
            return name
        raise ValueError("unknown device")

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _memory_limit(cls, value: Any) -> str | float | int:
        return parse_memory_limit(value)

    @field_validator("memory_cap", mode="before")
    @classmethod
    def _memory_cap(cls, value: Any) -> int | None:
        return None if value is None else _positive_size(value)

    @field_validator("min_available", mode="before")
    @classmethod
    def _min_available(cls, value: Any) -> Any:
        return value if value == "auto" else _positive_size(value)

    @field_validator("checkpoint_every", "sample_every", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        seconds = parse_duration(value)
        if seconds <= 0:
            raise ValueError("must be positive")
        return seconds

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or "/" in value or "\\" in value or value in (".", ".."):
            raise ValueError("bad run name")
        return value

    @property
    def run_dir(self) -> Path:
        return Path(self.project) / self.name

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``['epochs=3', 'memory_limit=2GB'] -> {'epochs': 3, 'memory_limit': '2GB'}``.

    Values are read as YAML scalars, so ``3`` is an int, ``true`` a bool and
    ``null`` None, as in a config file.
    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {item!r} (for example: epochs=3)")
        try:
            overrides[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            overrides[key] = raw
    return overrides


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file, or a one-line ConfigError."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {str(file)!r} not found; give an existing .yaml file")
    try:
        loaded = yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {str(file)!r} is not valid YAML{where}; fix the file") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"config file {str(file)!r} must hold a mapping of key: value, got {type(loaded).__name__}"
        )
    return loaded


def build_config(values: dict[str, Any]) -> Config:
    """Validate ``values`` into a Config, turning the first problem into one line."""
    unknown = [key for key in values if key not in Config.model_fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(Config.model_fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown config key {key!r}{hint}; see the keys in the README")
    try:
        return Config(**values)
    except ValidationError as err:
        first = err.errors()[0]
        if not first["loc"]:  # a rule across keys (model_validator): its own words
            raise ConfigError(str(first["msg"]).removeprefix("Value error, ")) from None
        key = str(first["loc"][0])
        given = values.get(key, first.get("input"))
        expected = EXPECTED.get(key, first["msg"])
        raise ConfigError(f"bad value for {key!r}: expected {expected}, got {given!r}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """The config from an optional YAML file, then ``key=value`` overrides on top."""
    values: dict[str, Any] = read_config_file(path) if path is not None else {}
    values.update(parse_overrides(overrides or []))
    return build_config(values)
