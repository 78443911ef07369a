"""Config parsing: files, overrides, sizes, durations and every rejection, with exact messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from oomguard.config import load_config, parse_overrides
from oomguard.errors import ConfigError
from oomguard.units import format_bytes, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2GB", 2_000_000_000), ("1500MB", 1_500_000_000), ("512MiB", 512 * 2**20), ("1.5gb", 1_500_000_000),
     ("300kB", 300_000), ("4096", 4096), (1024, 1024)],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("30s", 30.0), ("10m", 600.0), ("2h", 7200.0), ("50ms", 0.05), ("1.5", 1.5)]
)
def test_parse_duration(text: str, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["lots", "2XB", "", "-1GB", "GB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="expected a size"):
        parse_size(text)


def test_format_bytes() -> None:
    assert format_bytes(1_536_000_000) == "1.5 GB"
    assert format_bytes(250_000_000) == "250.0 MB"
    assert format_bytes(None) == "-"


def test_defaults_and_overrides() -> None:
    config = load_config(None, ["epochs=3", "memory_limit=2GB", "checkpoint_every=10m", "microbatch=6",
                                "lr=1e-3", "device=CPU"])
    assert config.epochs == 3
    assert config.memory_limit == 2_000_000_000
    assert config.checkpoint_every == 600.0
    assert config.microbatch == 6
    assert config.lr == pytest.approx(1e-3)
    assert config.device == "cpu"
    assert config.run_dir == Path("runs") / "exp"
    assert load_config().microbatch == "auto"


@pytest.mark.parametrize(
    ("value", "expected"), [("auto", "auto"), ("off", "off"), ("0.8", 0.8), ("1500MB", 1_500_000_000)]
)
def test_memory_limit_forms(value: str, expected: object) -> None:
    assert load_config(None, [f"memory_limit={value}"]).memory_limit == expected


def test_yaml_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 7\nbatch: 16\nmemory_limit: off\nname: first\n")
    config = load_config(path, ["batch=32"])
    assert (config.epochs, config.batch, config.memory_limit, config.name) == (7, 32, "off", "first")


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    config = load_config(None, ["epochs=2", "memory_cap=1GB", "sample_every=100ms"])
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    assert load_config(path) == config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("epochs=abc", "bad value for 'epochs': expected a positive integer, got 'abc'"),
        ("epochs=0", "bad value for 'epochs': expected a positive integer, got 0"),
        ("batch=-4", "bad value for 'batch': expected a positive integer (the effective batch the optimizer "
                     "sees), got -4"),
        ("microbatch=0", "bad value for 'microbatch': expected auto or a positive integer, got 0"),
        ("microbatch=big", "bad value for 'microbatch': expected auto or a positive integer, got 'big'"),
        ("device=tpu", "bad value for 'device': expected one of auto, cpu, cuda, cuda:N, mps, got 'tpu'"),
        ("memory_limit=lots", "bad value for 'memory_limit': expected auto, off, a size like 2GB or 1500MB, "
                              "or a fraction like 0.8, got 'lots'"),
        ("memory_limit=1.5", "bad value for 'memory_limit': expected auto, off, a size like 2GB or 1500MB, "
                             "or a fraction like 0.8, got 1.5"),
        ("checkpoint_every=soon", "bad value for 'checkpoint_every': expected auto or a duration like 30s or "
                                  "10m, got 'soon'"),
        ("optimizer=adam", "bad value for 'optimizer': expected one of sgd, adamw, got 'adam'"),
        ("task=segment", "bad value for 'task': expected one of auto, classify, multitask, detect, "
                         "got 'segment'"),
        ("name=a/b", "bad value for 'name': expected a run name without slashes, got 'a/b'"),
        ("imgsz=4", "bad value for 'imgsz': expected an integer image size of at least 8 pixels, got 4"),
        ("epoch=3", "unknown config key 'epoch' (did you mean 'epochs'?); see the keys in the README"),
        ("epochs", "expected key=value, got 'epochs' (for example: epochs=3)"),
    ],
)
def test_rejections_name_key_expectation_and_value(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value) == message


def test_missing_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file '.*nope.yaml' not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line \d+; fix the file"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping of key: value, got list"):
        load_config(listing)


def test_override_values_are_yaml_scalars() -> None:
    assert parse_overrides(["a=3", "b=true", "c=null", "d=2GB", "e="]) == {
        "a": 3, "b": True, "c": None, "d": "2GB", "e": ""}


@pytest.mark.parametrize(("overrides", "message"), [
    (["nproc=2", "device=mps"], "nproc=2 with device=mps: a Mac has one GPU"),
    (["nproc=4", "device=cuda:1"], "nproc=4 with device=cuda:1: every rank would train on that one GPU"),
])
def test_ranks_that_would_share_one_device_are_refused_when_the_config_is_read(
        overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
    assert load_config(None, ["nproc=2", "device=cuda"]).nproc == 2


def test_nproc_on_a_mac_with_device_auto_is_refused_before_any_run_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from device_doubles import MPSChip
    from oomguard.cli.train import check_run_config

    MPSChip().install(monkeypatch)
    with pytest.raises(ConfigError, match="nproc=2 on a Mac: device=auto is its one MPS GPU"):
        check_run_config(load_config(None, ["nproc=2", f"project={tmp_path}"]))
    assert not any(tmp_path.iterdir())
