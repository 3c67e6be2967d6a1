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

Used by ``tests/reliability/test_failpoints.py`` (a deterministic subset: every boundary kind)
and ``scripts/failpoints.py`` (every failpoint of a full run and of a batch).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from astropy.io import fits

from autodriz import failpoints
from autodriz.exitcodes import PRODUCT_CODES, ExitCode
from autodriz.simulate import SimulationConfig, simulate_visit

ROOT = "jsim01010"
#: The smallest simulated visit that passes every stage (as in test_kill.py): one ACS/WFC
#: exposure, FLT + FLC, 128 x 256 chips, an embedded a priori headerlet, a catalog.
CONFIG = SimulationConfig(n_exposures=1, chip_shape=(128, 256), n_stars=60, pointing_error_mas=(40.0, -30.0),
                          apriori_errors_mas=(("GSC240", 20.0, -10.0),), seed=7)
#: Only the default WCS: updatewcs, two AstroDrizzle runs, the final update, products, report.
DEFAULT_ONLY = ("--no-apriori", "--no-aposteriori", "--no-verify")
#: Everything: a priori, a posteriori against the visit's catalog, verification.
FULL = ("--apriori", "--aposteriori", "--verify")
CRVAL_TOL_DEG = 1e-9
CD_TOL = 1e-12


def make_visit(directory: Path) -> Path:
    """Simulate the pristine visit into ``directory``; return its folder."""
    return simulate_visit(directory, CONFIG).directory


def command(visit: Path, mode: Sequence[str]) -> list[str]:
    return [str(visit / f"{ROOT}_asn.fits"), "--jref", str(visit / "jref"),
            "--catalog", str(visit / f"{ROOT}_refcat.ecsv"), "--cache-dir", str(visit / "cache"),
            *mode, "--offline", "--num-cores", "1"]


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


def run(visit: Path, mode: Sequence[str], *, log: Path | None = None, failpoint: str | None = None) -> Run:
    """``autodriz`` on the visit, in this process (its children inherit the switch)."""
    from autodriz.cli import main

    out = io.StringIO()
    with _environment(log, failpoint), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
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


def reference(pristine: Path, work: Path, mode: Sequence[str]) -> Reference:
    """Record run on a copy of ``pristine``: every failpoint it passes, its exit code and WCS."""
    visit = work / "visit"
    shutil.copytree(pristine, visit)
    log = work / "record.log"
    done = run(visit, mode, log=log)
    assert done.code in {int(c) for c in PRODUCT_CODES}, done.console[-3000:]
    shapes = {}
    for p in sorted(visit.glob(f"{ROOT}_dr[zc].fits")):
        with fits.open(p) as hdul:
            shapes[p.name] = hdul["SCI"].data.shape
    return Reference(pristine, tuple(mode), done.code, wcs_of(visit), digests(pristine), shapes, tuple(hits(log)))


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
    done = run(visit, ref.mode, log=work / "trial.log", failpoint=spec)
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
        again = run(visit, ref.mode)
        rerun_code = again.code
        if again.code != ref.code:
            problems.append(f"the next run exits {again.code}, the reference run {ref.code}: {_verdicts(again.console)}")
        wcs = wcs_of(visit)
        differ = [f for f in wcs if not same_wcs(wcs[f], ref.wcs[f])]
        if differ:
            problems.append(f"the next run's WCS differs from the reference's in {differ}")
    shutil.rmtree(visit, ignore_errors=True)
    return Trial(spec, done.code, verdicts[0][:200] if verdicts else "", state, rerun_code, problems)
