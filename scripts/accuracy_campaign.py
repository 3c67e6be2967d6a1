#!/usr/bin/env python
"""Accuracy campaign: autodriz on many seeded, truth-known visits of three detectors, per group.

Every visit is simulated with the hostile options of :mod:`autodriz.simulate` on (Gaia DR3
errors drawn into the catalog and G > 21 missing, two-parameter faint stars, per-exposure pointing
and roll errors, a 5 mas distortion residual), at a random position on the sky, a random date
(ACS/WFC: 2003-2006, the packaged IDCTAB's validity, 10-13 years before the Gaia epoch; WFC3:
2010-2014) and a header pointing error of 0.1-2″ (log-uniform, random direction). Detectors:
ACS/WFC, WFC3/UVIS and WFC3/IR (:func:`autodriz.simulate.config_for_detector` gives each its
filter, PSF, noise and reference files). Field kinds:

``gaia-rich``  400 stars of 17-23 mag (~100 in the catalog) — on every detector
``hostile``    the same plus 60 galaxies no catalog lists and 5 saturated, bleeding stars (ACS/WFC)
``sparse``     50 stars of 19-24 mag (≤ 10 in the catalog) (ACS/WFC)
``crowded``    20 000 stars of 17-25 mag per visit (ACS/WFC)

The visits run as one ``autodriz batch`` campaign (ledger, resumable: run the script again and
only what is missing is simulated or processed), offline, with ``--keep-workdirs`` so that every
candidate's WCS can be compared with the truth too (except a fit verification rejected: the
pipeline removes its folder even with ``--keep-workdirs``). Printed per group (detector × field
kind): how often an a posteriori WCS was applied, median and 95th-percentile error of the chosen
WCS vs the truth, wrong choices (the chosen candidate > 5 mas worse than the best candidate that was
available, i.e. not pruned), mean wall time, and the pipeline default's median and p95 for
comparison. "Floor" is the error vs truth that no per-exposure shift + rotation + scale can remove
(:func:`autodriz.truth.linear_fit_floor`): the distortion residual's non-linear part over the chips,
which the truth has and the reference distortion model lacks. A chosen WCS cannot beat it; on
WFC3/IR's one large chip it is most of the figure.

Usage::

    python scripts/accuracy_campaign.py --visits 60 --out accuracy-campaign [--write-doc docs/accuracy.md]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table, vstack

from autodriz.simulate import DETECTORS, SimulationConfig, config_for_detector, simulate_visit
from autodriz.truth import linear_fit_floor, load_truth, visit_error

#: Field kinds: SimulationConfig fields on top of COMMON.
GROUPS: dict[str, dict] = {
    "gaia-rich": {"n_stars": 400, "mag_range": (17.0, 23.0)},
    "hostile": {"n_stars": 400, "mag_range": (17.0, 23.0), "n_galaxies": 60, "n_saturated_stars": 5},
    "sparse": {"n_stars": 50, "mag_range": (19.0, 24.0)},
    "crowded": {"n_stars": 20000, "mag_range": (17.0, 25.0)},
}
#: (detector, field kind) of visit k: k modulo this cycle. 60 visits: gaia-rich 12 per detector,
#: ACS/WFC hostile 12, sparse 6, crowded 6.
CYCLE: tuple[tuple[str, str], ...] = (
    ("ACS/WFC", "gaia-rich"), ("WFC3/UVIS", "gaia-rich"), ("WFC3/IR", "gaia-rich"), ("ACS/WFC", "hostile"),
    ("ACS/WFC", "sparse"), ("WFC3/UVIS", "gaia-rich"), ("WFC3/IR", "gaia-rich"), ("ACS/WFC", "crowded"),
    ("ACS/WFC", "gaia-rich"), ("ACS/WFC", "hostile"),
)
#: Pixels per chip by default, chosen so that 60 visits take < 1 h on two loaded cores
#: (subarrays centred on the chips; WFC3/IR's 512×512 is a quarter of its one chip).
CHIP_SHAPES: dict[str, tuple[int, int]] = {"ACS/WFC": (256, 512), "WFC3/UVIS": (256, 512), "WFC3/IR": (512, 512)}
#: Observation years drawn per detector (the packaged ACS/WFC IDCTAB is the pre-SM4 one).
YEARS: dict[str, tuple[int, int]] = {"ACS/WFC": (2003, 2007), "WFC3/UVIS": (2010, 2015), "WFC3/IR": (2010, 2015)}
COMMON: dict = {
    "gaia_dr3_errors": True,
    "no_pm_fraction": 0.2,
    "relative_error_mas": 10.0,
    "relative_rotation_arcsec": 0.5,
    "distortion_residual_mas": 5.0,
}
WRONG_CHOICE_MAS = 5.0


@dataclass(frozen=True)
class VisitPlan:
    """One seeded visit of the campaign."""

    index: int
    detector: str
    kind: str
    name: str
    config: SimulationConfig

    @property
    def group(self) -> str:
        return f"{self.detector} {self.kind}"


def plan_visits(n: int, chip_shapes: dict[str, tuple[int, int]], n_exposures: int) -> list[VisitPlan]:
    """The campaign's visits: deterministic in ``n`` (visit k is the same in every campaign)."""
    plans = []
    for k in range(n):
        rng = np.random.default_rng([k, 18])
        detector, kind = CYCLE[k % len(CYCLE)]
        amplitude = 10.0 ** rng.uniform(math.log10(100.0), math.log10(2000.0))
        angle = rng.uniform(0.0, 2.0 * math.pi)
        year = int(rng.integers(*YEARS[detector]))
        day = int(rng.integers(1, 28))
        month = int(rng.integers(1, 13))
        config = config_for_detector(
            detector,
            asn_id=f"{DETECTORS[detector].ref_folder[0].upper()}{k:05d}010",
            n_exposures=n_exposures,
            chip_shape=chip_shapes[detector],
            # Distinct sky positions > 1 degree apart: one merged catalog serves every visit.
            ra=(15.0 + 37.0 * k) % 360.0,
            dec=-60.0 + (23.0 * k) % 130.0,
            pa_v3=float(rng.uniform(0.0, 360.0)),
            pointing_error_mas=(amplitude * math.cos(angle), amplitude * math.sin(angle)),
            rotation_error_arcsec=float(rng.normal(0.0, 0.5)),
            date_obs=f"{year}-{month:02d}-{day:02d}",
            seed=1000 + k,
            **COMMON,
            **GROUPS[kind],
        )
        slug = detector.replace("/", "-").lower()
        plans.append(VisitPlan(k, detector, kind, f"v{k:03d}-{slug}-{kind}", config))
    return plans


def _simulate_one(plan: VisitPlan, visits_dir: Path) -> str:
    """Simulate one visit atomically (a half-written visit is never used); returns its name."""
    final = visits_dir / plan.name
    tmp = visits_dir / f".tmp-{plan.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    simulate_visit(tmp, plan.config)
    # The truth of the untouched inputs, kept beside them: the campaign updates the FLTs.
    tmp.rename(final)
    return plan.name


def simulate_missing(plans: Sequence[VisitPlan], visits_dir: Path, workers: int = 1) -> None:
    """Simulate the visits not on disk yet, ``workers`` at a time (each visit is seeded: same bytes)."""
    visits_dir.mkdir(parents=True, exist_ok=True)
    missing = [p for p in plans if not (visits_dir / p.name / f"{p.config.asn_id.lower()}_truth.json").exists()]
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for name in pool.map(_simulate_one, missing, [visits_dir] * len(missing)):
            print(f"simulated {name}", flush=True)


def merged_catalog(plans: Sequence[VisitPlan], visits_dir: Path, out: Path) -> Path:
    """One GAIAeDR3 catalog file of every visit's stars (they lie far apart on the sky)."""
    tables = [Table.read(visits_dir / p.name / f"{p.config.asn_id.lower()}_refcat.ecsv") for p in plans]
    folder = out / "catalogs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "GAIAeDR3.ecsv"
    vstack(tables, metadata_conflicts="silent").write(path, format="ascii.ecsv", overwrite=True)
    return path


def merged_reference_folders(plans: Sequence[VisitPlan], visits_dir: Path, out: Path) -> dict[str, Path]:
    """One ``jref``/``iref`` folder holding every visit's reference files (UVIS and IR ship different IDCTABs)."""
    folders: dict[str, Path] = {}
    for plan in plans:
        name = DETECTORS[plan.detector].ref_folder
        target = folders.setdefault(name, out / name)
        target.mkdir(parents=True, exist_ok=True)
        for f in (visits_dir / plan.name / name).iterdir():
            if f.is_file() and not (target / f.name).exists():
                shutil.copy2(f, target / f.name)
    return folders


def run_campaign(plans: Sequence[VisitPlan], visits_dir: Path, out: Path, workers: int, timeout: float) -> int:
    """``autodriz batch`` over every visit; returns its exit status."""
    manifest = out / "manifest.txt"
    manifest.write_text(
        "".join(f"visits/{p.name}/{p.config.asn_id.lower()}_asn.fits\n" for p in plans), encoding="utf-8"
    )
    catalog = merged_catalog(plans, visits_dir, out)
    refs = merged_reference_folders(plans, visits_dir, out)
    cmd = [
        sys.executable, "-m", "autodriz", "batch", str(manifest), "--workers", str(workers),
        "--timeout", str(timeout), *[a for name, folder in refs.items() for a in (f"--{name}", str(folder))],
        "--catalog", str(catalog.parent),
        "--offline", "--keep-workdirs", "--progress", "plain", "--summary-json", str(out / "summary.json"),
    ]
    print("running:", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=False).returncode


@dataclass(frozen=True)
class VisitResult:
    """What one visit gave."""

    name: str
    group: str
    pointing_error_mas: float
    default_mas: float
    floor_mas: float | None
    chosen_mas: float | None
    chosen: str | None
    chosen_kind: str | None
    best_available_mas: float | None
    best_available: str | None
    seconds: float | None
    exit_name: str | None

    @property
    def wrong_choice(self) -> bool:
        return (
            self.chosen_mas is not None
            and self.best_available_mas is not None
            and self.chosen_mas > self.best_available_mas + WRONG_CHOICE_MAS
        )


def _candidate_error(visit: Path, asn: str, name: str, truth: dict) -> float | None:
    """Error vs truth of one candidate's working copies (kept by ``--keep-workdirs``)."""
    folders = [visit / f"{asn}_{name}"] + [d for d in visit.glob(f"{asn}_*/{name}") if d.is_dir()]
    for folder in folders:
        flts = sorted(folder.glob("*_flt.fits"))
        if flts:
            return visit_error(flts, truth).rms_mas
    return None


def measure(plan: VisitPlan, visits_dir: Path) -> VisitResult:
    """Compare what the campaign delivered (and every candidate) with the truth."""
    visit = visits_dir / plan.name
    asn = plan.config.asn_id.lower()
    truth = load_truth(visit / f"{asn}_truth.json")
    report_path = visit / f"{asn}_report.json"
    trailer = visit / f"{asn}.tra"
    seconds = exit_name = None
    if trailer.exists():
        verdicts = re.findall(r"AUTODRIZ-VERDICT (\w+) .*seconds=([\d.]+)", trailer.read_text(errors="replace"))
        if verdicts:
            exit_name, seconds = verdicts[-1][0], float(verdicts[-1][1])
    chosen = chosen_kind = best = None
    chosen_mas = best_mas = None
    if report_path.exists():
        report = json.loads(report_path.read_text())
        errors = {}
        for cand in report["candidates"]:
            if cand["verdict"] == "pruned":
                continue
            err = _candidate_error(visit, asn, cand["name"], truth)
            if err is not None:
                errors[cand["name"]] = err
            if cand["verdict"] == "chosen":
                chosen, chosen_kind = cand["name"], cand["kind"]
        if chosen is not None:
            chosen_mas = visit_error(sorted(visit.glob("*_flt.fits")), truth).rms_mas
        if errors:
            best = min(errors, key=errors.__getitem__)
            best_mas = errors[best]
    delivered = sorted(visit.glob("*_flt.fits"))
    # Any WCS with the pipeline's distortion model has the same floor (it is what a similarity
    # per exposure cannot remove), so the delivered files give it whatever was chosen.
    floor_mas = linear_fit_floor(delivered, truth).rms_mas if delivered else None
    return VisitResult(
        name=plan.name, group=plan.group, pointing_error_mas=float(np.hypot(*plan.config.pointing_error_mas)),
        default_mas=float(truth["expected_default_error_mas"]), floor_mas=floor_mas, chosen_mas=chosen_mas,
        chosen=chosen,
        chosen_kind=chosen_kind, best_available_mas=best_mas, best_available=best, seconds=seconds,
        exit_name=exit_name,
    )


def _pct(values: Sequence[float], q: float) -> str:
    return f"{np.percentile(values, q):.1f}" if values else "-"


def summary_table(results: Sequence[VisitResult]) -> str:
    """One Markdown table: per group and for all visits."""
    head = (
        "| group | visits | a posteriori applied | chosen median (mas) | chosen p95 (mas) | floor median (mas) "
        "| wrong choices | default median (mas) | default p95 (mas) | mean wall (s) |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    groups = list(dict.fromkeys(f"{d} {k}" for d in DETECTORS for k in GROUPS))
    for group in [*groups, "all"]:
        rs = [r for r in results if group in ("all", r.group)]
        if not rs:
            continue
        chosen = [r.chosen_mas for r in rs if r.chosen_mas is not None]
        default = [r.default_mas for r in rs]
        floor = [r.floor_mas for r in rs if r.floor_mas is not None]
        secs = [r.seconds for r in rs if r.seconds is not None]
        applied = sum(r.chosen_kind == "aposteriori" for r in rs)
        wall = f"{np.mean(secs):.0f}" if secs else "-"
        rows.append(
            f"| {group} | {len(rs)} | {applied}/{len(rs)} ({100.0 * applied / len(rs):.0f} %) | {_pct(chosen, 50)} "
            f"| {_pct(chosen, 95)} | {_pct(floor, 50)} | {sum(r.wrong_choice for r in rs)} | {_pct(default, 50)} "
            f"| {_pct(default, 95)} "
            f"| {wall} |"
        )
    return head + "\n".join(rows) + "\n"


def details_table(results: Sequence[VisitResult]) -> str:
    """Every visit on one line (for explaining failures)."""
    lines = ["| visit | pointing error (mas) | exit | chosen | chosen (mas) | floor (mas) | best available | best (mas) "
             "| default (mas) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r.name} | {r.pointing_error_mas:.0f} | {r.exit_name or '-'} | {r.chosen or '-'} "
            f"| {'-' if r.chosen_mas is None else f'{r.chosen_mas:.1f}'} "
            f"| {'-' if r.floor_mas is None else f'{r.floor_mas:.1f}'} | {r.best_available or '-'} "
            f"| {'-' if r.best_available_mas is None else f'{r.best_available_mas:.1f}'} | {r.default_mas:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _finished(trailer: Path) -> bool:
    """Whether a visit's run has ended (its trailer has a verdict)."""
    return trailer.exists() and "AUTODRIZ-VERDICT" in trailer.read_text(errors="replace")


DOC_BEGIN = "<!-- accuracy_campaign.py: begin -->"
DOC_END = "<!-- accuracy_campaign.py: end -->"


def write_doc(path: Path, generated: str) -> None:
    """Put ``generated`` between the markers of ``path``, keeping the text written around them
    (the explanation of each failure mode is written by hand); a file without markers is replaced."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if DOC_BEGIN in old and DOC_END in old:
        head, rest = old.split(DOC_BEGIN, 1)
        tail = rest.split(DOC_END, 1)[1]
    else:
        head, tail = "# Accuracy campaign\n\n", "\n"
    path.write_text(f"{head}{DOC_BEGIN}\n{generated}{DOC_END}{tail}", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--visits", type=int, default=60, help="number of visits (default 60)")
    p.add_argument("--out", type=Path, default=Path("accuracy-campaign"), help="campaign folder (resumable)")
    p.add_argument("--workers", type=int, default=1, help="autodriz batch workers (default 1)")
    p.add_argument("--chip-shape", nargs=3, action="append", default=[], metavar=("DETECTOR", "NY", "NX"),
                   help="pixels per chip of one detector (repeatable; default "
                        + ", ".join(f"{d} {s[0]} {s[1]}" for d, s in CHIP_SHAPES.items()) + ")")
    p.add_argument("--exposures", type=int, default=2, help="exposures per visit (default 2)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per visit")
    p.add_argument("--write-doc", type=Path, help="also write the tables into this Markdown file")
    p.add_argument("--measure-only", action="store_true",
                   help="neither simulate nor run: measure the visits the campaign has finished so far")
    args = p.parse_args(argv)

    out = args.out.resolve()
    visits_dir = out / "visits"
    shapes = dict(CHIP_SHAPES)
    for det, ny, nx in args.chip_shape:
        if det not in DETECTORS:
            p.error(f"--chip-shape: unknown detector {det!r}; use one of {sorted(DETECTORS)}")
        shapes[det] = (int(ny), int(nx))
    plans = plan_visits(args.visits, shapes, args.exposures)
    if args.measure_only:
        code = 0
        plans = [p for p in plans if _finished(visits_dir / p.name / f"{p.config.asn_id.lower()}.tra")]
        print(f"measuring the {len(plans)} visit(s) finished so far", flush=True)
    else:
        simulate_missing(plans, visits_dir, args.workers)
        code = run_campaign(plans, visits_dir, out, args.workers, args.timeout)
    results = [measure(plan, visits_dir) for plan in plans]
    table = summary_table(results)
    print(table)
    print(details_table(results))
    (out / "results.json").write_text(json.dumps([r.__dict__ for r in results], indent=1), encoding="utf-8")
    if args.write_doc:
        generated = (
            f"`python scripts/accuracy_campaign.py --visits {args.visits} --exposures {args.exposures}` "
            f"(chips: {', '.join(f'{d} {s[0]}×{s[1]}' for d, s in shapes.items())}; see the script's "
            "docstring for the visits). Errors are RMS over each chip's pixel grid of the chosen WCS vs the "
            "truth; a wrong choice is a chosen candidate > 5 mas worse than the best candidate that was "
            "not pruned.\n\n" + table + "\n## Every visit\n\n" + details_table(results)
        )
        write_doc(args.write_doc, generated)
    return 0 if code in (0, 9) else code


if __name__ == "__main__":
    raise SystemExit(main())
