"""Failpoint trials: fail the N-th call of a boundary in a real run, check what is left behind.

A *record* run (``AUTODRIZ_FAILPOINT_LOG`` set, nothing failing) lists every boundary a run passes
(:mod:`autodriz.failpoints`); each ``(name, N)`` of that list is one failpoint. A trial copies the
pristine visit, runs the same command with ``AUTODRIZ_FAILPOINT=name:N`` and checks:

- the exit code is a documented one and not 1 (an internal error), with one verdict line;
- no product under a final name unless the run succeeded (0 or 9), and a product that is there is
  complete (opens, has SCI/WHT of the reference's shape); no ``*.autodriz-tmp`` or backup left;
- the inputs are all byte-identical to the pristine ones, or all carry the reference run's WCS
  (never a mix);
- the next run, without the failpoint, ends as the reference run did, with the same WCS.

For ``autodriz batch`` (:func:`batch_reference`, :func:`batch_trial`) the ledger is checked too:
after the failure it holds no row or one ``done``, ``failed`` or ``pending`` row, and the next
batch finishes the dataset with the reference's WCS.

The catalog cache and service boundaries are crossed by :data:`SERVICE` runs: no catalog file,
MAST's catalog service played by a loopback fake (``fakeservice``, behaviour ``catalog``, serving
the visit's own catalog), a cache folder that starts empty (the service is asked and its answer
cached) or warm (the cache is read).

Each trial runs in a process of its own (:func:`forked_trial`, a fork of the caller, killed if it
outlives its time). Used by ``tests/reliability/test_failpoints.py`` (every failpoint of a full
run, of a batch and of the catalog cache/service; a CI subset) and ``scripts/failpoints.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import forked
from astropy.io import fits
from astropy.table import Table

from autodriz import failpoints
from autodriz.batch import BatchExit
from autodriz.exitcodes import PRODUCT_CODES, ExitCode
from autodriz.simulate import EXACT_WORLD, SimulationConfig, simulate_visit

ROOT = "jsim01010"
#: The smallest simulated visit that passes every stage (as in test_kill.py): one ACS/WFC
#: exposure, FLT + FLC, 128 x 256 chips, an embedded a priori headerlet, a catalog.
CONFIG = SimulationConfig(**EXACT_WORLD, n_exposures=1, chip_shape=(128, 256), n_stars=60, pointing_error_mas=(40.0, -30.0),
                          apriori_errors_mas=(("GSC240", 20.0, -10.0),), seed=7)
#: Only the default WCS: updatewcs, two AstroDrizzle runs, the final update, products, report.
DEFAULT_ONLY = ("--no-apriori", "--no-aposteriori", "--no-verify")
#: Everything: a priori, a posteriori against the visit's catalog, verification.
FULL = ("--apriori", "--aposteriori", "--verify")
#: A posteriori only, the catalog from MAST's catalog service (a fake: see :func:`run`), cached.
SERVICE = ("--no-apriori", "--aposteriori", "--no-verify", "--catalog-service", "mast")
#: Seconds one trial (a failing run and the next run) may take before it counts as hung.
TRIAL_TIMEOUT = 900.0
CRVAL_TOL_DEG = 1e-9
CD_TOL = 1e-12


def make_visit(directory: Path) -> Path:
    """Simulate the pristine visit into ``directory``; return its folder."""
    return simulate_visit(directory, CONFIG).directory


def command(visit: Path, mode: Sequence[str]) -> list[str]:
    """The command line of a run of ``mode``: offline with the visit's catalog file, unless the
    mode asks a catalog service (then the service, with the cache in the visit's folder)."""
    catalog = [] if "--catalog-service" in mode else ["--catalog", str(visit / f"{ROOT}_refcat.ecsv"), "--offline"]
    return [str(visit / f"{ROOT}_asn.fits"), "--jref", str(visit / "jref"), *catalog,
            "--cache-dir", str(visit / "cache"), *mode, "--num-cores", "1"]


def mast_csv(visit: Path) -> str:
    """The visit's catalog as MAST's catalog service writes it (CSV after the description line)."""
    cat = Table.read(visit / f"{ROOT}_refcat.ecsv", format="ascii.ecsv")
    out = Table({"ra": cat["ra"], "dec": cat["dec"], "ra_error": cat["ra_error"], "dec_error": cat["dec_error"],
                 "pmra": cat["pmra"], "pmdec": cat["pmdec"], "mag": cat["phot_g_mean_mag"], "epoch": cat["ref_epoch"]})
    text = io.StringIO()
    out.write(text, format="ascii.csv")
    return text.getvalue().replace("\n", "\r\n")


@contextlib.contextmanager
def _environment(log: Path | None, failpoint: str | None) -> Iterator[None]:
    """The failpoint switch for this process and the children it starts, then as before."""
    saved = {k: os.environ.get(k) for k in (failpoints.ENV, failpoints.LOG_ENV)}
    try:
        for key, value in ((failpoints.LOG_ENV, str(log) if log else None), (failpoints.ENV, failpoint)):
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class Run:
    code: int
    console: str


@contextlib.contextmanager
def _mast_at(url: str | None) -> Iterator[None]:
    """MAST's catalog service at ``url`` for this process's runs (the packaged configuration names
    the real one, and no setting moves it), then as before."""
    if url is None:
        yield
        return
    from autodriz import catalogs

    real = catalogs.make_service
    catalogs.make_service = lambda name, config: catalogs.MastCatalogService(url)
    try:
        yield
    finally:
        catalogs.make_service = real


def run(visit: Path, mode: Sequence[str], *, log: Path | None = None, failpoint: str | None = None,
        mast_url: str | None = None) -> Run:
    """``autodriz`` on the visit, in this process (its children inherit the switch)."""
    from autodriz.cli import main

    out = io.StringIO()
    with _environment(log, failpoint), _mast_at(mast_url), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(out):
        try:
            code = main(command(visit, mode))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return Run(int(code), out.getvalue())


def hits(log: Path) -> list[tuple[str, int]]:
    """Every failpoint of a recorded run: ``(name, N)`` for each call of each boundary, in order."""
    seen: Counter[str] = Counter()
    out = []
    for name in log.read_text(encoding="utf-8").splitlines():
        seen[name] += 1
        out.append((name, seen[name]))
    return out


def inputs(visit: Path) -> list[Path]:
    return sorted(visit.glob("*_fl[tc].fits"))


def digests(visit: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs(visit)}


def wcs_of(visit: Path) -> dict[str, list[tuple]]:
    """WCSNAME, CRVAL and CD of every SCI extension of every FLT/FLC."""
    out = {}
    for path in inputs(visit):
        with fits.open(path) as hdul:
            out[path.name] = [(str(h.header.get("WCSNAME", "")),
                               *(float(h.header[k]) for k in ("CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2")))
                              for h in hdul if h.name == "SCI"]
    return out


def same_wcs(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        x[0] == y[0] and max(abs(p - q) for p, q in zip(x[1:3], y[1:3])) <= CRVAL_TOL_DEG
        and max(abs(p - q) for p, q in zip(x[3:], y[3:])) <= CD_TOL for x, y in zip(a, b))


@dataclass(frozen=True)
class Reference:
    """The pristine visit and what an uninterrupted run makes of it."""

    pristine: Path
    mode: tuple[str, ...]
    code: int
    wcs: dict[str, list[tuple]]
    sha: dict[str, str]
    shapes: dict[str, tuple[int, ...]]
    failpoints: tuple[tuple[str, int], ...]
    mast_url: str | None = None
    #: The visit after the record run (its cache holds what the service answered).
    after: Path | None = None


def _shapes(visit: Path) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for p in sorted(visit.glob(f"{ROOT}_dr[zc].fits")):
        with fits.open(p) as hdul:
            shapes[p.name] = hdul["SCI"].data.shape
    return shapes


def reference(pristine: Path, work: Path, mode: Sequence[str], *, mast_url: str | None = None) -> Reference:
    """Record run on a copy of ``pristine``: every failpoint it passes, its exit code and WCS."""
    visit = work / "visit"
    shutil.copytree(pristine, visit)
    log = work / "record.log"
    done = run(visit, mode, log=log, mast_url=mast_url)
    assert done.code in {int(c) for c in PRODUCT_CODES}, done.console[-3000:]
    return Reference(pristine, tuple(mode), done.code, wcs_of(visit), digests(pristine), _shapes(visit),
                     tuple(hits(log)), mast_url, visit)


@dataclass
class Trial:
    failpoint: str
    code: int
    verdict: str
    state: str  # "untouched", "updated" or a description of a mix
    rerun_code: int | None
    problems: list[str] = field(default_factory=list)


def _verdicts(console: str) -> list[str]:
    return [ln for ln in console.splitlines() if ln.startswith("autodriz: ") and not ln.startswith("autodriz: trailer ")]


def check_left_behind(visit: Path, ref: Reference, code: int) -> tuple[str, list[str]]:
    """Inputs all pristine or all updated; products only after success, and complete."""
    problems = []
    documented = {int(c) for c in ExitCode}
    succeeded = code in {int(c) for c in PRODUCT_CODES}
    sha, wcs = digests(visit), wcs_of(visit)
    pristine = {n for n in sha if sha[n] == ref.sha.get(n)}
    # Updated: with the reference's WCS, or (a run that succeeded without a failed optional
    # source, e.g. the catalog) with one other WCS that every input carries alike.
    names = {chip[0] for n in wcs if n not in pristine for chip in wcs[n]}
    updated = {n for n in wcs if n not in pristine and (same_wcs(wcs[n], ref.wcs[n]) or (succeeded and len(names) == 1))}
    if pristine == set(sha):
        state = "untouched"
    elif updated == set(sha):
        state = "updated"
    else:
        state = f"MIXED: pristine {sorted(pristine)}, updated {sorted(updated)}"
        problems.append(f"inputs neither all untouched nor all updated: {state}")
    if code not in documented:
        problems.append(f"undocumented exit code {code}")
    if code == ExitCode.INTERNAL_ERROR:
        problems.append("internal error (exit 1)")
    if succeeded and state != "updated":
        problems.append(f"exit {code} but the inputs are {state}")
    products = sorted(visit.glob(f"{ROOT}_dr[zc].fits"))
    if products and not succeeded:
        problems.append(f"products under a final name after exit {code}: {[p.name for p in products]}")
    for p in products:
        try:
            with fits.open(p) as hdul:
                shape = hdul["SCI"].data.shape
                hdul["WHT"].data  # noqa: B018 - must be readable
        except (OSError, KeyError, TypeError, ValueError) as exc:
            problems.append(f"{p.name} is not a complete product: {exc}")
            continue
        if shape != ref.shapes.get(p.name):
            problems.append(f"{p.name}: SCI shape {shape}, the reference run's is {ref.shapes.get(p.name)}")
    leftovers = [p.name for p in visit.rglob("*") if re.search(r"\.autodriz-(tmp|bak)$", p.name)]
    if state == "updated" and list(visit.glob("*.autodriz-committed")):
        # The update committed and only removing its backups failed: they are stale, and the
        # next run removes them (``products.recover_interrupted_update``).
        leftovers = [n for n in leftovers if not n.endswith(".autodriz-bak")]
    if leftovers:
        problems.append(f"temporary files left: {leftovers}")
    return state, problems


def trial(ref: Reference, name: str, n: int, work: Path, *, rerun: bool | None = True) -> Trial:
    """Fail ``name:n`` in a fresh copy of the visit, check what is left, then run again.

    ``rerun=None``: run again only when the inputs are not untouched (an untouched visit is
    byte-identical to the pristine one, whose run is the reference).
    """
    visit = work / "visit"
    shutil.copytree(ref.pristine, visit)
    spec = f"{name}:{n}"
    done = run(visit, ref.mode, log=work / "trial.log", failpoint=spec, mast_url=ref.mast_url)
    verdicts = _verdicts(done.console)
    state, problems = check_left_behind(visit, ref, done.code)
    if len(verdicts) != 1:
        problems.append(f"{len(verdicts)} verdict lines")
    if "Traceback (most recent call last)" in done.console:
        problems.append("traceback on the console")
    if (name, n) not in hits(work / "trial.log"):
        problems.append(f"the failpoint {spec} was never reached")
    rerun_code = None
    if rerun or (rerun is None and state != "untouched"):
        again = run(visit, ref.mode, mast_url=ref.mast_url)
        rerun_code = again.code
        if again.code != ref.code:
            problems.append(f"the next run exits {again.code}, the reference run {ref.code}: {_verdicts(again.console)}")
        wcs = wcs_of(visit)
        differ = [f for f in wcs if not same_wcs(wcs[f], ref.wcs[f])]
        if differ:
            problems.append(f"the next run's WCS differs from the reference's in {differ}")
    shutil.rmtree(visit, ignore_errors=True)
    return Trial(spec, done.code, verdicts[0][:200] if verdicts else "", state, rerun_code, problems)


def forked_trial(ref: Reference, name: str, n: int, work: Path, *, rerun: bool | None = True,
                 timeout: float = TRIAL_TIMEOUT) -> Trial:
    """:func:`trial` in a process of its own (a fork of this one), killed after ``timeout`` s."""
    done = forked.call(trial, (ref, name, n, work), timeout, kwargs={"rerun": rerun})
    if done.status == "ok":
        return done.value
    shutil.rmtree(work / "visit", ignore_errors=True)
    why = f"hung: killed after {timeout:g} s" if done.status == "hung" else f"the trial's process died ({done.exitcode})"
    return Trial(f"{name}:{n}", -1, "", "unknown", None, [why])


# --- autodriz batch --------------------------------------------------------------------------

def _batch(visit: Path, ledger: Path, mode: Sequence[str], *, log: Path | None, failpoint: str | None,
           timeout: float = TRIAL_TIMEOUT) -> subprocess.CompletedProcess:
    """``autodriz batch`` of the visit, one worker, in a process of its own (the switch in its env)."""
    env = {k: v for k, v in os.environ.items() if k not in (failpoints.ENV, failpoints.LOG_ENV)}
    if log is not None:
        env[failpoints.LOG_ENV] = str(log)
    if failpoint is not None:
        env[failpoints.ENV] = failpoint
    argv = [sys.executable, "-m", "autodriz", "batch", str(visit / f"{ROOT}_asn.fits"),
            "--ledger", str(ledger), "--workers", "1", "--progress", "plain", "--retry-failed",
            *command(visit, mode)[1:]]
    return subprocess.run(argv, env=env, capture_output=True, text=True, errors="replace", timeout=timeout,
                          check=False)


def ledger_rows(ledger: Path) -> list[tuple[str, str]]:
    """``(input, status)`` of every dataset row of the ledger (none if it holds no table yet)."""
    if not ledger.is_file():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)) as conn:
        try:
            return [tuple(r) for r in conn.execute("SELECT input, status FROM datasets")]
        except sqlite3.OperationalError as exc:  # the schema's own commit failed: an empty ledger
            if "no such table" in str(exc):
                return []
            raise


def batch_reference(pristine: Path, work: Path, mode: Sequence[str] = DEFAULT_ONLY) -> Reference:
    """Record ``autodriz batch`` on a copy of ``pristine``: its failpoints (ledger commits too)."""
    visit = work / "visit"
    shutil.copytree(pristine, visit)
    log = work / "record.log"
    done = _batch(visit, work / "ledger.sqlite", mode, log=log, failpoint=None)
    rows = ledger_rows(work / "ledger.sqlite")
    assert done.returncode == 0 and [s for _, s in rows] == ["done"], (done.returncode, rows, done.stdout[-2000:])
    return Reference(pristine, tuple(mode), 0, wcs_of(visit), digests(pristine), _shapes(visit), tuple(hits(log)),
                     None, visit)


def batch_trial(ref: Reference, name: str, n: int, work: Path) -> Trial:
    """Fail ``name:n`` in a batch of a fresh copy; check the ledger, the files, and that the next
    batch (``--retry-failed``) finishes the dataset with the reference's WCS."""
    visit = work / "visit"
    shutil.copytree(ref.pristine, visit)
    ledger = work / "ledger.sqlite"
    spec = f"{name}:{n}"
    problems = []
    try:
        first = _batch(visit, ledger, ref.mode, log=work / "trial.log", failpoint=spec)
    except subprocess.TimeoutExpired:
        shutil.rmtree(visit, ignore_errors=True)
        return Trial(f"batch {spec}", -1, "", "unknown", None, [f"hung: killed after {TRIAL_TIMEOUT:g} s"])
    # A batch ends with its own codes (BatchExit: 20-23 beside 0/2/130), not a dataset's.
    if first.returncode == 1 or first.returncode not in {int(c) for c in BatchExit}:
        problems.append(f"batch exit {first.returncode}: {(first.stderr or first.stdout)[-400:]}")
    if "Traceback (most recent call last)" in first.stdout + first.stderr:
        problems.append("traceback on the console")
    if (name, n) not in hits(work / "trial.log"):
        problems.append(f"the failpoint {spec} was never reached")
    rows = ledger_rows(ledger)
    statuses = [s for _, s in rows]
    # A failed ledger commit leaves the row as last committed: ``running`` when the result could
    # not be recorded — the state a killed campaign leaves, which the next one resolves from the
    # attempt's trailer (checked below: the next batch finishes it with the reference's WCS).
    settled = ([], ["done"], ["failed"], ["pending"]) + ((["running"],) if name == "ledger.commit" else ())
    if statuses not in settled:
        problems.append(f"ledger after the failure: {rows}")
    # The dataset's own process (products, inputs) is checked like a single run's. Products are
    # allowed only as a finished dataset's (complete, inputs updated): a ledger commit failing
    # after the dataset finished leaves its row ``pending`` beside them.
    finished = statuses == ["done"] or any(visit.glob(f"{ROOT}_dr[zc].fits"))
    state, left = check_left_behind(visit, ref, 0 if finished else int(ExitCode.DRIZZLE_FAILED))
    problems += left
    again = _batch(visit, ledger, ref.mode, log=None, failpoint=None)
    rows = ledger_rows(ledger)
    if again.returncode != 0 or [s for _, s in rows] != ["done"]:
        problems.append(f"the next batch: exit {again.returncode}, ledger {rows}")
    wcs = wcs_of(visit)
    if any(not same_wcs(wcs[f], ref.wcs[f]) for f in wcs):
        problems.append("the next batch's WCS differs from the reference's")
    verdict = (first.stdout.strip().splitlines() or [""])[-1]
    shutil.rmtree(visit, ignore_errors=True)
    return Trial(f"batch {spec} (ledger {'/'.join(statuses) or 'empty'})", first.returncode, verdict[:200], state,
                 again.returncode, problems)
