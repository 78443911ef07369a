"""Parsing and formatting of sizes (``2GB``, ``1500MB``) and durations (``30s``, ``10m``)."""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_DURATION_UNITS = {
    "": 1.0, "ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0,
}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int | float) -> int:
    """Return bytes for ``'2GB'``, ``'1500MB'``, ``'512MiB'`` or a plain number of bytes.

    Decimal units (kB, MB, GB) are powers of 1000 and binary units (KiB, MiB, GiB)
    powers of 1024, as on every disk and in every OS memory dialog.
    """
    if isinstance(text, bool):
        raise ValueError(f"expected a size like 2GB or 1500MB, got {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"expected a positive size, got {text!r}")
        return int(text)
    match = _NUMBER_UNIT.match(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"expected a size like 2GB, 1500MB or 512MiB, got {text!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_memory_limit(value: str | int | float | bool) -> str | float | int:
    """``auto``/``off`` stay words, a fraction in (0, 1] becomes a float, a size like ``2GB`` int bytes.

    A bare number above 1 is refused: without a unit it is too easy to mean
    gigabytes and get bytes. (YAML 1.1 reads a bare ``off`` as false.)
    """
    if value is False:
        return "off"
    if value is True:
        raise ValueError("expected auto, off, a size like 2GB or a fraction like 0.8, got true")
    if isinstance(value, str) and value.strip().lower() in ("auto", "off"):
        return value.strip().lower()
    try:
        number = float(value)
    except (TypeError, ValueError):
        size = parse_size(value)
        if size <= 0:
            raise ValueError("must be positive") from None
        return size
    if 0 < number <= 1:
        return number
    raise ValueError("a bare number must be a fraction in (0, 1]; give sizes a unit")


def parse_duration(text: str | int | float) -> float:
    """Return seconds for ``'30s'``, ``'10m'``, ``'2h'`` or a plain number of seconds."""
    if isinstance(text, bool):
        raise ValueError(f"expected a duration like 30s or 10m, got {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"expected a positive duration, got {text!r}")
        return float(text)
    match = _NUMBER_UNIT.match(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _DURATION_UNITS:
        raise ValueError(f"expected a duration like 30s, 10m or 2h, got {text!r}")
    return float(match.group(1)) * _DURATION_UNITS[unit]


def format_bytes(n: float | None) -> str:
    """``1536000000 -> '1.5 GB'``; decimal units, like :func:`parse_size` reads them."""
    if n is None:
        return "-"
    for unit, scale in (("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def format_duration(seconds: float) -> str:
    """``3725 -> '1h02m'``, ``75 -> '1m15s'``, ``4.2 -> '4.2s'``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
