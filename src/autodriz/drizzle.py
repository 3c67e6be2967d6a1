"""Final drizzle products with AstroDrizzle, run in a child process inside a candidate's folder.

Every product is checked against what it was meant to hold before anyone sees it.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from autodriz.childproc import FILE_MARK, ChildError, ChildResult, reference_env, run_child
from autodriz.errors import DrizzleError
from autodriz.hstio import chip_shape, chip_wcs, sci_extensions
from autodriz.logs import CONSOLE
from autodriz.reffiles import names_a_file, resolve_reference
from autodriz.weightmap import WeightCheck

logger = logging.getLogger(__name__)

#: Parameters we always set, whatever the MDRIZTAB or config says: reset and flag cosmic rays
#: with DQ bit 4096 (as the pipeline does), one self-contained product file, no backups of the
#: (already copied) inputs, intermediate files removed.
FORCED_PARAMETERS: Mapping[str, Any] = MappingProxyType({
    "build": True,
    "preserve": False,
    "clean": True,
    "in_memory": False,
    "resetbits": 4096,
    "crbit": 4096,
    "context": True,
})


@dataclass(frozen=True)
class DrizzleRun:
    """One AstroDrizzle run and what it made."""

    product: Path
    inputs: tuple[Path, ...]
    parameter_source: str
    seconds: float
    #: The result of the job run after AstroDrizzle in the same child (``then``), or its error.
    then_result: Mapping[str, Any] | None = None
    then_error: str | None = None
    #: The child's log (AstroDrizzle's output and the follow-up job's).
    log: Path | None = None
    #: What the product says it holds: its ``D###DATA`` values (``<file>[sci,<n>]``), in order.
    drizzled: tuple[str, ...] = ()
    #: The product's weight-map check, made by the child that drizzled it (``sregion`` runs).
    weight_check: WeightCheck | None = None


def choose_parameters(
    first_exposure: Path,
    folders: Mapping[str, Path | None],
    defaults: Mapping[str, Any],
) -> tuple[dict[str, Any], str]:
    """Pick AstroDrizzle parameters: the MDRIZTAB named in the header if found, else ``defaults``.

    Returns the parameters and a sentence saying where they came from.
    """
    # fits.getval has no default: a header without the keyword raises KeyError.
    value = fits.getheader(first_exposure, 0).get("MDRIZTAB")
    path = resolve_reference(value, folders)
    if names_a_file(path):
        params = {"mdriztab": True, **FORCED_PARAMETERS}
        return params, f"MDRIZTAB {value} ({path})"
    why = "not set" if value is None else f"{value} not found"
    logger.warning(
        "MDRIZTAB %s: using autodriz's built-in AstroDrizzle defaults (config/astrodrizzle.toml), "
        "which mirror the instrument's MDRIZTAB", why
    )
    params = {**dict(defaults), **FORCED_PARAMETERS, "mdriztab": False}
    return params, f"config/astrodrizzle.toml defaults (MDRIZTAB {why})"


def run_astrodrizzle(
    inputs: list[Path],
    output_root: str,
    workdir: Path,
    folders: Mapping[str, Path | None],
    defaults: Mapping[str, Any],
    *,
    num_cores: int = 1,
    timeout: float = 3600.0,
    then: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    sregion: bool = False,
) -> DrizzleRun:
    """Drizzle ``inputs`` (files inside ``workdir``) into ``workdir/<output_root>_drz|drc.fits``.

    ``then``: a child job to run in the same child process once AstroDrizzle has succeeded (its
    outcome is in the returned run's ``then_result``/``then_error``; it does not count in
    ``seconds``).

    ``sregion``: the child writes the product's ``S_REGION`` (:func:`autodriz.delivery.add_sregion`)
    right after AstroDrizzle, before the product goes to disk; it does not count in ``seconds``
    either (the benchmark's yardstick is AstroDrizzle alone).

    ``overrides`` are AstroDrizzle parameters that win over the MDRIZTAB and the defaults (but
    not over :data:`FORCED_PARAMETERS`), e.g. the ``final_*`` output grid that
    :mod:`autodriz.visit` shares between the filters of a visit; AstroDrizzle re-applies
    parameters given by the caller after reading the MDRIZTAB.

    The product is checked before it is returned (:func:`check_product`): its NDRIZIM and
    ``D###DATA`` keywords must list every chip of ``inputs`` and its frame must fit their
    footprint. AstroDrizzle drops an input it cannot use (an exposure without SCI, …) with no
    more than a log line; the run must not publish such a product as the whole dataset.

    Raises
    ------
    DrizzleError
        AstroDrizzle failed, timed out, wrote no product, or wrote one that fails the check (it
        is then renamed ``<product>.rejected``).
    """
    params, source = choose_parameters(inputs[0], folders, defaults)
    if overrides:
        clash = sorted(set(overrides) & set(FORCED_PARAMETERS))
        if clash:
            raise ValueError(f"AstroDrizzle parameters {clash} cannot be overridden")
        params.update(overrides)
        source += f"; overridden by the caller: {', '.join(sorted(overrides))}"
    params["num_cores"] = num_cores
    kind = "drc" if inputs[0].name.endswith("_flc.fits") else "drz"
    logger.info(
        "AstroDrizzle: %d exposures → %s_%s.fits; parameters from %s",
        len(inputs), output_root, kind, source,
    )
    job: dict[str, Any] = {
        "task": "astrodrizzle",
        "input": [p.name for p in inputs],
        "output": output_root,
        "params": params,
        # Not the child's own stdout log (astrodrizzle_<kind>.log): two writers would clobber it.
        "runfile": f"astrodrizzle_{kind}_runfile.log",
    }
    if sregion:
        job["sregion"] = True
    if then is not None:
        job["then"] = dict(then)
    try:
        result = run_child(
            job,
            cwd=workdir,
            env=reference_env(folders),
            timeout=timeout,
            label=f"astrodrizzle_{kind}",
        )
    except ChildError as exc:
        # AstroDrizzle does not say which input broke it: name all of this run's inputs.
        raise DrizzleError(
            f"AstroDrizzle failed for {output_root}_{kind} from {', '.join(p.name for p in inputs)}: {exc.error_line}",
            child_log=exc.log_path,
        ) from exc
    product = workdir / f"{output_root}_{kind}.fits"
    if not product.is_file():
        raise DrizzleError(
            f"AstroDrizzle finished but wrote no {product.name} (it made: {result.result.get('products')})"
        )
    then_seconds = float(result.result.get("then_seconds", 0.0))
    seconds = result.seconds - then_seconds - float(result.result.get("sregion_seconds", 0.0))
    logger.info("AstroDrizzle made %s in %.1f s", product.name, seconds, extra=CONSOLE)
    if sregion:
        value = dict(result.result.get("sregion") or {}).get(product.name)
        if value:
            logger.info("%s: S_REGION with %d polygon(s) around the WHT > 0 area", product.name, value.count("POLYGON"))
        else:
            logger.warning("%s: no pixel has weight > 0; no S_REGION", product.name)
    contents = read_product_contents(product)
    problems = check_product(
        contents, expected_chips(inputs), input_footprint(inputs, product), requested_shape(params)
    )
    if problems:
        # Nothing that looks finished may stay under the product's name, even in a kept workdir.
        rejected = product.replace(product.with_name(product.name + ".rejected"))
        raise DrizzleError(
            f"{product.name} does not hold what was drizzled: {'; '.join(problems)} "
            f"(kept as {rejected.name} in the working folder for inspection, not published)",
            child_log=result.log_path,
        )
    logger.info(
        "%s holds every chip it was given: %d chip(s) of %d exposure(s) (NDRIZIM %s), frame %dx%d",
        product.name, len(contents.drizzled), len({d.split("[")[0] for d in contents.drizzled}),
        contents.ndrizim, contents.shape[1], contents.shape[0],
    )
    # The list itself goes to the trailer (and the report); the console keeps one line per fact.
    logger.debug("%s D###DATA: %s", product.name, ", ".join(contents.drizzled))
    checks = dict(result.result.get("weight_checks") or {})
    return DrizzleRun(
        product, tuple(inputs), source, seconds,
        then_result=result.result.get("then"), then_error=_then_error(result), log=result.log_path,
        drizzled=contents.drizzled,
        weight_check=WeightCheck(**checks[product.name]) if product.name in checks else None,
    )


# --------------------------------------------------------------------------------------------
# the product check: does the product hold what the run meant to drizzle?

#: ``D###DATA`` value: ``<file>[sci,<extver>]`` (AstroDrizzle writes the extension in lower case).
_DATA_VALUE = re.compile(r"^\s*(?P<file>[^\[]+?)\s*\[\s*sci\s*,\s*(?P<ver>\d+)\s*\]\s*$", re.IGNORECASE)

#: The product frame may exceed the inputs' footprint by this fraction plus
#: :data:`FRAME_MARGIN_PIX` (AstroDrizzle rounds the frame up and pads it by a pixel or two;
#: the distortion it applies is the one the footprint is computed with).
FRAME_TOLERANCE = 0.05
FRAME_MARGIN_PIX = 10.0


@dataclass(frozen=True)
class ProductContents:
    """What a drizzled product's headers say it holds."""

    #: ``NDRIZIM`` of the primary header (None when absent).
    ndrizim: int | None
    #: ``D###DATA`` values in order, e.g. ``ib6o23rtq_flt.fits[sci,1]``.
    drizzled: tuple[str, ...]
    #: SCI array shape (NAXIS2, NAXIS1).
    shape: tuple[int, int]


@dataclass(frozen=True)
class Footprint:
    """The inputs' chip corners in the product's pixel frame (0-based pixel centres)."""

    xmin: float
    xmax: float
    ymin: float
    ymax: float

    @property
    def shape(self) -> tuple[float, float]:
        """Extent (ny, nx) in product pixels."""
        return (self.ymax - self.ymin + 1.0, self.xmax - self.xmin + 1.0)


def read_product_contents(product: Path) -> ProductContents:
    """Read NDRIZIM, the ``D###DATA`` list and the SCI shape of a DRZ/DRC (headers only)."""
    with fits.open(product, memmap=False, lazy_load_hdus=True) as hdul:
        primary = hdul[0].header
        sci = hdul["SCI"].header
        keys = sorted(k for k in primary if re.fullmatch(r"D\d{3}DATA", k))
        ndrizim = primary.get("NDRIZIM")
        return ProductContents(
            ndrizim=int(ndrizim) if ndrizim is not None else None,
            drizzled=tuple(str(primary[k]).strip() for k in keys),
            shape=(int(sci.get("NAXIS2", 0)), int(sci.get("NAXIS1", 0))),
        )


def expected_chips(inputs: Sequence[Path]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``(file name, SCI EXTVERs)`` of every input: what AstroDrizzle must drizzle.

    A file without SCI has no EXTVER but was still meant to be drizzled; the check says so.
    """
    chips = []
    for path in inputs:
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
            chips.append((path.name, tuple(extver for _, extver in sci_extensions(hdul))))
    return tuple(chips)


def input_footprint(inputs: Sequence[Path], product: Path) -> Footprint | None:
    """Bounding box of the inputs' chips (corners and edge midpoints, with their distortion) in
    the product's pixel frame; None when a WCS cannot be read (the NDRIZIM check still runs)."""
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    try:
        with warnings.catch_warnings():
            # HST headers carry keywords astropy "fixes" (DATE-OBS format, …): not our concern here.
            warnings.simplefilter("ignore", FITSFixedWarning)
            out = WCS(fits.getheader(product, "SCI"))
            for path in inputs:
                with fits.open(path, memmap=False) as hdul:
                    for index, _ in sci_extensions(hdul, images_only=True):
                        ny, nx = chip_shape(hdul[index].header)
                        px = np.array([0, (nx - 1) / 2, nx - 1, nx - 1, nx - 1, (nx - 1) / 2, 0, 0], float)
                        py = np.array([0, 0, 0, (ny - 1) / 2, ny - 1, ny - 1, ny - 1, (ny - 1) / 2], float)
                        ra, dec = chip_wcs(hdul, index).all_pix2world(px, py, 0)
                        x, y = out.all_world2pix(ra, dec, 0)
                        xs.append(x)
                        ys.append(y)
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("cannot compute the inputs' footprint in %s's frame (%s): frame size not checked", product.name, exc)
        return None
    if not xs:
        return None
    x, y = np.concatenate(xs), np.concatenate(ys)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return None
    return Footprint(float(x.min()), float(x.max()), float(y.min()), float(y.max()))


def requested_shape(params: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """``(final_outny, final_outnx)`` the caller asked for, None where AstroDrizzle chooses."""
    def size(key: str) -> int | None:
        value = params.get(key)
        try:
            return int(value) if value not in (None, "", "INDEF") and int(value) > 0 else None
        except (TypeError, ValueError):
            return None

    return size("final_outny"), size("final_outnx")


def check_product(
    contents: ProductContents,
    expected: Sequence[tuple[str, Sequence[int]]],
    footprint: Footprint | None,
    requested: tuple[int | None, int | None] = (None, None),
) -> list[str]:
    """What is missing or wrong in a product, compared with what was meant to be drizzled.

    Parameters
    ----------
    contents : ProductContents
        The product's NDRIZIM, ``D###DATA`` list and frame shape.
    expected : sequence of (str, sequence of int)
        ``(file name, SCI EXTVERs)`` of every file given to AstroDrizzle.
    footprint : Footprint or None
        The inputs' chips in the product frame (None: frame not checked).
    requested : (int or None, int or None)
        ``final_outny``/``final_outnx`` given to AstroDrizzle; the frame must have that size.

    Returns
    -------
    list of str
        One sentence per problem; empty when the product is what it says.
    """
    problems = []
    drizzled = []
    for value in contents.drizzled:
        match = _DATA_VALUE.match(value)
        drizzled.append((Path(match["file"]).name.lower(), int(match["ver"])) if match else (value.lower(), 0))
    want = [(name.lower(), ver) for name, vers in expected for ver in vers]
    names = [name.lower() for name, _ in expected]
    absent = [n for n in names if n not in {d for d, _ in drizzled}]
    if absent:
        problems.append(
            f"exposure(s) {', '.join(absent)} meant to be drizzled are not in it "
            f"(it lists {len(drizzled)} chip(s) of {len(set(d for d, _ in drizzled))} of the "
            f"{len(names)} exposures: {', '.join(contents.drizzled) or 'none'})"
        )
    missing = [f"{n}[sci,{v}]" for n, v in want if (n, v) not in drizzled and n not in absent]
    extra = [f"{n}[sci,{v}]" if v else n for n, v in drizzled if (n, v) not in want]
    if missing:
        problems.append(f"chip(s) meant to be drizzled are not in it: {', '.join(missing)}")
    if extra:
        problems.append(f"it lists chip(s) that were not meant to be drizzled: {', '.join(extra)}")
    if contents.ndrizim != len(want):
        problems.append(f"NDRIZIM = {contents.ndrizim}, but {len(want)} chip(s) were meant to be drizzled")
    ny, nx = contents.shape
    want_ny, want_nx = requested
    for axis, got, asked in (("NAXIS1", nx, want_nx), ("NAXIS2", ny, want_ny)):
        if asked is not None and got != asked:
            problems.append(f"{axis} = {got}, but final_out{'nx' if axis == 'NAXIS1' else 'ny'} = {asked} was asked for")
    if footprint is not None:
        fny, fnx = footprint.shape
        for axis, got, span, low, high in (
            ("NAXIS1", nx, fnx, footprint.xmin, footprint.xmax),
            ("NAXIS2", ny, fny, footprint.ymin, footprint.ymax),
        ):
            slack = FRAME_TOLERANCE * span + FRAME_MARGIN_PIX
            if low < -slack or high > got - 1 + slack:
                problems.append(
                    f"the inputs' footprint ({low:.0f} to {high:.0f} along {axis}) does not fit in the "
                    f"{got}-pixel frame: part of the data was cut off"
                )
            elif (asked := want_nx if axis == "NAXIS1" else want_ny) is None and got > span + slack:
                problems.append(
                    f"{axis} = {got}, but the inputs' footprint spans {math.ceil(span)} pixels: the frame "
                    "is not the one the inputs define"
                )
    return problems


def _then_error(result: ChildResult) -> str | None:
    """The follow-up job's error, naming the file it was working on (its last FILE_MARK line)."""
    error = result.result.get("then_error")
    if not error:
        return None
    lines = result.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    marks = [ln[len(FILE_MARK):].strip() for ln in lines if ln.startswith(FILE_MARK)]
    return f"{Path(marks[-1]).name}: {error}" if marks else error


def _link_or_copy(src: Path, dest: Path) -> Path:
    """Hard-link ``src`` to ``dest`` (same data, no copy), or copy when links are impossible."""
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
    return dest


def _after_final_drizzle(
    followup: Mapping[str, Any] | None, group: Sequence[Path], inputs: Sequence[Path]
) -> dict[str, Any] | None:
    """The follow-up job, told which files AstroDrizzle drizzled and with which CR bit.

    AstroDrizzle writes its cosmic-ray flags into the DQ of the files it drizzles; a group
    drizzled in a subfolder works on links of the working copies that AstroDrizzle may have
    rewritten (and so unlinked), so the follow-up must read the files AstroDrizzle was given.
    """
    if followup is None:
        return None
    return {
        **followup,
        "final_drizzle": {
            "crbit": FORCED_PARAMETERS["crbit"],
            "inputs": {str(copy): str(used) for copy, used in zip(group, inputs, strict=True)},
        },
    }


def run_final_drizzles(
    groups: Sequence[Sequence[Path]],
    output_root: str,
    workdir: Path,
    folders: Mapping[str, Path | None],
    defaults: Mapping[str, Any],
    *,
    num_cores: int = 1,
    timeout: float = 3600.0,
    then: Sequence[Mapping[str, Any] | None] = (),
    overrides: Mapping[str, Any] | None = None,
    sregion: bool = False,
) -> list[DrizzleRun]:
    """The final products: one AstroDrizzle run per group (FLTs → DRZ, FLCs → DRC).

    ``then[k]``, if given, is a child job run after group k's AstroDrizzle in the same child
    (it receives ``final_drizzle``: the CR bit and the files AstroDrizzle drizzled, see
    :func:`autodriz._child._apply_headerlets`); ``overrides`` (AstroDrizzle parameters for every
    run) and ``sregion`` are as in :func:`run_astrodrizzle`.

    With ``num_cores`` ≥ 2 and two groups, the runs go side by side, each in its own child
    process with ``num_cores // 2`` AstroDrizzle cores: DRZ and DRC share nothing but the WCS.
    Every group after the first runs in a subfolder of ``workdir`` on hard links of its
    inputs, so that intermediate files of the same output root (median, masks, logs) can never
    collide.

    Raises
    ------
    DrizzleError
        A run failed; the other runs were waited for (no orphan children), their products stay
        in ``workdir`` (not published).
    """
    followups = list(then) + [None] * (len(groups) - len(then))
    jobs: list[tuple[list[Path], Path, Mapping[str, Any] | None]] = []
    for group, followup in zip(groups, followups, strict=True):
        if not group:
            continue
        if not jobs:
            inputs = list(group)
            cwd = workdir
        else:
            cwd = workdir / f"drizzle{len(jobs) + 1}"
            cwd.mkdir(exist_ok=True)
            inputs = [_link_or_copy(p, cwd / p.name) for p in group]
        jobs.append((inputs, cwd, _after_final_drizzle(followup, group, inputs)))
    side_by_side = min(len(jobs), max(1, num_cores))
    cores_each = max(1, num_cores // side_by_side)

    def one(job: tuple[list[Path], Path, Mapping[str, Any] | None]) -> DrizzleRun:
        inputs, cwd, followup = job
        return run_astrodrizzle(
            inputs, output_root, cwd, folders, defaults, num_cores=cores_each, timeout=timeout, then=followup,
            overrides=overrides, sregion=sregion,
        )

    if side_by_side <= 1:
        return [one(job) for job in jobs]
    logger.info(
        "%d AstroDrizzle runs side by side (num_cores=%d: %d core(s) each)", len(jobs), num_cores, cores_each
    )
    with ThreadPoolExecutor(max_workers=side_by_side, thread_name_prefix="astrodrizzle") as pool:
        futures = [pool.submit(one, job) for job in jobs]
        wait(futures)
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]
    return [f.result() for f in futures]
