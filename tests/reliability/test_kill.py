"""``kill -9`` at ten moments of a full run: inputs stay valid, a re-run finishes the job.

The issue asks: kill the command (and every child it started) at 10 random moments of a full
run; afterwards every input is a valid FITS file, either byte-identical to the original or
carrying the final WCS (FLT and FLC of one exposure alike; a kill among the final renames may
leave a mix, but only with every original's ``.autodriz-bak`` backup beside it, which the next
run puts back first), no product sits under a final name
unless it is the finished one, and running the same command again exits 0 with the same final
WCS as a run that was never interrupted.

The visit is the smallest simulated ACS/WFC visit that goes through every stage: one exposure
(FLT + FLC, 128 x 256 chips), default, a priori from an embedded headerlet, a posteriori against
the visit's catalog, two AstroDrizzle runs (DRZ, DRC), the final update and the products. With
two exposures the file took 7.4 min here instead of 5.3 min. One uninterrupted run gives the
final WCS and how long each stage lasts; one kill falls while the interpreter starts, the nine
others are placed by the trailer's ``AUTODRIZ-STAGE start <stage>`` waypoints, at a seeded moment
inside each stage (two in the drizzle stage, in its first and second half: the DRZ's and the
DRC's AstroDrizzle; at the start of the final update, which lasts milliseconds; at the start of
and inside the products). Placed by stage rather than at fixed times, every stage is hit whatever
the machine's speed, and no two kills fall at the same moment (two aimed at the final update did
before). Trials run two at a time (each on its own copy of the visit).

``pytest -s tests/reliability/test_kill.py`` prints the table of trials.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from autodriz.products import BACKUP_SUFFIX, COMMIT_SUFFIX
from autodriz.simulate import EXACT_WORLD, SimulationConfig, simulate_visit

ROOT = "jsim01010"
SEED = 20261127
#: (waypoint to wait for, where in that stage to kill: a fraction of its baseline duration, or a
#: (low, high) range for a seeded random fraction). Every stage that takes time is hit.
#: No waypoint (None): that many seconds after the command started (the interpreter starting).
KILLS: tuple[tuple[str | None, float | tuple[float, float]], ...] = (
    (None, (0.3, 1.5)),
    ("resolve", (0.1, 0.9)),
    ("default", (0.1, 0.9)),
    ("apriori", (0.1, 0.9)),
    ("aposteriori", (0.1, 0.9)),
    ("drizzle", (0.1, 0.45)),  # the DRZ's AstroDrizzle
    ("drizzle", (0.55, 0.9)),  # the DRC's
    # The final update lasts milliseconds, less than the 10 ms between two looks at the trailer:
    # a second kill "inside" it would repeat this one.
    ("update-inputs", 0.0),
    ("products", 0.0),
    ("products", (0.1, 0.9)),
)
#: Seconds allowed for one run of the command (generous: other test runs share the cores).
RUN_TIMEOUT = 300.0
#: Trials in flight at once.
WORKERS = 2
CRVAL_TOL_DEG = 1e-9
CD_TOL = 1e-12
FINAL_NAMES = (f"{ROOT}_drz.fits", f"{ROOT}_drc.fits", f"{ROOT}_report.json", f"{ROOT}_report.html")


# --------------------------------------------------------------------------------------------
# helpers


def _command(directory: Path) -> list[str]:
    """The full run: default + a priori + a posteriori with the visit's catalog, offline."""
    return [
        sys.executable, "-m", "autodriz", str(directory / f"{ROOT}_asn.fits"),
        "--jref", str(directory / "jref"),
        "--catalog", str(directory / f"{ROOT}_refcat.ecsv"),
        "--apriori", "--aposteriori", "--verify", "--offline", "--num-cores", "1", "-q",
    ]


def _environment() -> dict[str, str]:
    """Our environment without settings that would change the run (PYTHONPATH is kept)."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("AUTODRIZ_", "ASTROMETRY_")) and k not in ("jref", "iref")
    }
    env["MPLBACKEND"] = "Agg"
    return env


def _inputs(directory: Path) -> list[Path]:
    return sorted(directory.glob("*_fl[tc].fits"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _final_wcs(directory: Path) -> dict[str, list[tuple]]:
    """WCSNAME, CRVAL and CD of every SCI extension of every FLT/FLC."""
    out = {}
    for path in _inputs(directory):
        with fits.open(path) as hdul:
            out[path.name] = [
                (
                    str(h.header.get("WCSNAME", "")),
                    *(float(h.header[k]) for k in ("CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2")),
                )
                for h in hdul if h.name == "SCI"
            ]
    return out


def _wcs_differences(got: dict[str, list[tuple]], want: dict[str, list[tuple]]) -> list[str]:
    problems = []
    if sorted(got) != sorted(want):
        return [f"files {sorted(got)} != {sorted(want)}"]
    for name, chips in want.items():
        if len(got[name]) != len(chips):
            problems.append(f"{name}: {len(got[name])} SCI extensions, expected {len(chips)}")
            continue
        for ver, (g, w) in enumerate(zip(got[name], chips), start=1):
            if g[0] != w[0]:
                problems.append(f"{name}[SCI,{ver}] WCSNAME {g[0]!r} != {w[0]!r}")
            if max(abs(a - b) for a, b in zip(g[1:3], w[1:3])) > CRVAL_TOL_DEG:
                problems.append(f"{name}[SCI,{ver}] CRVAL {g[1:3]} != {w[1:3]}")
            if max(abs(a - b) for a, b in zip(g[3:], w[3:])) > CD_TOL:
                problems.append(f"{name}[SCI,{ver}] CD {g[3:]} != {w[3:]}")
    return problems


def _stage_seconds(trailer: Path) -> dict[str, float]:
    text = trailer.read_text(encoding="utf-8")
    return {m[0]: float(m[1]) for m in re.findall(r"AUTODRIZ-STAGE end (\S+) ok ([\d.]+)s", text)}


def _stage_reached(trailer: Path) -> str:
    """The last stage the killed run started (and whether it ended)."""
    if not trailer.is_file():
        return "(no trailer)"
    text = trailer.read_text(encoding="utf-8", errors="replace")
    if "AUTODRIZ-VERDICT" in text:
        return "finished"
    started = re.findall(r"AUTODRIZ-STAGE start (\S+)", text)
    if not started:
        return "start-up"
    last = started[-1]
    return f"{last} (ended)" if re.search(rf"AUTODRIZ-STAGE end {re.escape(last)} ", text) else last


def _group_alive(pgid: int) -> list[int]:
    """Processes (not zombies) still in process group ``pgid``, from /proc."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process went away while we looked
            continue
        # The command name is in parentheses and may contain spaces: split after it.
        fields = text[text.rindex(")") + 2:].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            alive.append(int(stat.parent.name))
    return alive


@dataclass
class RunOutcome:
    exit_code: int | None
    seconds: float
    stdout: str


def _run(directory: Path, *, timeout: float = RUN_TIMEOUT) -> RunOutcome:
    """Run the command to the end (bounded); kill its whole group on a timeout."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        _command(directory), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=_environment(), start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        return RunOutcome(None, time.monotonic() - t0, out.decode(errors="replace"))
    return RunOutcome(proc.returncode, time.monotonic() - t0, out.decode(errors="replace"))


@dataclass(frozen=True)
class Baseline:
    """The uninterrupted run, and a pristine copy of the visit to start every trial from."""

    template: Path
    seconds: float
    stage_seconds: dict[str, float]
    wcs: dict[str, list[tuple]]
    sha: dict[str, str]
    #: Shape and SCI data of each finished product (to recognise a finished one).
    products: dict[str, np.ndarray]


@dataclass(frozen=True)
class KillPlan:
    """When to kill: ``after_seconds`` from the start, or that long after ``marker`` appears."""

    after_seconds: float
    marker: str | None = None

    def describe(self) -> str:
        return f"{self.after_seconds:.2f} s" + (f" after start {self.marker}" if self.marker else "")


@dataclass
class Trial:
    number: int
    plan: KillPlan
    killed_at: float = 0.0
    stage: str = ""
    inputs: str = ""
    leftovers: str = ""
    rerun_exit: int | None = None
    rerun_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def _plans(baseline: Baseline) -> list[KillPlan]:
    """One kill at a seeded moment inside each stage of :data:`KILLS`."""
    rng = np.random.default_rng(SEED)
    plans = []
    for marker, where in KILLS:
        span = baseline.stage_seconds.get(marker, 0.5) if marker else 1.0
        fraction = where if isinstance(where, float) else rng.uniform(*where)
        plans.append(KillPlan(float(span * fraction), marker))
    return plans


def _kill_when(proc: subprocess.Popen, trailer: Path, plan: KillPlan, deadline: float) -> float:
    """Wait for the plan's moment (or the end of the run), then SIGKILL the whole group."""
    t0 = time.monotonic()
    due = t0 + plan.after_seconds if plan.marker is None else None
    needle = f"AUTODRIZ-STAGE start {plan.marker}".encode() if plan.marker else None
    seen, offset = b"", 0
    while proc.poll() is None and time.monotonic() < deadline:
        now = time.monotonic()
        if due is None and trailer.is_file():
            # Only what the trailer gained since the last look (it grows to ~100 kB).
            with trailer.open("rb") as fh:
                fh.seek(offset)
                new = fh.read()
            offset += len(new)
            seen = seen[-len(needle):] + new
            if needle in seen:
                due = now + plan.after_seconds
        if due is not None and now >= due:
            break
        time.sleep(0.01)
    killed_at = time.monotonic() - t0
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # the run had already ended, and its group with it
        pass
    proc.wait(timeout=30)
    return killed_at


def _check_after_kill(directory: Path, baseline: Baseline, trial: Trial) -> None:
    final_name = next(iter(baseline.wcs.values()))[0][0]
    states: dict[str, str] = {}
    for path in _inputs(directory):
        try:
            with fits.open(path) as hdul:
                for hdu in hdul:
                    _ = hdu.data  # every extension's data must be readable
                names = {str(h.header.get("WCSNAME", "")) for h in hdul if h.name == "SCI"}
        except Exception as exc:  # noqa: BLE001 - any failure to read is what we report
            trial.problems.append(f"{path.name} is not valid FITS after the kill: {exc}")
            states[path.name] = "broken"
            continue
        if _sha(path) == baseline.sha[path.name]:
            states[path.name] = "untouched"
        elif names == {final_name}:
            states[path.name] = "updated"
        else:
            states[path.name] = f"CHANGED({sorted(names)})"
            trial.problems.append(f"{path.name} modified but WCSNAME {sorted(names)} is not {final_name}")
    # A kill among the final renames leaves every original's backup (.autodriz-bak), which the
    # next run puts back: then any mix of updated and untouched inputs is recoverable, as long as
    # each backup is the original. Without backups, FLT and FLC of an exposure must agree.
    # A kill after the renames, while the backups are removed, leaves a commit marker: then the
    # backups are stale and every input must already be updated.
    backups = {p.name[: -len(BACKUP_SUFFIX)]: p for p in directory.glob(f"*{BACKUP_SUFFIX}")}
    if list(directory.glob(f"*{COMMIT_SUFFIX}")):
        for name, state in states.items():
            if state != "updated":
                trial.problems.append(f"{name} is {state} although the update committed")
            elif name in backups:
                states[name] += "+stale-backup"
    elif backups:
        for name, state in states.items():
            if name not in backups:
                if state != "untouched":
                    trial.problems.append(f"{name} is {state} and has no backup to be put back from")
            elif _sha(backups[name]) != baseline.sha[name]:
                trial.problems.append(f"the backup of {name} is not the original")
            else:
                states[name] += "+backup"
    else:
        by_exposure: dict[str, set[str]] = {}
        for name, state in states.items():
            by_exposure.setdefault(name[:9], set()).add(state)
        for exposure, seen in by_exposure.items():
            if len(seen) != 1:
                trial.problems.append(f"FLT and FLC of {exposure} disagree: {sorted(seen)}")
    trial.inputs = ",".join(sorted({s for s in states.values()})) or "-"

    present = [n for n in FINAL_NAMES if (directory / n).exists()]
    trial.leftovers = ",".join(n.replace(ROOT, "") for n in present) or "-"
    for name in present:
        path = directory / name
        try:
            if name.endswith(".fits"):
                with fits.open(path) as hdul:
                    sci = np.asarray(hdul["SCI"].data, dtype=float)
                    _ = hdul["WHT"].data, hdul["CTX"].data
                want = baseline.products[name]
                if sci.shape != want.shape or not np.allclose(sci, want, equal_nan=True, rtol=1e-6, atol=1e-9):
                    trial.problems.append(f"{name} exists but is not the finished product")
            elif name.endswith(".json"):
                chosen = json.loads(path.read_text(encoding="utf-8"))["chosen"]["wcsname"]
                if chosen != final_name:
                    trial.problems.append(f"{name} names {chosen}, not {final_name}")
            elif "</html>" not in path.read_text(encoding="utf-8"):
                trial.problems.append(f"{name} is incomplete")
        except Exception as exc:  # noqa: BLE001 - any failure to read is what we report
            trial.problems.append(f"{name} under its final name is unreadable: {exc}")
    # Products are published only after the inputs carry the WCS they were drizzled with.
    if any(n.endswith(".fits") for n in present) and set(states.values()) != {"updated"}:
        trial.problems.append(f"products {present} exist but the inputs are {sorted(set(states.values()))}")


def _run_trial(trial: Trial, baseline: Baseline, workroot: Path) -> Trial:
    directory = workroot / f"trial{trial.number:02d}" / "visit"
    shutil.copytree(baseline.template, directory)
    trailer = directory / f"{ROOT}.tra"
    proc = subprocess.Popen(
        _command(directory), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=_environment(), start_new_session=True,
    )
    pgid = proc.pid  # start_new_session: the command leads its own group
    try:
        trial.killed_at = _kill_when(proc, trailer, trial.plan, time.monotonic() + RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(pgid, signal.SIGKILL)
            proc.wait(timeout=30)
    # Children die with the group; give the kernel a moment to take them down.
    for _ in range(100):
        survivors = _group_alive(pgid)
        if not survivors:
            break
        time.sleep(0.05)
    if survivors:
        trial.problems.append(f"processes of the killed group survive: {survivors}")
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
    trial.stage = _stage_reached(trailer)

    _check_after_kill(directory, baseline, trial)

    rerun = _run(directory)
    trial.rerun_exit, trial.rerun_seconds = rerun.exit_code, rerun.seconds
    if rerun.exit_code != 0:
        trial.problems.append(f"re-run exit {rerun.exit_code}:\n{rerun.stdout[-3000:]}")
        return trial
    trial.problems += [f"after the re-run: {p}" for p in _wcs_differences(_final_wcs(directory), baseline.wcs)]
    stray = [p.name for p in directory.rglob("*") if p.name.endswith((".autodriz-tmp", BACKUP_SUFFIX, COMMIT_SUFFIX))]
    stray += [p.name for p in directory.glob(f".{ROOT}.autodriz-lock")]
    stray += [p.name for p in directory.glob(f"{ROOT}_*") if p.is_dir()]
    if stray:
        trial.problems.append(f"left behind after the re-run: {stray}")
    return trial


# --------------------------------------------------------------------------------------------
# the test


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    base = tmp_path_factory.mktemp("kill")
    template = simulate_visit(
        base / "template",
        SimulationConfig(**EXACT_WORLD,
            n_exposures=1, chip_shape=(128, 256), n_stars=60, pointing_error_mas=(40.0, -30.0),
            apriori_errors_mas=(("GSC240", 20.0, -10.0),), seed=7,
        ),
    ).directory
    directory = base / "uninterrupted"
    shutil.copytree(template, directory)
    outcome = _run(directory)
    assert outcome.exit_code == 0, outcome.stdout
    stages = _stage_seconds(directory / f"{ROOT}.tra")
    # A full run: every stage ran, and the a posteriori fit won.
    assert {"default", "apriori", "aposteriori", "select", "drizzle", "update-inputs", "products"} <= set(stages)
    wcs = _final_wcs(directory)
    assert {chip[0] for chips in wcs.values() for chip in chips} == {"IDC_0461802ej-FIT_IMG_USER"}
    products = {}
    for name in FINAL_NAMES[:2]:
        with fits.open(directory / name) as hdul:
            products[name] = np.asarray(hdul["SCI"].data, dtype=float)
    return Baseline(
        template=template,
        seconds=outcome.seconds,
        stage_seconds=stages,
        wcs=wcs,
        sha={p.name: _sha(p) for p in _inputs(template)},
        products=products,
    )


def test_kill_minus_9_at_ten_moments_then_rerun(baseline: Baseline, tmp_path: Path) -> None:
    trials = [Trial(i + 1, plan) for i, plan in enumerate(_plans(baseline))]
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        done = list(pool.map(lambda t: _run_trial(t, baseline, tmp_path), trials))

    lines = [
        f"uninterrupted run: {baseline.seconds:.1f} s; stages "
        + ", ".join(f"{k} {v:.1f}s" for k, v in baseline.stage_seconds.items()),
        (f"{'#':>2}  {'kill plan':<32} {'killed at':>9}  {'stage reached':<22} {'inputs':<18} "
         f"{'final names present':<28} {'re-run':>6} {'s':>5}"),
    ]
    for t in done:
        lines.append(
            f"{t.number:>2}  {t.plan.describe():<32} {t.killed_at:>8.2f}s  {t.stage:<22} {t.inputs:<18} "
            f"{t.leftovers:<28} {t.rerun_exit!s:>6} {t.rerun_seconds:>5.1f}"
        )
    table = "\n".join(lines)
    print("\n" + table)
    problems = [f"trial {t.number} ({t.plan.describe()}, stage {t.stage}): {p}" for t in done for p in t.problems]

    assert not problems, table + "\n\n" + "\n".join(problems)
    # The kills covered the run: early stages and the final update/products both.
    stages = {t.stage.split(" ")[0] for t in done}
    assert len(stages & {"start-up", "resolve", "default", "apriori", "aposteriori", "select", "drizzle"}) >= 3, stages
    assert stages & {"update-inputs", "products"}


def test_a_kill_inside_the_removal_of_a_working_folder_leaves_nothing_the_next_run_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The mechanism behind a kill at the start of the products: the working folders are being
    deleted (in a thread). ``rmtree`` may unlink the marker first; killed then, a folder left
    under its working name without its marker is one the next run must refuse to delete. The
    folder is renamed away before it is deleted, so the working name is free at every moment."""
    from autodriz.solutions import base

    work = base.prepare_workdir(tmp_path / f"{ROOT}_apriori")
    (work / "a_flt.fits").write_bytes(b"x" * 100)
    real_rmtree = shutil.rmtree

    def killed_after_the_marker(path, *args, **kwargs):
        Path(path, base.WORKDIR_MARKER).unlink()
        raise KeyboardInterrupt("killed inside rmtree")

    monkeypatch.setattr(base.shutil, "rmtree", killed_after_the_marker)
    with pytest.raises(KeyboardInterrupt):
        base.remove_workdir(work)
    monkeypatch.setattr(base.shutil, "rmtree", real_rmtree)
    assert not work.exists()  # the half-deleted folder is under its hidden removal name
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert leftovers == [f".{ROOT}_apriori.autodriz-removing"]
    # The next run takes the same folder again and sweeps the leftover.
    again = base.prepare_workdir(tmp_path / f"{ROOT}_apriori")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{ROOT}_apriori"]
    base.remove_workdir(again)
    assert list(tmp_path.iterdir()) == []
