"""Reading ``[CONFIG.yaml] [key=value ...]`` and the config for a run, including ``--resume``."""

from __future__ import annotations

from typing import Any

from oomguard.atomic import write_atomic
from oomguard.config import Config, build_config, parse_overrides, read_config_file
from oomguard.errors import ConfigError
from oomguard.rundir import RunDir


def split_args(args: list[str]) -> tuple[str | None, list[str]]:
    """``['cfg.yaml', 'epochs=3'] -> ('cfg.yaml', ['epochs=3'])``."""
    config_path: str | None = None
    overrides: list[str] = []
    for arg in args:
        if "=" in arg:
            overrides.append(arg)
        elif arg.endswith((".yaml", ".yml")) and config_path is None:
            config_path = arg
        else:
            raise ConfigError(
                f"unexpected argument {arg!r}: give an optional CONFIG.yaml, then key=value overrides"
            )
    return config_path, overrides


def resolve_config(args: list[str], resume: bool) -> Config:
    """The run's config: the saved one when resuming, then the file, then ``key=value`` on top."""
    config_path, overrides = split_args(args)
    values: dict[str, Any] = read_config_file(config_path) if config_path else {}
    values.update(parse_overrides(overrides))
    config = build_config(values)
    if resume:
        saved = RunDir(config.run_dir).config
        if saved.is_file():
            config = build_config({**read_config_file(saved), **values})
    return config


def write_config(config: Config, run: RunDir) -> None:
    """``config.yaml``, replaced atomically so a kill never leaves half of it."""
    write_atomic(run.config, config.to_yaml())
