"""``oomguard``: train, run, probe, report, status, doctor.

User mistakes end as one or two lines on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from oomguard.errors import OomguardError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Make PyTorch training runs finish on the memory they have.",
)
ArgsOption = Annotated[
    list[str] | None, typer.Argument(help="[CONFIG.yaml] [key=value ...]", show_default=False)
]


def _keys_epilog() -> str:
    """Every config key with its default and meaning, from the config model (no copy to drift)."""
    from oomguard.config import keys_help

    lines = [f"{key}={default}\n    {meaning}" for key, default, meaning in keys_help()]
    # \b keeps click from re-wrapping the block
    return "\b\nConfig keys (key=value, or in CONFIG.yaml):\n" + "\n".join(lines)


@app.command(epilog=_keys_epilog())
def train(
    args: ArgsOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in <project>/<name>.")] = False,
    no_supervise: Annotated[
        bool, typer.Option("--no-supervise", help="Train in this process, without restarts.")
    ] = False,
) -> None:
    """Train; supervised (restarted with a safer plan when killed) unless --no-supervise."""
    from oomguard.cli.train import train_command

    raise typer.Exit(train_command(args or [], resume=resume, supervise=not no_supervise))


@app.command()
def probe(
    args: ArgsOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Measure peak memory against microbatch size and print the plan that fits the budget."""
    from oomguard.cli.probe import probe_command

    raise typer.Exit(probe_command(args or [], as_json=json_output))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    memory_limit: Annotated[
        str | None, typer.Option("--memory-limit", help="SIGKILL and restart the command above SIZE.")
    ] = None,
    max_restarts: Annotated[int, typer.Option("--max-restarts", min=0, help="Restarts at most.")] = 10,
    resume_args: Annotated[
        str | None, typer.Option("--resume-args", help="Arguments appended on restarts.")
    ] = None,
    run_dir: Annotated[str, typer.Option("--run-dir", help="Where events and memory go.")] = "runs/run",
) -> None:
    """Supervise any command: restart it when killed, appending ARGS on restarts (-- CMD ...)."""
    from pathlib import Path

    from rich.console import Console

    from oomguard.errors import ConfigError
    from oomguard.supervise.run import run_command
    from oomguard.units import parse_size

    command = list(ctx.args)
    if not command:
        raise ConfigError("no command given; usage: oomguard run [OPTIONS] -- CMD ...")
    try:
        limit = parse_size(memory_limit) if memory_limit is not None else None
    except ValueError:
        raise ConfigError(
            f"bad value for '--memory-limit': expected a size like 2GB or 1500MB, got {memory_limit!r}"
        ) from None
    raise typer.Exit(run_command(command, Path(run_dir), limit, max_restarts, resume_args,
                                 Console(highlight=False, markup=False)))


@app.command()
def report(
    run_dir: Annotated[str, typer.Argument(help="A run directory, like runs/exp.")],
) -> None:
    """Write RUN_DIR/report.html and RUN_DIR/memory.png: where the memory went."""
    from oomguard.report import write_report

    paths = write_report(run_dir)
    print(f"wrote {paths.html} and {paths.png}")


@app.command()
def status(
    run_dir: Annotated[str, typer.Argument(help="A run directory, like runs/exp.")],
) -> None:
    """One screen about a run in progress or finished: state, progress, plan, memory, last events."""
    from oomguard.cli.status import status_command

    raise typer.Exit(status_command(run_dir))


@app.command()
def doctor(args: ArgsOption = None) -> None:
    """Check device, memory and settings, and say what to change."""
    from rich.console import Console

    from oomguard.cli.args import split_args
    from oomguard.config import load_config
    from oomguard.diagnose import run_doctor

    config_path, overrides = split_args(args or [])
    config = load_config(config_path, overrides) if args else None
    raise typer.Exit(run_doctor(config, Console(highlight=False)))


def main() -> None:
    """Entry point of the ``oomguard`` console script."""
    try:
        app()  # standalone: usage errors print and exit 2 by themselves
    except OomguardError as err:
        print(f"oomguard: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("oomguard: interrupted", file=sys.stderr)
        sys.exit(130)
