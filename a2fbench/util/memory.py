"""Give freed heap memory back to the operating system."""

from __future__ import annotations

import ctypes
import gc


def release() -> None:
    """Free unreachable cycles (finished generator pipelines) and hand freed heap memory back to the OS
    (glibc keeps mid-sized freed blocks otherwise; ``malloc_trim`` is glibc's, absent elsewhere)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
