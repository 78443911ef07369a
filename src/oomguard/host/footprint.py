"""macOS: a process's physical footprint, the figure its memory pressure and Activity Monitor count.

DataLoader workers are spawned there (not forked), so each holds its own
copies; the footprint counts a process's private and compressed pages, not
the shared system libraries, so summing it over a tree counts each page once.
It is one ``proc_pid_rusage`` call, cheap enough for every sample.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache

_RUSAGE_INFO_V2 = 2


class _RusageInfoV2(ctypes.Structure):
    """``struct rusage_info_v2`` of ``<sys/resource.h>``."""

    _fields_ = [
        ("ri_uuid", ctypes.c_uint8 * 16),
        ("ri_user_time", ctypes.c_uint64),
        ("ri_system_time", ctypes.c_uint64),
        ("ri_pkg_idle_wkups", ctypes.c_uint64),
        ("ri_interrupt_wkups", ctypes.c_uint64),
        ("ri_pageins", ctypes.c_uint64),
        ("ri_wired_size", ctypes.c_uint64),
        ("ri_resident_size", ctypes.c_uint64),
        ("ri_phys_footprint", ctypes.c_uint64),
        ("ri_proc_start_abstime", ctypes.c_uint64),
        ("ri_proc_exit_abstime", ctypes.c_uint64),
        ("ri_child_user_time", ctypes.c_uint64),
        ("ri_child_system_time", ctypes.c_uint64),
        ("ri_child_pkg_idle_wkups", ctypes.c_uint64),
        ("ri_child_interrupt_wkups", ctypes.c_uint64),
        ("ri_child_pageins", ctypes.c_uint64),
        ("ri_child_elapsed_abstime", ctypes.c_uint64),
        ("ri_diskio_bytesread", ctypes.c_uint64),
        ("ri_diskio_byteswritten", ctypes.c_uint64),
    ]


@cache
def _libproc() -> ctypes.CDLL | None:
    if sys.platform != "darwin":
        return None
    name = ctypes.util.find_library("proc") or ctypes.util.find_library("System")
    try:
        library = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if library is None or not hasattr(library, "proc_pid_rusage"):
        return None
    library.proc_pid_rusage.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    library.proc_pid_rusage.restype = ctypes.c_int
    return library


def footprint(pid: int) -> int | None:
    """The physical footprint of ``pid`` in bytes; None where unknown (not macOS, or not allowed)."""
    library = _libproc()
    if library is None:
        return None
    info = _RusageInfoV2()
    if library.proc_pid_rusage(pid, _RUSAGE_INFO_V2, ctypes.byref(info)) != 0:
        return None
    return int(info.ri_phys_footprint)
