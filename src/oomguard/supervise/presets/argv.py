"""Reading and changing a command's arguments: ``key=value`` (YOLO style) and ``--flag VALUE`` (the rest)."""

from __future__ import annotations


def key_value(argv: list[str], key: str) -> str | None:
    """The value of ``key=value`` in a YOLO-style argument list (the last one wins)."""
    value = None
    for arg in argv:
        name, sep, rest = arg.partition("=")
        if sep and name == key:
            value = rest
    return value


def set_key_value(argv: list[str], key: str, value: str) -> list[str]:
    """``argv`` without any ``key=...``, then ``key=value`` at the end."""
    return [arg for arg in argv if arg.partition("=")[0] != key or "=" not in arg] + [f"{key}={value}"]


def flag_value(argv: list[str], flag: str) -> str | None:
    """The value of ``--flag VALUE`` or ``--flag=VALUE`` (the last one wins)."""
    value = None
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1:]
    return value


def set_flag(argv: list[str], flag: str, value: str) -> list[str]:
    """``argv`` without any ``--flag``, then ``--flag value`` at the end."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == flag:
            skip = True
            continue
        if arg.startswith(flag + "="):
            continue
        out.append(arg)
    return [*out, flag, value]


def without_flag(argv: list[str], flag: str) -> list[str]:
    """``argv`` without any ``--flag VALUE`` or ``--flag=VALUE``."""
    if flag_value(argv, flag) is None and flag not in argv:
        return argv
    return set_flag(argv, flag, "")[:-2]


def smaller_batch_same_update(argv: list[str], batch_flag: str, steps_flag: str) -> list[str]:
    """A smaller ``batch_flag`` (its largest proper divisor) and ``steps_flag`` grown to the same update.

    ``argv`` unchanged when ``batch_flag`` is absent, not a number, or 1 already.
    """
    batch_text = flag_value(argv, batch_flag)
    if batch_text is None or not batch_text.isdigit() or int(batch_text) < 2:
        return argv
    batch = int(batch_text)
    smaller = next(d for d in range(batch // 2, 0, -1) if batch % d == 0)
    steps_text = flag_value(argv, steps_flag)
    steps = int(steps_text) if steps_text is not None and steps_text.isdigit() else 1
    argv = set_flag(argv, batch_flag, str(smaller))
    return set_flag(argv, steps_flag, str(steps * batch // smaller))
