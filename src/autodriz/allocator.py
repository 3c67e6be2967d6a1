"""Make the big temporary arrays of detection, verification and AstroDrizzle cheap to allocate.

Every stage of a run allocates and frees arrays of one or more 2048×4096 chips (32–64 MB) many
times. With the defaults of numpy and glibc on Linux each of them costs the kernel work that
shows as *system* CPU time, not as the program's own:

* numpy asks for transparent huge pages on every array of 4 MB or more
  (``madvise(MADV_HUGEPAGE)``); with the kernel's ``defrag=madvise`` setting, the usual one,
  each first touch of such memory may compact memory synchronously to find a free 2 MB page;
* glibc hands every block above its mmap threshold (at most 32 MB by its own adaptation) to
  ``mmap`` and returns it with ``munmap`` when freed, so the next array of the same size faults
  in and zeroes its pages anew.

Measured on the 2-core machine this project is built on (``docs/benchmarks.md``, issue 19,
sixth round): detection of four full-size ACS/WFC chips 13.2–15.5 s with the defaults, 9.8–11.6 s
without huge pages, 7.7 s with both changes below; their system time 2.1–2.9 s → 0.03 s.

:func:`tune_process` makes those two changes in the calling process: no huge-page advice from
numpy (what ``NUMPY_MADVISE_HUGEPAGE=0`` does), and glibc's ``mallopt`` with an mmap threshold of
1 GiB and a trim threshold of 256 MiB, so that freed arrays are reused instead of unmapped. The
CLI calls it for its process, and so do the processes autodriz starts (the fork server and its
children, fresh child interpreters, the detection workers). A library caller's own process is
left alone. A setting the user made in the environment (``NUMPY_MADVISE_HUGEPAGE``, a
``glibc.malloc`` entry of ``GLIBC_TUNABLES``) wins; elsewhere than on glibc the allocator part
does nothing. :func:`release_free_memory` gives freed memory back to the system
(``malloc_trim``) before a phase where other processes need it, and :func:`drop_cached_pages`
does the same with the page cache of files a run has finished reading.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

#: glibc's ``mallopt`` parameters (``<malloc.h>``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Blocks below this come from the heap and are reused when freed (a full 2048×4096 float64
#: chip is 64 MiB); ``mallopt`` takes an ``int``.
MMAP_THRESHOLD = 1 << 30
#: Free memory at the top of the heap beyond this is returned to the system at once.
TRIM_THRESHOLD = 256 << 20


@dataclass(frozen=True)
class Tuning:
    """What :func:`tune_process` changed, and what it left as the user set it.

    Attributes
    ----------
    hugepages_off : bool
        numpy no longer advises huge pages for new arrays.
    malloc : bool
        glibc's mmap and trim thresholds were set.
    notes : tuple of str
        Why a part was left alone.
    """

    hugepages_off: bool
    malloc: bool
    notes: tuple[str, ...] = ()


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # musl and others have no mallopt/malloc_trim: nothing to tune there.
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    return libc


def _numpy_hugepage_switch():  # type: ignore[no-untyped-def]
    # numpy's own switch behind NUMPY_MADVISE_HUGEPAGE (private name; moved in numpy 2).
    import numpy as np

    for module in ("_core", "core"):
        multiarray = getattr(getattr(np, module, None), "multiarray", None)
        switch = getattr(multiarray, "_set_madvise_hugepage", None)
        if switch is not None:
            return switch
    return None


def tune_process() -> Tuning:
    """Turn off numpy's huge-page advice and raise glibc's mmap/trim thresholds here.

    Safe to call more than once. Settings the user made in the environment are kept.

    Returns
    -------
    Tuning
        What was changed.
    """
    notes: list[str] = []
    hugepages_off = False
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        notes.append(f"NUMPY_MADVISE_HUGEPAGE={os.environ['NUMPY_MADVISE_HUGEPAGE']} kept")
    else:
        switch = _numpy_hugepage_switch()
        if switch is None:
            notes.append("this numpy has no huge-page switch")
        else:
            switch(False)
            hugepages_off = True
    malloc = False
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        notes.append("GLIBC_TUNABLES malloc settings kept")
    else:
        libc = _libc()
        if libc is None:
            notes.append("no glibc allocator to tune")
        else:
            malloc = bool(libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(MMAP_THRESHOLD))) and bool(
                libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(TRIM_THRESHOLD))
            )
            if not malloc:
                notes.append("glibc refused the mmap/trim thresholds")
    return Tuning(hugepages_off, malloc, tuple(notes))


def release_free_memory() -> bool:
    """Give the memory this process has freed back to the system (glibc's ``malloc_trim``).

    With :func:`tune_process`'s thresholds freed arrays stay with the process for reuse; a
    phase that leaves this process idle while others work (the final drizzles) should not keep
    them. Returns whether anything was released; False elsewhere than on glibc.
    """
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(ctypes.c_size_t(0)))


def drop_cached_pages(paths: Iterable[Path]) -> int:
    """Ask the kernel to drop the page cache of files this process will not read again.

    ``posix_fadvise(POSIX_FADV_DONTNEED)`` on each whole file: its clean cached pages are freed
    at once (dirty ones are only queued for writeback), so the processes that start next get
    memory that was in use a moment ago instead of memory left idle. The data stays on disk; a
    later reader reads it from there. Measured on the 2-core VM this project is built on
    (``docs/benchmarks.md``, issue 19, fifteenth round): dropping the cache of the originals of a
    full-size ACS/WFC visit (8 files, 1.3 GB, already read) right before the final drizzles
    brought each AstroDrizzle child's system time from 23.3–24.4 s to 16.3–17.3 s (two runs
    each, alternating). Memory the kernel had just freed is cheaper to hand out on this VM than
    memory idle for a while (see :func:`release_free_memory` and the sixth and fourteenth
    rounds there).

    Parameters
    ----------
    paths : iterable of Path
        The files; one that cannot be opened is skipped (nothing of it is cached by this run).

    Returns
    -------
    int
        How many files were advised; 0 where ``posix_fadvise`` does not exist (macOS, Windows).
    """
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return 0
    advised = 0
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # gone or unreadable: the advice is only a hint
            continue
        try:
            advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            advised += 1
        except OSError:  # a file system that takes no advice
            pass
        finally:
            os.close(fd)
    return advised
