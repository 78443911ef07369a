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

#: The memory savers the plan may switch on (``savers``), and those that leave the numbers as they are.
SAVER_NAMES = ("activation_checkpointing", "amp", "optimizer_offload")
EXACT_SAVERS = ("activation_checkpointing", "optimizer_offload")


def parse_savers(value: Any) -> str | list[str]:
    """``auto``, ``off``, or a list of saver names (a list, or names separated by commas); ValueError else."""
    if isinstance(value, str) and value.strip().lower() in ("auto", "off"):
        return value.strip().lower()
    if value is False or value is None:
        return "off"
    if isinstance(value, str):
        value = [part.strip() for part in value.strip().strip("[]").split(",") if part.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(name, str) for name in value):
        raise ValueError("not auto, off or a list of names")
    unknown = [name for name in value if name not in SAVER_NAMES]
    if unknown:
        raise ValueError(f"unknown saver {unknown[0]!r}")
    return [name for name in SAVER_NAMES if name in value]  # one order: the events and the ladder compare


def _key(default: Any, meaning: str, expected: str, **bounds: Any) -> Any:
    """A config key: its default, one line of meaning (``--help``) and what a value must be (errors)."""
    return Field(default, description=meaning, json_schema_extra={"expected": expected}, **bounds)


def expected(key: str) -> str | None:
    """What ``key`` expects, in words, for error messages."""
    extra = Config.model_fields[key].json_schema_extra
    return str(extra["expected"]) if isinstance(extra, dict) and "expected" in extra else None


def keys_help() -> list[tuple[str, str, str]]:
    """``(key, default, meaning)`` of every config key, in the model's order (``oomguard train --help``)."""
    rows = []
    for key, info in Config.model_fields.items():
        default = info.default
        if default is None or isinstance(default, bool):
            shown = yaml.safe_dump(default).split("\n")[0]  # null, true, false: as key=value reads them
        else:
            shown = str(default)
        rows.append((key, shown, info.description or ""))
    return rows


def _positive_size(value: Any) -> int:
    size = parse_size(value)
    if size <= 0:
        raise ValueError("must be positive")
    return size


class Config(BaseModel):
    """A resolved, validated configuration. Field names are the public keys."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    task: Literal["auto", "classify", "multitask", "detect"] = _key(
        "auto", "what to train: classify (image folders), multitask (CSV with class + numbers), detect "
        "(YOLO); auto picks from data", "one of auto, classify, multitask, detect")
    data: str = _key("builtin:shapes", "a dataset folder, a CSV table's folder, an ultralytics data.yaml, or "
                     "builtin:shapes", "a dataset path or builtin:shapes")
    model: str = _key("builtin:tiny", "builtin:tiny|resnet|resnet18, timm:<name>, or a YOLO .yaml/.pt",
                      "builtin:<name>, timm:<name> or a YOLO .yaml/.pt")
    pretrained: bool | str = _key(False, "false, or local weights to start from (a timm name with true "
                                  "downloads through timm)", "true, false or a path to local weights")
    epochs: int = _key(12, "epochs to train (across stages: each stage's own)", "a positive integer", ge=1)
    batch: int = _key(64, "the effective batch the optimizer sees, whatever the microbatch (detection: "
                      "images per step, as in ultralytics)",
                      "a positive integer (the effective batch the optimizer sees)", ge=1)
    nbs: int | None = _key(None, "detection: the nominal batch ultralytics accumulates steps to (its "
                           "default 64)", "a positive integer, or null", ge=1)
    microbatch: Literal["auto"] | int = _key("auto", "samples per forward/backward; auto measures and plans "
                                             "it to fit the memory budget", "auto or a positive integer")
    imgsz: int | None = _key(None, "image size in pixels (default: the task's)",
                             "an integer image size of at least 8 pixels", ge=8)
    device: str = _key("auto", "auto, cpu, cuda, cuda:N or mps", "one of auto, cpu, cuda, cuda:N, mps")
    workers: int = _key(0, "data loader worker processes", "a non-negative integer", ge=0)
    seed: int = _key(0, "seed of every random generator", "an integer")
    deterministic: bool = _key(False, "deterministic algorithms (bit-identical resumes on GPUs too)",
                               "true or false")
    val_every: int = _key(1, "epochs between validations (and always at the last)",
                          "a positive integer (epochs between validations)", ge=1)
    val_batch: Literal["auto"] | int = _key("auto", "the evaluation microbatch; auto plans it",
                                            "auto or a positive integer")
    lr: float | None = _key(None, "peak learning rate (default: 0.05 for sgd, 0.003 for adamw)",
                            "a positive number", gt=0)
    optimizer: Literal["sgd", "adamw"] = _key("adamw", "sgd or adamw", "one of sgd, adamw")
    momentum: float = _key(0.9, "SGD momentum (nesterov when above 0)", "a number in [0, 1)", ge=0, lt=1)
    weight_decay: float | None = _key(None, "weight decay (default: 5e-4 for sgd, 0.05 for adamw)",
                                      "a non-negative number", ge=0)
    schedule: Literal["cosine", "step", "constant"] = _key(
        "cosine", "learning-rate schedule after warm-up", "one of cosine, step, constant")
    warmup_epochs: float = _key(1.0, "epochs of linear learning-rate warm-up",
                                "a non-negative number of epochs", ge=0)
    amp: Literal["auto"] | bool = _key(
        "auto", "mixed precision (float16 with a GradScaler on CUDA, bfloat16 elsewhere): true, false, or "
        "auto (only where microbatch 1 does not fit without a memory saver)", "true, false or auto")
    savers: Literal["auto", "off"] | list[str] = _key(
        "auto", "memory savers: auto (the plan switches them on where they make microbatch 1 fit, or a "
        "larger microbatch faster), off, or a list on from the start: activation_checkpointing, amp, "
        "optimizer_offload (CUDA)",
        "auto, off, or a list of activation_checkpointing, amp, optimizer_offload")
    memory_limit: Literal["auto", "off"] | float | int = _key(
        "auto", "the memory budget: auto, off, a size (6GB) or a fraction of the device (0.8)",
        "auto, off, a size like 2GB or 1500MB, or a fraction like 0.8")
    memory_cap: int | None = _key(None, "rehearsal: the supervisor kills the run above this size, as a "
                                  "smaller machine's OS would", "a size like 2GB, or null")
    min_available: Literal["auto"] | int = _key(
        "auto", "system memory under which the run checkpoints, releases caches and shrinks (auto: 5% of "
        "the machine, at least 300 MB)", "auto or a size like 1GB")
    checkpoint_every: Literal["auto"] | float = _key(
        "auto", "time between checkpoints besides every epoch's (30s, 10m); auto: as often as keeps "
        "their cost under 1% of training time, every 30s to 2m", "auto or a duration like 30s or 10m")
    keep: int = _key(2, "checkpoints kept besides best.pt", "a positive integer", ge=1)
    max_restarts: int = _key(10, "restarts the supervisor may make", "a non-negative integer", ge=0)
    restart_wait: float = _key(1.0, "the supervisor's wait before a restart after an unexplained kill; it "
                               "doubles with each one in a row that made no progress, up to 60s",
                               "a duration like 1s or 500ms (0: no wait)")
    dev_samples: int | None = _key(None, "train and validate on this many samples only (a quick try)",
                                   "a positive integer or null", ge=1)
    project: str = _key("runs", "the folder of run directories", "a directory path")
    name: str = _key("exp", "this run's directory in project", "a run name without slashes")
    allow_degrade: bool = _key(False, "after memory kills, the supervisor may also lower imgsz",
                               "true or false")
    cache: bool = _key(False, "hold decoded images in RAM", "true or false")
    val_fraction: float = _key(0.1, "image folders without val/: the share of each class held out for "
                               "validation (seeded by seed, recorded in the run)",
                               "a number between 0 and 1, like 0.1", gt=0, lt=1)
    strict_data: bool = _key(False, "refuse to train when any image cannot be read (default: leave it out "
                             "with a warning)", "true or false")
    reg_weight: float = _key(1.0, "multitask: weight of the regression loss", "a non-negative number", ge=0)
    label_smoothing: float = _key(0.0, "label smoothing of the classification loss", "a number in [0, 1)",
                                  ge=0, lt=1)
    sample_every: float = _key(0.05, "time between memory samples", "a duration like 50ms or 0.1s")
    release_every: int | None = _key(None, "steps between cache releases (the restart ladder sets it)",
                                     "a positive number of steps between cache releases, or null", ge=1)
    rehearse: bool = _key(False, "a short dress rehearsal that says whether the whole run fits",
                          "true or false")
    tensorboard: bool = _key(False, "write TensorBoard scalars to RUN/tensorboard", "true or false")
    stages: list[dict[str, Any]] | None = _key(None, "a list of overrides, one per stage (config file)",
                                               "a list of mappings of overrides")
    nproc: int = _key(1, "data-parallel processes on this machine",
                      "a positive number of processes per machine", ge=1)
    nnodes: int = _key(1, "machines of a data-parallel run", "a positive number of machines", ge=1)
    node_rank: int = _key(0, "this machine's index among nnodes",
                          "this machine's index, from 0 to nnodes - 1", ge=0)
    master_addr: str = _key("127.0.0.1", "host of machine 0 (rendezvous)",
                            "the host name or address of machine 0")
    master_port: int = _key(0, "rendezvous port (0: a free one, on one machine)",
                            "a TCP port from 1 to 65535, or 0 (a free one, on one machine)", ge=0, le=65535)

    @model_validator(mode="after")
    def _node_rank_in_range(self) -> Config:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank={self.node_rank} is not below nnodes={self.nnodes}")
        if self.nnodes > 1 and self.master_port == 0:
            raise ValueError("nnodes > 1 needs master_port= a port every machine can reach, e.g. 29500")
        return self

    @model_validator(mode="after")
    def _amp_allowed(self) -> Config:
        if self.amp is False and isinstance(self.savers, list) and "amp" in self.savers:
            raise ValueError("savers lists amp while amp=false; remove amp from savers, or set amp=auto")
        return self

    @model_validator(mode="after")
    def _ranks_fit_the_device(self) -> Config:
        if self.nproc > 1 and self.device == "mps":
            raise ValueError(f"nproc={self.nproc} with device=mps: a Mac has one GPU, which one process "
                             "already uses whole; use nproc=1 (or device=cpu for CPU ranks)")
        if self.nproc > 1 and self.device.startswith("cuda:"):
            raise ValueError(f"nproc={self.nproc} with device={self.device}: every rank would train on that "
                             "one GPU; use device=cuda (rank i takes GPU i), and CUDA_VISIBLE_DEVICES to "
                             "choose the GPUs")
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

    @field_validator("savers", mode="before")
    @classmethod
    def _savers(cls, value: Any) -> str | list[str]:
        return parse_savers(value)

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
    def _duration(cls, value: Any) -> Any:
        if value == "auto":
            return value
        seconds = parse_duration(value)
        if seconds <= 0:
            raise ValueError("must be positive")
        return seconds

    @field_validator("restart_wait", mode="before")
    @classmethod
    def _wait(cls, value: Any) -> float:
        return parse_duration(value)

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
        wanted = expected(key) if key in Config.model_fields else None
        wanted = wanted or first["msg"]
        raise ConfigError(f"bad value for {key!r}: expected {wanted}, got {given!r}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """The config from an optional YAML file, then ``key=value`` overrides on top."""
    values: dict[str, Any] = read_config_file(path) if path is not None else {}
    values.update(parse_overrides(overrides or []))
    return build_config(values)
