"""The allocator tuning of autodriz's own processes (autodriz.allocator)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from autodriz.childproc import ChildError, run_child

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and numpy's huge-page advice are Linux's")

# Allocates and frees a 64 MiB array ten times; prints the tuning and the minor page faults of
# the nine allocations after the first (which must fault its pages in once).
_PROBE = r"""
import json, resource, sys
import numpy as np
from autodriz.allocator import tune_process, release_free_memory
t = tune_process() if sys.argv[1] == "tune" else None
a = np.ones(8 << 20); del a
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    a = np.ones(8 << 20); del a
f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"tuning": None if t is None else [t.hugepages_off, t.malloc, list(t.notes)],
                  "faults": f1 - f0, "released": release_free_memory()}))
"""


def _probe(mode: str, **env: str) -> dict:
    full = {k: v for k, v in os.environ.items() if k not in ("NUMPY_MADVISE_HUGEPAGE", "GLIBC_TUNABLES")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], env=full, capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_tuned_process_reuses_freed_arrays_instead_of_faulting_them_in_again() -> None:
    tuned = _probe("tune")
    assert tuned["tuning"] == [True, True, []]
    # 9 × 64 MiB in 4 KiB pages would be 147 456 faults; reused heap memory needs none.
    assert tuned["faults"] < 2000, tuned
    plain = _probe("plain")
    # glibc's own mmap threshold never exceeds 32 MiB: each 64 MiB array is mapped and faulted anew.
    assert plain["faults"] > 10 * max(tuned["faults"], 1), (plain, tuned)


def test_settings_the_user_made_in_the_environment_are_kept() -> None:
    kept = _probe("tune", NUMPY_MADVISE_HUGEPAGE="1", GLIBC_TUNABLES="glibc.malloc.mmap_threshold=131072")
    hugepages_off, malloc, notes = kept["tuning"]
    assert not hugepages_off and not malloc
    assert notes == ["NUMPY_MADVISE_HUGEPAGE=1 kept", "GLIBC_TUNABLES malloc settings kept"]


@pytest.mark.parametrize("how", ["warm", "fresh", "here"])
def test_children_run_with_the_tuned_allocator(tmp_path: Path, how: str) -> None:
    # Forked from the warm server (tuned when it started), from this process, or a fresh
    # interpreter: the child's log says what it runs with, before its task (here an unknown
    # one) fails.
    with pytest.raises(ChildError) as failure:
        run_child({"task": "no_such_task"}, cwd=tmp_path, timeout=120, how=how)
    log = failure.value.log_path.read_text()
    assert "allocator: numpy huge pages off, glibc thresholds raised" in log.splitlines()[0]
    # The warm server froze what its imports made (the collector skips it in every child); a
    # fresh interpreter has nothing frozen.
    frozen = int(re.search(r"; (\d+) objects frozen$", log.splitlines()[0]).group(1))
    if how != "here":  # a fork of this process has what this process froze
        assert frozen > 100_000 if how == "warm" else frozen == 0


def _resident_pages(path: Path) -> int:
    """How many of ``path``'s pages are in the page cache (mincore on a mapping that touches none)."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte))
    size = path.stat().st_size
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY) as mapped:
        vec = (ctypes.c_ubyte * pages)()
        anchor = ctypes.c_char.from_buffer(mapped)
        try:
            assert libc.mincore(ctypes.addressof(anchor), size, vec) == 0, os.strerror(ctypes.get_errno())
        finally:
            del anchor  # else the mapping cannot close
    return sum(v & 1 for v in vec)


def test_dropped_files_leave_the_page_cache_and_keep_their_bytes(tmp_path: Path) -> None:
    from autodriz.allocator import drop_cached_pages

    data = os.urandom(8 << 20)
    paths = [tmp_path / f"f{i}.fits" for i in range(2)]
    for p in paths:
        p.write_bytes(data)
        with open(p, "rb") as fh:
            os.fsync(fh.fileno())  # clean pages: the advice frees only those
            assert fh.read() == data  # and cached
    kept = tmp_path / "kept.fits"
    kept.write_bytes(data)
    with open(kept, "rb") as fh:
        os.fsync(fh.fileno())
    before = [_resident_pages(p) for p in [*paths, kept]]
    assert min(before) > 0, before

    assert drop_cached_pages([*paths, tmp_path / "missing.fits"]) == 2

    assert [_resident_pages(p) for p in paths] == [0, 0]
    assert _resident_pages(kept) == before[-1]  # only the files named
    assert all(p.read_bytes() == data for p in paths)
