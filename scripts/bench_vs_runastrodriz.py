#!/usr/bin/env python
"""Benchmark autodriz against STScI's ``drizzlepac.runastrodriz`` on the same association.

Each tool gets its own copy of the same inputs and runs in its own subprocess on this machine;
the script prints, per tool: exit status, wall time (and the ratio autodriz/runastrodriz), the
number of AstroDrizzle runs, peak RSS, the WCSNAME left in each FLT's SCI,1 and — for the
synthetic visit, whose true WCS is known — its error against the truth
(:func:`autodriz.truth.visit_error`). It ends with a Markdown table (also printed to stdout) and
autodriz's total wall time against its final AstroDrizzle runs alone, re-run with the same
parallelism autodriz used (and one after the other), plus peak memory as the summed PSS of each
process tree (issue 19).

runastrodriz wants the network (the astrometry database and MAST's catalog service). Here it runs
offline through a small wrapper (written next to the data, run as ``python wrapper.py``) that
patches, *in that subprocess only*:

* ``ASTROMETRY_STEP_CONTROL=off`` in its environment (stwcs' AstrometryDB then never connects)
  and ``stwcs.updatewcs.astrometry_utils.AstrometryDB.isAvailable`` → ``False`` (belt and braces:
  offline, the availability check otherwise retries for ~120 s);
* ``drizzlepac.haputils.astrometric_utils.get_catalog`` / ``get_catalog_from_footprint`` →
  a cone search in the local reference catalog autodriz also gets (``--catalog``), proper
  motions propagated to the requested epoch as the MAST service does; Gaia catalog names are
  served from that file, any other name (GSC242, 2MASS, …) gets an empty table;
* ``socket.socket.connect`` → raises at once (any other network attempt fails fast; counted);
* ``drizzlepac.astrodrizzle.AstroDrizzle`` → the same function, counted and timed.

The a priori step of runastrodriz stays on (as in the pipeline); with the database off it finds no
new solutions but still makes its verification products, as it would offline.

Usage::

    python scripts/bench_vs_runastrodriz.py                   # both datasets, reduced synthetic size
    python scripts/bench_vs_runastrodriz.py --full            # 4 × 2048×4096-per-chip exposures
    python scripts/bench_vs_runastrodriz.py --dataset sim --workdir /tmp/bench --keep
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHARED = Path(os.environ.get("AUTODRIZ_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
GAIA_CAT = SHARED / "catalogs" / "gaia.cat"
GOODSS_DIR = SHARED / "real" / "wfc3ir_goodss"
GOODSS_ASN = "IB6O23020"  # F140W direct images

WRAPPER_MARK = "RUNASTRODRIZ-BENCH-RESULT "

# ---------------------------------------------------------------------------------------------
# The wrapper that runs runastrodriz offline (written to a file, run in its own process)
# ---------------------------------------------------------------------------------------------

WRAPPER = r'''
"""runastrodriz, offline, with counted AstroDrizzle runs (written by bench_vs_runastrodriz.py)."""
import json, math, os, socket, sys, time, traceback

asn, refcat, num_cores, result_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
RESULT = {"patches": [], "astrodrizzle_calls": [], "catalog_queries": [], "network_attempts": [],
          "status": "not started"}

def dump():
    with open(result_path, "w") as fh:
        json.dump(RESULT, fh, indent=1, default=str)

# 1. No network at all: fail fast and record. Local (AF_UNIX) sockets stay: AstroDrizzle with
#    num_cores > 1 talks to its multiprocessing workers through them.
_connect = socket.socket.connect
def _no_connect(self, address):
    if self.family == getattr(socket, "AF_UNIX", None):
        return _connect(self, address)
    RESULT["network_attempts"].append(str(address))
    raise OSError("network disabled by bench_vs_runastrodriz")
socket.socket.connect = _no_connect
RESULT["patches"].append("socket.socket.connect (internet families) -> raises OSError at once (attempts recorded)")

# 2. Astrometry database off.
RESULT["patches"].append("env ASTROMETRY_STEP_CONTROL=" + os.environ.get("ASTROMETRY_STEP_CONTROL", "<unset>"))
from stwcs.updatewcs import astrometry_utils as _au
_au.AstrometryDB.isAvailable = lambda self, *a, **k: False
RESULT["patches"].append("stwcs.updatewcs.astrometry_utils.AstrometryDB.isAvailable -> False")

# 3. Catalog queries served from the local reference catalog.
import numpy as np
from astropy.table import Table
from drizzlepac.haputils import astrometric_utils as _amu

_REF = None
def _load_ref():
    global _REF
    if _REF is None:
        if refcat in ("", "-") or not os.path.exists(refcat):
            _REF = Table()
            return _REF
        t = Table.read(refcat, format="ascii.ecsv") if refcat.endswith(".ecsv") else Table.read(refcat, format="ascii.commented_header")
        cols = {c.lower(): c for c in t.colnames}
        def col(*names, default=None):
            for n in names:
                if n in cols:
                    return np.asarray(t[cols[n]], dtype=float)
            return default
        n = len(t)
        out = Table()
        out["ra"] = col("ra")
        out["dec"] = col("dec")
        out["ra_error"] = col("ra_error", default=np.full(n, 0.5))
        out["dec_error"] = col("dec_error", default=np.full(n, 0.5))
        out["pmra"] = col("pmra", default=np.zeros(n))
        out["pmdec"] = col("pmdec", default=np.zeros(n))
        out["pmra_error"] = col("pmra_error", default=np.full(n, 0.1))
        out["pmdec_error"] = col("pmdec_error", default=np.full(n, 0.1))
        out["ref_epoch"] = col("ref_epoch", "epoch", default=np.full(n, 2016.0))
        out["mag"] = col("phot_g_mean_mag", "mag", "g", default=np.full(n, 20.0))
        ids = col("source_id", "objid")
        out["objID"] = np.arange(n) if ids is None else ids.astype(np.int64)
        _REF = out
    return _REF

def _local_get_catalog(ra, dec, sr=0.1, epoch=None, catalog="GSC241"):
    ref = _load_ref()
    entry = {"catalog": catalog, "ra": ra, "dec": dec, "sr": sr, "epoch": epoch}
    if not str(catalog).upper().startswith("GAIA") or len(ref) == 0:
        entry["served"] = 0
        RESULT["catalog_queries"].append(entry)
        return Table()
    r = ref.copy()
    if epoch is not None:
        dt = float(epoch) - r["ref_epoch"]
        r["dec"] = r["dec"] + r["pmdec"] * dt / 3.6e6
        r["ra"] = r["ra"] + r["pmra"] * dt / 3.6e6 / np.cos(np.radians(r["dec"]))
        r["epoch"] = np.full(len(r), float(epoch))
    else:
        r["epoch"] = r["ref_epoch"]
    d2r = np.radians
    cossep = (np.sin(d2r(dec)) * np.sin(d2r(r["dec"])) +
              np.cos(d2r(dec)) * np.cos(d2r(r["dec"])) * np.cos(d2r(r["ra"] - ra)))
    keep = np.degrees(np.arccos(np.clip(cossep, -1, 1))) <= sr
    r = r[keep]
    r.remove_column("ref_epoch")
    entry["served"] = len(r)
    RESULT["catalog_queries"].append(entry)
    return r

def _local_from_footprint(footprint, epoch=None, catalog="GSC241"):
    fp = np.asarray(footprint, dtype=float)
    ra, dec = float(fp[:, 0].mean()), float(fp[:, 1].mean())
    sr = float(np.max(np.hypot((fp[:, 0] - ra) * math.cos(math.radians(dec)), fp[:, 1] - dec)))
    return _local_get_catalog(ra, dec, sr=sr, epoch=epoch, catalog=catalog)

_amu.get_catalog = _local_get_catalog
_amu.get_catalog_from_footprint = _local_from_footprint
RESULT["patches"].append("drizzlepac.haputils.astrometric_utils.get_catalog / get_catalog_from_footprint -> "
                         "cone search in %s (GAIA* names; other catalogs -> empty table)" % (refcat or "<none>"))

# 4. Count AstroDrizzle.
import drizzlepac
import drizzlepac.astrodrizzle as _adm
_orig = _adm.AstroDrizzle
def _counted(*args, **kwargs):
    t0 = time.perf_counter()
    entry = {"input": str(kwargs.get("input", args[0] if args else None))[:300],
             "output": str(kwargs.get("output", "")), "cwd": os.getcwd()}
    try:
        return _orig(*args, **kwargs)
    finally:
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        RESULT["astrodrizzle_calls"].append(entry)
        dump()
_adm.AstroDrizzle = _counted
if hasattr(drizzlepac, "AstroDrizzle"):
    drizzlepac.AstroDrizzle = _counted
RESULT["patches"].append("drizzlepac.astrodrizzle.AstroDrizzle -> counting/timing wrapper around the original")

# 5. Single-drizzle frame = final frame. runastrodriz's focus check (build_focus_dict) indexes the
#    final product with a mask made from the *_single_sci images, so it needs both on one grid;
#    an MDRIZTAB whose driz_sep_rot/scale are INDEF (native orientation) and final_rot = 0 (north
#    up) gives two different grids and an IndexError there. Copy the final grid to driz_sep_*.
from drizzlepac import mdzhandler as _mdz
_getpars = _mdz.getMdriztabParameters
def _same_grid(*args, **kwargs):
    try:
        pars = _getpars(*args, **kwargs)
    except OSError as exc:
        # No MDRIZTAB offline (the real WFC3/IR data): autodriz's defaults, which mirror the
        # instrument's MDRIZTAB rows, so both tools drizzle with the same parameters.
        from astropy.io import fits as _fits
        from autodriz.config import astrodrizzle_defaults
        _h = _fits.getheader(args[0][0], 0)
        pars = astrodrizzle_defaults("%s/%s" % (_h["INSTRUME"], _h["DETECTOR"]), len(args[0]))
        for _sep, _fin in (("driz_sep_rot", "final_rot"), ("driz_sep_scale", "final_scale")):
            if _fin in pars:
                pars.setdefault(_sep, "INDEF")  # the MDRIZTAB's native frame; made the final one below
        RESULT.setdefault("mdriztab_missing", []).append("%s -> autodriz config/astrodrizzle.toml defaults" % exc)
    changed = {}
    for sep, fin in (("driz_sep_rot", "final_rot"), ("driz_sep_scale", "final_scale"),
                     ("driz_sep_outnx", "final_outnx"), ("driz_sep_outny", "final_outny")):
        if sep in pars and fin in pars and pars[sep] != pars[fin]:
            changed[sep] = (pars[sep], pars[fin])
            pars[sep] = pars[fin]
    RESULT.setdefault("mdriztab_changes", []).append({k: [str(a), str(b)] for k, (a, b) in changed.items()})
    return pars
_mdz.getMdriztabParameters = _same_grid
RESULT["patches"].append("drizzlepac.mdzhandler.getMdriztabParameters -> driz_sep_rot/scale/outnx/outny := "
                         "final_rot/scale/outnx/outny (single_sci on the final grid, else build_focus_dict "
                         "raises IndexError on this MDRIZTAB); a missing MDRIZTAB -> autodriz's defaults")

from drizzlepac import runastrodriz
RESULT["status"] = "running"
dump()
t0 = time.perf_counter()
try:
    runastrodriz.process(asn, force=True, num_cores=num_cores)
    RESULT["status"] = "ok"
except SystemExit as exc:
    RESULT["status"] = "ok" if exc.code in (None, 0) else "SystemExit(%r)" % (exc.code,)
except BaseException as exc:
    RESULT["status"] = "%s: %s" % (type(exc).__name__, exc)
    RESULT["traceback"] = traceback.format_exc()[-3000:]
RESULT["seconds"] = round(time.perf_counter() - t0, 2)
dump()
print("''' + WRAPPER_MARK + r'''" + json.dumps({"status": RESULT["status"], "astrodrizzle_runs": len(RESULT["astrodrizzle_calls"])}), flush=True)
sys.exit(0 if RESULT["status"] == "ok" else 1)
'''

# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------


@dataclass
class Measured:
    returncode: int
    seconds: float
    maxrss_mb: float  # largest single process of the tree (wait4 rusage: child + reaped descendants)
    tree_rss_mb: float | None  # peak of the summed RSS of the process tree, sampled every 0.25 s
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    timed_out: bool = False
    # Peak of the summed PSS (proportional set size, /proc/<pid>/smaps_rollup) of the tree:
    # pages shared by forked AstroDrizzle workers are counted once in all, not once per process
    # as the RSS sum counts them. The comparable "how much memory does the run need" figure.
    tree_pss_mb: float | None = None
    # CPU seconds (user + system) of the tree by role (TreeCpu), sampled with the memory.
    cpu_by_role: dict[str, float] | None = None
    # Of those, the kernel's (system time): memory churn on a VM with free page reporting.
    cpu_system: dict[str, float] | None = None
    # CPU seconds of the benchmark's sampling thread (outside the tree, competing with it).
    sampler_cpu: float | None = None


#: Roles of the processes of a run, in the order they are printed.
CPU_ROLES = ("main", "detection workers", "fresh children", "warm server", "forked children", "other")


def process_role(cmdline: list[str], is_root: bool, parent_is_root: bool, root_cmdline: list[str] | None = None) -> str:
    """Which part of a run a process is, from its command line.

    ``detection workers``: multiprocessing spawn children, or children forked from the root
    process itself (its command line), which are autodriz's source detection workers;
    ``fresh children``: ``python -m autodriz._child`` (updatewcs, a fresh interpreter);
    ``warm server``: the forkserver started by the root process; ``forked children``: the
    processes it forks (the final AstroDrizzle runs and the other jobs autodriz forks from it).
    """
    if is_root:
        return "main"
    text = " ".join(cmdline)
    if "spawn_main" in text or (parent_is_root and root_cmdline is not None and cmdline == root_cmdline):
        return "detection workers"
    if "autodriz._child" in text:
        return "fresh children"
    if "multiprocessing.forkserver" in text:
        return "warm server" if parent_is_root else "forked children"
    return "other"


class TreeCpu:
    """CPU seconds (user + system) a process tree used, by role, from samples.

    Each process counts what it had used when last seen minus what it had used when first
    seen, if it already existed when counting began (a warm server kept from an earlier run):
    a process that ends between two samples loses at most one interval, so the figures are
    lower bounds to within (processes × interval). When the root is the sampling process itself
    (the yardstick's tree), the sampling thread's own CPU (:attr:`not_counted`) is taken off its
    figures. They say where the work is, which wall time
    on a shared machine does not; they are steadier than wall time but not steady: identical
    AstroDrizzle runs minutes apart differed by up to 20 % in CPU seconds on the 2-core VM this
    was built on (docs/benchmarks.md, tenth round).
    """

    def __init__(self, root_pid: int, existing: list[Any] = ()) -> None:
        self.root = root_pid
        self._role: dict[int, str] = {}
        #: The root's command line (sampled first): processes forked from it carry it too.
        self._root_cmdline: list[str] | None = None
        self._first: dict[int, tuple[float, float]] = {}
        self._last: dict[int, tuple[float, float]] = {}
        #: (user + system, system) seconds the root used that are not the run's: the sampling
        #: thread's own, when the root is the process that samples (the yardstick's tree).
        self.not_counted: tuple[float, float] = (0.0, 0.0)
        for proc in existing:
            used = self._used(proc)
            if used is not None:
                self._first[proc.pid] = used

    @staticmethod
    def _used(proc: Any) -> tuple[float, float] | None:
        """(user + system, system) seconds of ``proc`` so far."""
        import psutil

        try:
            times = proc.cpu_times()
        except psutil.Error:
            return None
        return times.user + times.system, times.system

    def sample(self, procs: list[Any]) -> None:
        """Record the CPU time of every process of ``procs`` (psutil.Process, root first)."""
        import psutil

        for proc in procs:
            used = self._used(proc)
            if used is None:
                continue
            if proc.pid not in self._role:
                try:
                    cmdline, ppid = proc.cmdline(), proc.ppid()
                except psutil.Error:
                    continue
                if proc.pid == self.root:
                    self._root_cmdline = cmdline
                self._role[proc.pid] = process_role(
                    cmdline, proc.pid == self.root, ppid == self.root, self._root_cmdline
                )
            self._last[proc.pid] = used

    def by_role(self, *, system_only: bool = False) -> dict[str, float]:
        """Seconds by role (only roles that used any), and ``total``.

        ``system_only``: the kernel's share alone (system time: page faults, page cache,
        process start-up). On a VM that hands freed memory back to its host (free page
        reporting, as here), touching memory again costs seconds per GiB, so this share says how
        much of a run is memory churn.
        """
        part = 1 if system_only else 0
        out: dict[str, float] = {}
        for pid, last in self._last.items():
            role = self._role[pid]
            used = last[part] - self._first.get(pid, (0.0, 0.0))[part]
            if pid == self.root:
                used -= self.not_counted[part]
            out[role] = out.get(role, 0.0) + max(0.0, used)
        ordered = {r: round(out[r], 1) for r in CPU_ROLES if out.get(r, 0.0) > 0.05}
        ordered["total"] = round(sum(out.values()), 1)
        return ordered


def cpu_ratio(o: Any) -> float | None:
    """autodriz's CPU seconds over those of its final drizzles alone (same parallelism)."""
    alone = (o.extra.get("alone_seconds") or {}).get("same_parallelism_cpu")
    mine = o.m.cpu_by_role
    if not alone or not mine or not alone.get("total"):
        return None
    return mine["total"] / alone["total"]


def format_cpu(by_role: dict[str, float] | None) -> str:
    if not by_role:
        return "not measured (psutil missing)"
    parts = [f"{role} {sec:.1f}" for role, sec in by_role.items() if role != "total"]
    return f"{by_role['total']:.1f} CPU-s = " + ", ".join(parts)


#: Seconds between two samples of a process tree (CPU times, RSS).
SAMPLE_SECONDS = 0.25
#: PSS is read at every PSS_EVERY-th sample only (once a second).
PSS_EVERY = 4


class TreeSampler:
    """Samples a process and its descendants every 0.25 s while in the block: the peaks of their
    summed RSS (every sample) and PSS (every :data:`PSS_EVERY`-th), and their CPU seconds by role
    (:class:`TreeCpu`). Its own CPU (``own_cpu``) is printed beside the figures: on the 2-core VM
    it was ~4 CPU-s per 50 s of a full-size yardstick with PSS at every sample.

    ``baseline``: count CPU only from now for the processes that already exist (a tree of which
    the calling process is the root). Sampling stops when the root is gone. Without psutil it
    measures nothing and ``cpu`` is None.
    """

    def __init__(self, root_pid: int, *, baseline: bool = False) -> None:
        self.peak_rss_mb = 0.0
        self.peak_pss_mb = 0.0
        #: CPU seconds the sampling thread itself used (it competes with what it measures).
        self.own_cpu = 0.0
        self.cpu: TreeCpu | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        try:
            import psutil
        except ImportError:  # pragma: no cover - psutil optional
            return
        self._psutil = psutil
        try:
            self._root = psutil.Process(root_pid)
        except psutil.Error:  # already gone: nothing to sample
            self._root = None
        tree = self._tree()
        self.cpu = TreeCpu(root_pid, existing=tree if baseline and tree else [])

    def _tree(self) -> list[Any] | None:
        if self._root is None:
            return None
        try:
            return [self._root, *self._root.children(recursive=True)]
        except self._psutil.Error:
            return None

    def _sample(self, *, pss: bool = True) -> bool:
        procs = self._tree()
        if procs is None:
            return False
        rss = 0
        pss_sum = 0
        for p in procs:
            try:
                rss += p.memory_info().rss
            except self._psutil.Error:
                pass
            if pss:
                pss_sum += proc_pss_bytes(p.pid)
        self.peak_rss_mb = max(self.peak_rss_mb, rss / 2**20)
        if pss:
            self.peak_pss_mb = max(self.peak_pss_mb, pss_sum / 2**20)
        self.cpu.sample(procs)
        return True

    @staticmethod
    def _thread_cpu() -> tuple[float, float]:
        """(user + system, system) seconds of the calling thread (system 0 where not known)."""
        import resource

        who = getattr(resource, "RUSAGE_THREAD", None)  # Linux only
        if who is None:
            return time.thread_time(), 0.0
        usage = resource.getrusage(who)
        return usage.ru_utime + usage.ru_stime, usage.ru_stime

    def _run(self) -> None:
        start = self._thread_cpu()
        tick = 0
        # PSS every PSS_EVERY-th sample: the kernel walks every mapping of every process of the
        # tree to sum it, the dearest part of a sample (memory peaks last seconds, not 0.25 s).
        while not self._stop.is_set() and self._sample(pss=tick % PSS_EVERY == 0):
            tick += 1
            self._stop.wait(SAMPLE_SECONDS)
        end = self._thread_cpu()
        self.own_cpu = end[0] - start[0]
        if self.cpu.root == os.getpid():
            # The sampling (psutil, /proc/<pid>/smaps_rollup) is this process's work, not the
            # tree's: counted in the yardstick's "main" otherwise.
            self.cpu.not_counted = (self.own_cpu, end[1] - start[1])

    def __enter__(self) -> TreeSampler:
        if self.cpu is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cpu is not None:
            self._stop.set()
            self._thread.join()
            # What the tree used since the last sample, if it is still there (its CPU only: this
            # runs in the caller's thread, whose CPU the yardstick counts).
            self._sample(pss=False)


def proc_pss_bytes(pid: int) -> int:
    """PSS of one process (``/proc/<pid>/smaps_rollup``, Linux ≥ 4.14); 0 if it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def settle(seconds: float) -> None:
    """Flush the benchmark's own writes, then wait: every timed run starts from the same state.

    The flush: each timed run starts on fresh copies of its inputs (GBs at full size), which
    the kernel writes back ~30 s later, into the run, where they slowed whichever tool wrote
    first: autodriz's default stage took 7.0-7.5 s with that writeback going on, 4.0-4.5 s
    after a sync (docs/benchmarks.md, seventeenth round). A dataset a tool is given is on disk.

    The wait: on this project's VM (Firecracker, free page reporting) memory a process frees
    stays cheap to touch for a few seconds, then is handed back to the host and costs a host
    fault when touched again. The yardstick runs right after autodriz exits and would get the
    ~3 GB it freed: two AstroDrizzle runs side by side took 10.1-11.9 s of system time each
    started right after 3 GiB were freed, 12.8-15.8 s started 20 s later (docs/benchmarks.md,
    thirteenth round).
    """
    os.sync()
    if seconds > 0:
        time.sleep(seconds)


def run_measured(cmd: list[str], *, cwd: Path, env: dict[str, str], log: Path, timeout: float,
                 pause: float = 0.0) -> Measured:
    """Run ``cmd`` in a new session after :func:`settle` (``pause``); wall time, peak RSS, load around it."""
    settle(pause)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False

        def kill() -> None:
            nonlocal timed_out
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # our own child's session only
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        with TreeSampler(proc.pid) as sampler:
            _, status, usage = os.wait4(proc.pid, 0)
            timer.cancel()
            seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    measured = sampler.cpu is not None
    return Measured(
        returncode=proc.returncode,
        seconds=seconds,
        maxrss_mb=usage.ru_maxrss / 1024.0,
        tree_rss_mb=sampler.peak_rss_mb if measured else None,
        tree_pss_mb=sampler.peak_pss_mb if (measured and sampler.peak_pss_mb > 0) else None,
        cpu_by_role=sampler.cpu.by_role() if measured else None,
        cpu_system=sampler.cpu.by_role(system_only=True) if measured else None,
        sampler_cpu=round(sampler.own_cpu, 1) if measured else None,
        load_before=load_before,
        load_after=os.getloadavg(),
        timed_out=timed_out,
    )


@dataclass
class Outcome:
    dataset: str
    tool: str
    m: Measured
    status: str
    astrodrizzle_runs: int | None
    wcsnames: list[str]
    err_flt_mas: float | None
    err_flc_mas: float | None
    extra: dict[str, Any] = field(default_factory=dict)


def wcsnames_of(paths: list[Path]) -> list[str]:
    from astropy.io import fits

    names = []
    for p in paths:
        try:
            names.append(str(fits.getval(p, "WCSNAME", ("SCI", 1))))
        except KeyError:
            names.append("(no WCSNAME)")
        except Exception as exc:  # noqa: BLE001
            names.append(f"<{type(exc).__name__}>")
    return names


def truth_error(paths: list[Path], truth_path: Path | None) -> float | None:
    if truth_path is None or not paths:
        return None
    from autodriz.truth import load_truth, visit_error

    try:
        return float(visit_error(paths, load_truth(truth_path)).rms_mas)
    except Exception as exc:  # noqa: BLE001
        print(f"    truth comparison failed: {exc}")
        return None


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    name: str
    directory: Path  # pristine copy
    asn_name: str
    members: list[str]
    has_flc: bool
    ref_env: dict[str, str]  # jref/iref folder names inside the dataset folder (each tool: its own copy)
    autodriz_flags: list[str]
    refcat: Path | None
    truth: Path | None
    description: str
    # grizli's WCS per exposure (real data): each tool's WCS is compared with it at CRPIX (507,507)
    reference_wcs: Path | None = None


def make_sim(base: Path, full: bool, seed: int, smoke: bool = False) -> Dataset:
    from autodriz.cli.simulate import DEMO_DISTORTION_RESIDUAL_MAS, DEMO_RELATIVE_ERROR_MAS, DEMO_RELATIVE_ROTATION_ARCSEC
    from autodriz.simulate import SimulationConfig, simulate_visit

    n, shape = (2, (256, 512)) if smoke else ((4, (2048, 4096)) if full else (3, (1024, 2048)))
    # Realistic settings, as the CLI's simulate defaults: with no per-exposure errors and an exact
    # distortion model the error vs truth is 0 for any tool and the accuracy column means nothing.
    cfg = SimulationConfig(catalog=GAIA_CAT, n_exposures=n, chip_shape=shape,
                           pointing_error_mas=(500, -300), relative_error_mas=DEMO_RELATIVE_ERROR_MAS,
                           relative_rotation_arcsec=DEMO_RELATIVE_ROTATION_ARCSEC,
                           distortion_residual_mas=DEMO_DISTORTION_RESIDUAL_MAS, seed=seed)
    t0 = time.perf_counter()
    visit = simulate_visit(base, cfg)
    print(f"  simulated {cfg.n_exposures} ACS/WFC exposures, chips {cfg.chip_shape[0]}x{cfg.chip_shape[1]}, "
          f"FLT+FLC, pointing error {cfg.pointing_error_mas} mas + {cfg.relative_error_mas:g} mas and "
          f"{cfg.relative_rotation_arcsec:g}\" per exposure, distortion residual {cfg.distortion_residual_mas:g} mas, "
          f"catalog {GAIA_CAT.name}, seed {seed} "
          f"in {time.perf_counter() - t0:.0f} s → {base}")
    return Dataset(
        name=f"sim ACS/WFC {cfg.n_exposures}×{cfg.chip_shape[0]}×{cfg.chip_shape[1]}",
        directory=base,
        asn_name=visit.asn_path.name,
        members=[p.name.split("_")[0] for p in visit.flt_paths],
        has_flc=bool(visit.flc_paths),
        ref_env={"jref": visit.jref_dir.name},
        autodriz_flags=["--jref", "jref", "--catalog", visit.catalog_path.name],
        refcat=visit.catalog_path,
        truth=visit.truth_path,
        description=(f"synthetic ACS/WFC association {visit.asn_path.name}: {cfg.n_exposures} exposures, "
                     f"{cfg.chip_shape[0]}×{cfg.chip_shape[1]} per chip, FLT+FLC, Gaia-rich field "
                     f"({GAIA_CAT}), pointing error {cfg.pointing_error_mas} mas, per exposure {cfg.relative_error_mas:g} mas "
                     f"and {cfg.relative_rotation_arcsec:g}\" roll, distortion residual {cfg.distortion_residual_mas:g} mas, "
                     f"seed {seed}"),
    )


def make_goodss(base: Path) -> Dataset:
    """Copy of the real WFC3/IR F140W GOODS-S association, as tests/realdata.py::prepare_goodss,
    with the rebuilt IDCTAB w3m18525i in ``iref`` and a reference catalog of two of its exposures
    placed at grizli's WCS (tests/realdata.py::reference_pair_catalog), as the alignment tests do."""
    import numpy as np
    from astropy.io import fits

    from autodriz.asn import write_asn_table

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from irdistortion import rebuild_wfc3ir_idctab
    from realdata import reference_pair_catalog

    base.mkdir(parents=True, exist_ok=True)
    members = []
    for src in sorted(GOODSS_DIR.glob("*_flt.fits.gz")):
        with gzip.open(src) as fh, fits.open(fh) as hdul:
            if hdul[0].header["ASN_ID"].strip().upper() != GOODSS_ASN:
                continue
            for hdu in hdul:
                if hdu.name in ("SCI", "ERR") and hdu.data is not None:
                    hdu.data = hdu.data.astype(np.float32)
                elif hdu.name == "DQ" and hdu.data is not None:
                    hdu.data = hdu.data.astype(np.int16)
            hdul.writeto(base / src.name[:-3])
            members.append(src.name.split("_")[0])
    asn = write_asn_table(base / f"{GOODSS_ASN.lower()}_asn.fits", GOODSS_ASN, members,
                          instrument="WFC3", detector="IR", built_by="bench_vs_runastrodriz.py")
    # The IDCTAB is a reconstruction (tests/irdistortion.py); the MDRIZTAB is still not available.
    iref = rebuild_wfc3ir_idctab(SHARED, base / "iref").parent
    pair = ("ib6o23rtq", "ib6o23rwq")
    scratch = base.parent / "refcat_work"
    shutil.rmtree(scratch, ignore_errors=True)
    refcat = Path(shutil.copy2(reference_pair_catalog(SHARED, scratch, iref, pair), base / "ib6o23_refcat.ecsv"))
    shutil.rmtree(scratch, ignore_errors=True)
    return Dataset(
        name=f"real WFC3/IR F140W ({len(members)} exp)",
        directory=base,
        asn_name=asn.name,
        members=members,
        has_flc=False,
        ref_env={"iref": iref.name},
        autodriz_flags=["--iref", "iref", "--catalog", refcat.name],
        refcat=refcat,
        truth=None,
        description=(f"real WFC3/IR F140W association {GOODSS_ASN} (GOODS-S, {len(members)} FLTs "
                     f"1014×1014, from {GOODSS_DIR}); IDCTAB w3m18525i rebuilt from public headers "
                     f"(tests/irdistortion.py), MDRIZTAB not available; reference catalog {refcat.name}: "
                     f"sources of {' + '.join(pair)} drizzled at grizli's WCS; errors are vs grizli's WCS "
                     "at (507,507)"),
        reference_wcs=GOODSS_DIR / "reference_wcs_ib6o23.ecsv",
    )


def reference_errors(paths: list[Path], reference: Path | None) -> dict[str, float]:
    """Total offset (mas) of each FLT's SCI,1 WCS from grizli's at (507,507); {} without a reference."""
    if reference is None:
        return {}
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from astropy.table import Table
    from realdata import offset_from_reference_mas

    rows = {str(r["rootname"]): r for r in Table.read(reference)}
    return {p.name[:9]: offset_from_reference_mas(p, rows[p.name[:9]])[2] for p in paths if p.is_file()}


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    # Neither tool may see the other's or a stale setting.
    for k in ("ASTROMETRY_STEP_CONTROL", "ASTROMETRY_APPLY_APRIORI", "ASTROMETRY_COMPUTE_APOSTERIORI",
              "jref", "iref", "AUTODRIZ_JREF", "AUTODRIZ_IREF", "AUTODRIZ_CATALOG", "AUTODRIZ_NUM_CORES"):
        env.pop(k, None)
    env.setdefault("MPLBACKEND", "Agg")
    env.update(extra)
    return env


def fresh_copy(ds: Dataset, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(ds.directory, dest)
    return dest


def run_runastrodriz(ds: Dataset, work: Path, num_cores: int, timeout: float, pause: float = 0.0) -> Outcome:
    d = fresh_copy(ds, work / "runastrodriz")
    wrapper = work / "runastrodriz_offline.py"
    wrapper.write_text(WRAPPER)
    result_path = d / "bench_result.json"
    refcat = str((d / ds.refcat.name).resolve()) if ds.refcat else "-"
    # runastrodriz expands jref$name by concatenation: absolute folder with a trailing slash.
    refs = {k: str((d / v).resolve()) + os.sep for k, v in ds.ref_env.items()}
    env = child_env({**refs, "ASTROMETRY_STEP_CONTROL": "off"})
    cmd = [sys.executable, str(wrapper), ds.asn_name, refcat, str(num_cores), str(result_path)]
    print(f"  runastrodriz: {' '.join(cmd)}  (cwd {d}; env ASTROMETRY_STEP_CONTROL=off, "
          + ", ".join(f"{k}={v}" for k, v in refs.items()) + ")", flush=True)
    m = run_measured(cmd, cwd=d, env=env, log=d / "bench_stdout.log", timeout=timeout, pause=pause)
    res = json.loads(result_path.read_text()) if result_path.is_file() else {"status": "no result file"}
    full_status = "timeout" if m.timed_out else res.get("status", "?")
    status = full_status if len(full_status) <= 40 else full_status.split(":")[0] + " (see log)"
    flts = [d / f"{r}_flt.fits" for r in ds.members]
    flcs = [d / f"{r}_flc.fits" for r in ds.members] if ds.has_flc else []
    products = sorted(p.name for p in d.glob("*_dr[zc].fits"))
    ref_err = reference_errors(flts, ds.reference_wcs)
    out = Outcome(ds.name, "runastrodriz", m, status, len(res.get("astrodrizzle_calls", [])),
                  wcsnames_of(flts), _rms(ref_err) if ref_err else truth_error(flts, ds.truth), truth_error(flcs, ds.truth),
                  {"full_status": full_status, "patches": res.get("patches", []), "calls": res.get("astrodrizzle_calls", []),
                   "reference_errors": ref_err,
                   "catalog_queries": res.get("catalog_queries", []),
                   "network_attempts": res.get("network_attempts", []),
                   "mdriztab_changes": res.get("mdriztab_changes", []),
                   "mdriztab_missing": res.get("mdriztab_missing", []),
                   "traceback": res.get("traceback"), "products": products, "dir": str(d)})
    return out


def count_autodriz_children(trailer: Path) -> tuple[int, list[str]]:
    """AstroDrizzle children started during this run, from the (DEBUG) trailer."""
    import re

    if not trailer.is_file():
        return 0, []
    labels = re.findall(r"child (astrodrizzle\S*): starting", trailer.read_text(errors="replace"))
    return len(labels), labels


def stage_profile(trailer_text: str) -> list[tuple[str, str, float]]:
    """(stage, status, seconds) of every ``AUTODRIZ-STAGE end`` waypoint, in trailer order."""
    from autodriz.logs import stage_ends

    return stage_ends(trailer_text)


def format_stage_profile(profile: list[tuple[str, str, float]], total: float) -> list[str]:
    """One line per stage (seconds, share of the wall time), then the time outside every stage."""
    lines = [f"{name:<14} {sec:7.1f} s  {100 * sec / total:5.1f} %" + ("" if status == "ok" else f"  ({status})")
             for name, status, sec in profile] if total > 0 else []
    outside = total - sum(sec for _, _, sec in profile)
    lines.append(f"{'(outside)':<14} {outside:7.1f} s  {100 * outside / total if total > 0 else 0:5.1f} %"
                 "  start-up, resolve of arguments, logging set-up and exit")
    return lines


def run_autodriz(ds: Dataset, work: Path, num_cores: int, timeout: float, pause: float = 0.0) -> Outcome:
    d = fresh_copy(ds, work / "autodriz")
    # As a user runs it: it removes its own work folders. The yardstick drizzles copies of the
    # updated inputs, put back as the final AstroDrizzle runs saw them (yardstick_inputs).
    cmd = [sys.executable, "-m", "autodriz", ds.asn_name, *ds.autodriz_flags, "--offline",
           "--num-cores", str(num_cores)]
    print(f"  autodriz: {' '.join(cmd)}  (cwd {d})", flush=True)
    m = run_measured(cmd, cwd=d, env=child_env({}), log=d / "bench_stdout.log", timeout=timeout, pause=pause)
    root = ds.asn_name.split("_")[0].lower()
    report_path = d / f"{root}_report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    n_children, labels = count_autodriz_children(d / f"{root}.tra")
    trailer = d / f"{root}.tra"
    profile = stage_profile(trailer.read_text(errors="replace")) if trailer.is_file() else []
    flts = [d / f"{r}_flt.fits" for r in ds.members]
    flcs = [d / f"{r}_flc.fits" for r in ds.members] if ds.has_flc else []
    try:
        from autodriz.exitcodes import ExitCode

        code_name = ExitCode(m.returncode).name
    except Exception:  # noqa: BLE001
        code_name = "?"
    if m.timed_out:
        status = "timeout"
    elif m.returncode == 0:
        status = "ok"
    else:
        status = f"exit {m.returncode} {code_name}" + (" (products written)" if list(d.glob("*_dr[zc].fits")) else "")
    drizzle_seconds = sum(float(r.get("seconds", 0)) for r in report.get("drizzle", []))
    n_runs = report.get("astrodrizzle_runs")
    if n_runs is None or n_runs != n_children:
        print(f"    note: report astrodrizzle_runs={n_runs}, trailer astrodrizzle children={n_children} {labels}")
    ref_err = reference_errors(flts, ds.reference_wcs)
    return Outcome(ds.name, "autodriz", m, status, n_children if n_children else n_runs,
                   wcsnames_of(flts), _rms(ref_err) if ref_err else truth_error(flts, ds.truth), truth_error(flcs, ds.truth),
                   {"report_runs": n_runs, "reference_errors": ref_err, "children": labels, "drizzle_seconds": drizzle_seconds,
                    "timings": report.get("timings", {}), "stage_profile": profile, "chosen": report.get("chosen", {}),
                    "products": sorted(p.name for p in d.glob("*_dr[zc].fits")), "dir": str(d)})


def yardstick_inputs(done: Path, names: list[str], alone: Path) -> list[Path]:
    """Copies in ``alone`` of the updated inputs ``names`` of ``done``, as autodriz's final
    AstroDrizzle runs drizzled them.

    An updated input is its final drizzle's working copy with new headers (autodriz writes it
    over that copy): the same pixels and WCS. Two keywords are put back as they were when it was
    drizzled: each SCI header's IDCTAB (stwcs sets it to N/A when it applies a headerlet, as in
    the archive; AstroDrizzle without it orients the output by the chip's WCS instead of the
    distortion model's V2/V3 axes: another frame) from the primary header, and no MDRIZSKY (the
    working copies start without one; AstroDrizzle starts from it when it finds one).
    """
    from astropy.io import fits

    out = []
    for name in names:
        copy = Path(shutil.copy2(done / name, alone / name))
        with fits.open(copy, mode="update") as hdul:
            idctab = hdul[0].header.get("IDCTAB")
            for hdu in (h for h in hdul if h.name == "SCI"):
                if idctab is not None and "IDCTAB" in hdu.header:
                    hdu.header["IDCTAB"] = idctab
                hdu.header.remove("MDRIZSKY", ignore_missing=True)
        out.append(copy)
    return out


def same_frame(a: Path, b: Path) -> bool:
    """Whether two drizzled products share their output frame (shape, reference pixel and sky)."""
    from astropy.io import fits

    keys = ("NAXIS1", "NAXIS2", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2")
    ha, hb = fits.getheader(a, "SCI"), fits.getheader(b, "SCI")
    return all(abs(float(ha[k]) - float(hb[k])) <= 1e-9 * max(1.0, abs(float(ha[k]))) for k in keys)


def time_final_drizzles_alone(
    ds: Dataset, done: Path, num_cores: int, modes: tuple[str, ...] = ("same_parallelism", "serial"),
    pause: float = 0.0,
) -> dict[str, Any] | None:
    """Re-run autodriz's final AstroDrizzle runs by themselves: the yardstick for its total time.

    On fresh copies of the files autodriz's final AstroDrizzle runs drizzled (its updated inputs,
    put back as they were drizzled: :func:`yardstick_inputs`; the products are checked to share
    autodriz's output frames), with the same
    parameters (the visit's MDRIZTAB, or autodriz's defaults), through the same
    :func:`autodriz.drizzle.run_final_drizzles` autodriz calls, hence with the **same
    parallelism** (DRZ and DRC side by side with ``num_cores // 2`` cores each when
    ``num_cores`` ≥ 2, one after the other otherwise). Returns ``same_parallelism`` (the fair
    yardstick) and ``serial`` (one after the other, each with ``num_cores``), seconds; each
    AstroDrizzle runs in a fresh child process, as inside autodriz. ``same_parallelism_cpu``:
    the CPU seconds of the fair yardstick by role (:class:`TreeCpu`).
    """
    from astropy.io import fits

    from autodriz.config import astrodrizzle_defaults
    from autodriz.childproc import start_warm_server
    from autodriz.drizzle import run_astrodrizzle, run_final_drizzles

    out: dict[str, Any] = {}
    for mode in modes:
        alone = done.parent / f"alone-{mode}"
        if alone.exists():
            shutil.rmtree(alone)
        alone.mkdir()
        for name in ds.ref_env.values():
            shutil.copytree(done / name, alone / name)
        flts = yardstick_inputs(done, [f"{r}_flt.fits" for r in ds.members], alone)
        flcs = yardstick_inputs(done, [f"{r}_flc.fits" for r in ds.members], alone) if ds.has_flc else []
        folders = {k: alone / v for k, v in ds.ref_env.items()}
        with fits.open(flts[0]) as hdul:
            h = hdul[0].header
            key = f"{h['INSTRUME']}/{h['DETECTOR']}"
        defaults = astrodrizzle_defaults(key, len(flts))
        root = ds.asn_name.split("_")[0].lower()
        # Every repetition's yardstick forks from a server that has imported drizzlepac already,
        # as autodriz's final drizzles do (it imports while verification runs); otherwise the
        # first repetition's yardstick alone would pay that import (~4 CPU-s, a few seconds).
        start_warm_server(wait=True)
        settle(pause)
        sampler = TreeSampler(os.getpid(), baseline=True) if mode == "same_parallelism" else None
        t0 = time.perf_counter()
        try:
            if mode == "same_parallelism":
                with sampler:
                    run_final_drizzles([flts, flcs], root, alone, folders, defaults, num_cores=num_cores)
            else:
                for group in (flts, flcs):
                    if group:
                        run_astrodrizzle(group, root, alone, folders, defaults, num_cores=num_cores)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not stop
            print(f"    final AstroDrizzle runs alone ({mode}): failed: {exc}")
            break  # what was measured before stays (the serial run comes after the fair one)
        out[mode] = time.perf_counter() - t0
        for product in sorted(alone.rglob(f"{root}_dr[zc].fits")):
            if not same_frame(product, done / product.name):
                print(f"    note: the yardstick's {product.name} has another output frame than autodriz's")
        if sampler is not None and sampler.cpu is not None:
            out["same_parallelism_cpu"] = sampler.cpu.by_role()
            out["same_parallelism_cpu_system"] = sampler.cpu.by_role(system_only=True)
            out["same_parallelism_sampler_cpu"] = round(sampler.own_cpu, 1)
    return out if "same_parallelism" in out else None


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def _rms(errors: dict[str, float]) -> float:
    import numpy as np

    return float(np.sqrt(np.mean(np.square(list(errors.values())))))


def _fmt(v: float | None, f: str = "{:.1f}") -> str:
    return "—" if v is None else f.format(v)


def table_rows(outcomes: list[Outcome]) -> list[list[str]]:
    rows = []
    base = {o.dataset: o.m.seconds for o in outcomes if o.tool == "runastrodriz" and o.status == "ok"}
    for o in outcomes:
        names = sorted(set(o.wcsnames))
        ratio = o.m.seconds / base[o.dataset] if o.dataset in base and base[o.dataset] > 0 else None
        if o.tool == "runastrodriz" and ratio is None:
            ratio_s = "— (failed)"
        elif ratio is None:
            ran = any(x.tool == "runastrodriz" and x.dataset == o.dataset for x in outcomes)
            ratio_s = "— (runastrodriz failed)" if ran else "— (runastrodriz not run)"
        else:
            ratio_s = f"{ratio:.2f}×"
        rows.append([
            o.dataset, o.tool, o.status, f"{o.m.seconds:.1f}", ratio_s,
            _fmt(o.astrodrizzle_runs, "{}"), f"{o.m.maxrss_mb:.0f}", _fmt(o.m.tree_pss_mb, "{:.0f}"),
            _fmt(o.m.tree_rss_mb, "{:.0f}"),
            ", ".join(names), _fmt(o.err_flt_mas), _fmt(o.err_flc_mas),
            f"{o.m.load_before[0]:.2f} → {o.m.load_after[0]:.2f}",
        ])
    return rows


HEADER = ["dataset", "tool", "status", "wall s", "time vs runastrodriz", "AstroDrizzle runs",
          "peak RSS MB (largest process)", "peak PSS MB (tree sum, sampled)",
          "peak RSS MB (tree sum: double-counts shared pages)", "WCSNAME (FLT SCI,1)",
          "FLT err rms mas (vs truth; real data: vs grizli at CRPIX)", "FLC err rms mas", "load 1-min before → after"]


def plain_table(rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))
    return "\n".join([line(HEADER), line(["-" * w for w in widths]), *map(line, rows)])


def markdown_table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("autodriz", "drizzlepac", "stwcs", "tweakwcs", "astropy", "numpy", "drizzle", "photutils"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def machine() -> str:
    mem = "?"
    try:
        for ln in Path("/proc/meminfo").read_text().splitlines():
            if ln.startswith("MemTotal"):
                mem = f"{int(ln.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    cpu = platform.processor() or "?"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {mem} RAM, {platform.system()} {platform.release()}"


def git_state() -> str:
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True, check=True).stdout.split("\n")
        dirty = [ln for ln in dirty if ln.strip()]
        return f"{repo} at {head}" + (f" + {len(dirty)} uncommitted change(s) under src/" if dirty else " (clean src/)")
    except (OSError, subprocess.CalledProcessError):
        return f"{repo} (not a git checkout)"


#: Disk a run of this script needs at its peak, GB (input, autodriz's copy of it with its
#: working folders and AstroDrizzle intermediates, two yardstick folders), by synthetic size.
#: The full-size figure: ~9 GB seen in /tmp/bW at stop 37; runastrodriz adds its own copy.
DISK_NEEDED_GB = {"smoke": 0.5, "default": 4.0, "full": 12.0}


def disk_problem(work: Path, size: str, runastrodriz: bool) -> str | None:
    """Why ``work``'s file system cannot hold the run, or None (a full disk fails a run midway)."""
    need = DISK_NEEDED_GB[size] * (1.5 if runastrodriz else 1.0)
    free = shutil.disk_usage(work).free / 1e9
    if free < need:
        return (f"only {free:.1f} GB free under {work}, a {size} run needs ~{need:.0f} GB: "
                "free some space or choose another --workdir")
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=("sim", "goodss", "both"), default="both")
    ap.add_argument("--full", action="store_true",
                    help="synthetic visit at full size: 4 exposures, 2048×4096 chips (default 3 × 1024×2048)")
    ap.add_argument("--smoke", action="store_true",
                    help="smallest synthetic visit (2 × 256×512): checks that the script works, measures nothing")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--num-cores", type=int, default=1, help="AstroDrizzle cores for both tools (default 1)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per tool run before it is killed")
    ap.add_argument("--workdir", type=Path, default=None, help="default: a new folder under $TMPDIR")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--skip-runastrodriz", action="store_true",
                    help="autodriz only (quick iterations; the comparison needs both)")
    ap.add_argument("--json", type=Path, default=None, help="also write all figures as JSON here")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run autodriz and its yardstick (final drizzles alone, same parallelism) this many "
                         "times, each pair back to back, and print every ratio and their median: this "
                         "machine's speed drifts by more than the effects measured (default 1)")
    ap.add_argument("--settle", type=float, default=15.0,
                    help="seconds to wait before each timed run (autodriz, its yardstick, runastrodriz), so "
                         "that none starts on memory the previous one just freed, which this VM makes "
                         "cheaper to touch (default 15; 0 with --smoke)")
    args = ap.parse_args(argv)
    pause = 0.0 if args.smoke else max(0.0, args.settle)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_vs_runastrodriz_"))
    work.mkdir(parents=True, exist_ok=True)
    size = "smoke" if args.smoke else ("full" if args.full else "default")
    problem = disk_problem(work, size, not args.skip_runastrodriz)
    if problem:
        print(f"bench_vs_runastrodriz: {problem}", file=sys.stderr)
        return 2
    print(f"bench_vs_runastrodriz  {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"machine: {machine()}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    print(f"work folder: {work}; AstroDrizzle num_cores={args.num_cores} for both tools")
    print(f"autodriz source: {git_state()}")
    if pause:
        print(f"each timed run starts {pause:g} s after the previous one ended (--settle)")

    datasets: list[Dataset] = []
    if args.dataset in ("sim", "both"):
        datasets.append(make_sim(work / "sim" / "input", args.full, args.seed, args.smoke))
    if args.dataset in ("goodss", "both"):
        datasets.append(make_goodss(work / "goodss" / "input"))

    outcomes: list[Outcome] = []
    for ds in datasets:
        print(f"\n== {ds.name}: {ds.description}")
        runners = (run_autodriz,) if args.skip_runastrodriz else (run_runastrodriz, run_autodriz)
        for runner in runners:
            repeats: list[Outcome] = []
            for k in range(max(1, args.repeat) if runner is run_autodriz else 1):
                o = runner(ds, ds.directory.parent, args.num_cores, args.timeout, pause=pause)
                if o.tool == "autodriz" and o.extra.get("products"):
                    # --smoke checks the script, it measures nothing: the fair yardstick only;
                    # repetitions after the first: the fair yardstick only.
                    modes = ("same_parallelism",) if args.smoke or k else ("same_parallelism", "serial")
                    o.extra["alone_seconds"] = time_final_drizzles_alone(
                        ds, Path(o.extra["dir"]), args.num_cores, modes, pause=pause
                    )
                    o.extra["num_cores"] = args.num_cores
                if o.tool == "autodriz":
                    alone_all = o.extra.get("alone_seconds") or {}
                    alone_k = alone_all.get("same_parallelism")
                    alone_system_k = (alone_all.get("same_parallelism_cpu_system") or {}).get("total")
                    cpu_k = cpu_ratio(o)
                    if args.repeat > 1:
                        print(f"    repetition {k + 1}/{args.repeat}: autodriz {o.status} in {o.m.seconds:.1f} s, final "
                              f"drizzles alone {_fmt(alone_k)} s"
                              + (f" = {o.m.seconds / alone_k:.2f}×" if alone_k else "")
                              + (f"; CPU {cpu_k:.2f}×" if cpu_k else "")
                              + (f" (system {o.m.cpu_system['total']:.1f} vs {_fmt(alone_system_k)} CPU-s)"
                                 if o.m.cpu_system else ""), flush=True)
                repeats.append(o)
            o = repeats[0]
            if len(repeats) > 1:
                o.extra["repetitions"] = [
                    {"total": r.m.seconds, "alone": (r.extra.get("alone_seconds") or {}).get("same_parallelism"),
                     "cpu_ratio": cpu_ratio(r), "status": r.status} for r in repeats
                ]
            outcomes.append(o)
            print(f"    {o.tool}: {o.status} in {o.m.seconds:.1f} s, AstroDrizzle runs {o.astrodrizzle_runs}, "
                  f"peak RSS {o.m.maxrss_mb:.0f} MB (largest process), PSS {_fmt(o.m.tree_pss_mb, '{:.0f}')} MB "
                  f"(tree sum), RSS {_fmt(o.m.tree_rss_mb, '{:.0f}')} MB (tree sum), "
                  f"WCSNAME {sorted(set(o.wcsnames))}, error FLT {_fmt(o.err_flt_mas)} / FLC {_fmt(o.err_flc_mas)} mas, "
                  f"load {o.m.load_before} → {o.m.load_after}", flush=True)
            if o.extra.get("reference_errors"):
                errs = o.extra["reference_errors"]
                print(f"      {o.tool} vs grizli's WCS at CRPIX (507,507): "
                      + ", ".join(f"{k} {v:.1f}" for k, v in errs.items())
                      + f" mas (median {statistics.median(errs.values()):.1f}, rms {_rms(errs):.1f}, "
                      f"max {max(errs.values()):.1f})", flush=True)
            if o.tool == "runastrodriz":
                if o.extra["full_status"] != o.status:
                    print(f"      status: {o.extra['full_status']}")
                for p in o.extra["patches"]:
                    print(f"      patched: {p}")
                for c in o.extra["calls"]:
                    print(f"      AstroDrizzle {c['seconds']:7.1f} s  output={c['output']!r}  in {Path(c['cwd']).name}/")
                for q in o.extra["catalog_queries"]:
                    print(f"      catalog query {q['catalog']} sr={q['sr']:.3f}° epoch={q['epoch']}: served {q['served']} rows")
                for miss in o.extra.get("mdriztab_missing", []):
                    print(f"      MDRIZTAB missing: {miss}")
                for ch in o.extra.get("mdriztab_changes", []):
                    print(f"      MDRIZTAB values replaced (old, new): {ch}")
                if o.extra["network_attempts"]:
                    print(f"      blocked network attempts: {len(o.extra['network_attempts'])} "
                          f"(e.g. {o.extra['network_attempts'][0]})")
                if o.extra.get("traceback"):
                    print("      traceback tail:\n        " + "\n        ".join(o.extra["traceback"].splitlines()[-6:]))
                print(f"      products: {o.extra['products']}")
                print(f"      CPU (user + system, sampled every {SAMPLE_SECONDS:g} s): {format_cpu(o.m.cpu_by_role)}")
                if o.m.cpu_system:
                    print(f"      of which system (kernel) time: {format_cpu(o.m.cpu_system)}")
            else:
                print(f"      chosen: {o.extra['chosen'].get('wcsname')} ({o.extra['chosen'].get('name')}); "
                      f"products: {o.extra['products']}; report astrodrizzle_runs={o.extra['report_runs']}, "
                      f"children {o.extra['children']}")
                print(f"      CPU (user + system, sampled every {SAMPLE_SECONDS:g} s): autodriz "
                      f"{format_cpu(o.m.cpu_by_role)}")
                alone_all = o.extra.get("alone_seconds") or {}
                alone_cpu = alone_all.get("same_parallelism_cpu")
                ratio = cpu_ratio(o)
                if alone_cpu:
                    print(f"      CPU of its final drizzles alone (same parallelism): {format_cpu(alone_cpu)}"
                          + (f"; ratio {ratio:.2f}×" if ratio else ""))
                if o.m.sampler_cpu is not None:
                    print(f"      the sampler's own CPU (not counted in either): {_fmt(o.m.sampler_cpu)} CPU-s beside "
                          f"autodriz, {_fmt(alone_all.get('same_parallelism_sampler_cpu'))} CPU-s beside its final "
                          "drizzles alone")
                alone_system = alone_all.get("same_parallelism_cpu_system")
                if o.m.cpu_system:
                    print(f"      of which system (kernel) time: autodriz {format_cpu(o.m.cpu_system)}; its final drizzles "
                          f"alone {format_cpu(alone_system) if alone_system else 'not measured'}")
                print("      stage profile (AUTODRIZ-STAGE lines of the trailer):")
                for line in format_stage_profile(o.extra["stage_profile"], o.m.seconds):
                    print("        " + line)

    rows = table_rows(outcomes)
    print("\n" + plain_table(rows))
    print("\nMarkdown:\n")
    print(markdown_table(rows))
    print()
    for o in outcomes:
        if o.tool == "autodriz" and o.extra.get("drizzle_seconds"):
            ds_ = o.extra["drizzle_seconds"]
            print(f"autodriz on {o.dataset}: total {o.m.seconds:.1f} s; its final AstroDrizzle runs took "
                  f"{ds_:.1f} s of child time inside the run (summed: overlapping runs count twice)")
            alone = o.extra.get("alone_seconds")
            if alone:
                same, serial = alone["same_parallelism"], alone.get("serial")
                print(f"autodriz on {o.dataset}: total {o.m.seconds:.1f} s vs its final AstroDrizzle runs alone "
                      f"with the same parallelism (num_cores={o.extra.get('num_cores')}) {same:.1f} s = "
                      f"{o.m.seconds / same:.2f}× (issue 19 target ≤ 1.3× at 2 cores, ≤ 1.4× at 1); "
                      + (f"one after the other {serial:.1f} s = {o.m.seconds / serial:.2f}×" if serial
                         else "one after the other: not measured"))
    for o in outcomes:
        reps = [r for r in o.extra.get("repetitions", []) if r["alone"] and r["status"] == "ok"]
        if reps:
            ratios = [r["total"] / r["alone"] for r in reps]
            print(f"autodriz on {o.dataset}, {len(reps)} repetitions (each autodriz then its yardstick, "
                  f"num_cores={o.extra.get('num_cores')}): ratios " + ", ".join(f"{x:.2f}×" for x in ratios)
                  + f"; median {statistics.median(ratios):.2f}× (min {min(ratios):.2f}×, max {max(ratios):.2f}×); "
                  f"median total {statistics.median(r['total'] for r in reps):.1f} s, median alone "
                  f"{statistics.median(r['alone'] for r in reps):.1f} s")
            cpus = [r["cpu_ratio"] for r in reps if r.get("cpu_ratio")]
            if cpus:
                print(f"autodriz on {o.dataset}: CPU seconds vs its final drizzles alone, by repetition: "
                      + ", ".join(f"{x:.2f}×" for x in cpus) + f"; median {statistics.median(cpus):.2f}×")
    if args.json:
        args.json.write_text(json.dumps([{**o.__dict__, "m": o.m.__dict__} for o in outcomes], indent=1, default=str))
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work folder kept: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
