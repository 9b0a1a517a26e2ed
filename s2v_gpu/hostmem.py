"""Host memory reuse: keep the memory of freed tensors in the process (glibc ``mallopt``).

A pair allocates and frees a few gigabytes of large host buffers (the int16 reads, the shifted
Sentinel-2 bands, the patches). glibc serves each large buffer with a fresh ``mmap`` and unmaps it on
``free``, so every stage pays the kernel again to fault in and zero the same memory page by page:
on 2 CPU cores that was 30-50 % of a full site's time, and most of its run-to-run noise.
:func:`retain_freed_memory` makes glibc serve large buffers from its heap and never trim it, so freed
memory is reused by the next stage and the next pair. The process keeps its high-water mark (about
3 GB for a full site) until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


def retain_freed_memory() -> bool:
    """Ask glibc to serve every allocation from its heap and to keep what is freed (Linux only).

    Returns:
        True when applied; False elsewhere (other C libraries, other systems): nothing changes then.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1
    if not ok:
        log.debug("mallopt refused: freed host memory is returned to the system as usual")
    return ok


__all__ = ["retain_freed_memory"]
