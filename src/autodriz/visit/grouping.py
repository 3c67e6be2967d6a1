"""Grouping a visit's exposures by instrument/detector and filter; built association tables."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits

from autodriz.asn import write_asn_table
from autodriz.errors import InputError
from autodriz.inputs import Dataset, Exposure, resolve_input

logger = logging.getLogger(__name__)

#: ``ASNBUILT`` text of the association tables this module writes for loose exposures.
BUILT_BY = "autodriz visit (one filter group)"

_CALIBRATED_SUFFIXES = ("_flt.fits", "_flc.fits", "_c0m.fits")


@dataclass(frozen=True)


class VisitGroup:
    """Exposures of one instrument/detector/filter, processed as one association.

    Attributes
    ----------
    instrument_key : str
        ``INSTRUMENT/DETECTOR`` (``ACS/WFC``, ``WFC3/IR``).
    filter : str
        Filter name(s) joined by ``/`` (``F606W``; ``CLEAR*`` dropped), ``NONE`` without any.
    root : str
        Product root of the group (the association's, or ``<visit>_<filter>`` when built).
    exposures : tuple of Exposure
        The exposures, in input order.
    asn : Path or None
        The association table that holds exactly these exposures, if one was given.
    spectroscopic : bool
        Grism/prism data.
    """

    instrument_key: str
    filter: str
    root: str
    exposures: tuple[Exposure, ...]
    asn: Path | None = None
    spectroscopic: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """(instrument/detector, filter): what the visit groups by."""
        return (self.instrument_key, self.filter)

    @property
    def directory(self) -> Path:
        """Folder of the exposures (a group's exposures must share one)."""
        return self.exposures[0].paths[0].parent

    @property
    def flt_paths(self) -> tuple[Path, ...]:
        """The group's FLT (or C0M) files."""
        return tuple(e.flt for e in self.exposures if e.flt is not None)

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every calibrated file of the group (FLT and FLC)."""
        return tuple(p for e in self.exposures for p in e.paths)


def filter_label(filters: Sequence[str]) -> str:
    """Group label of a filter combination: ``("F606W",)`` → ``F606W``; none → ``NONE``."""
    return "/".join(filters) if filters else "NONE"


def default_visit_root(datasets: Sequence[Dataset]) -> str:
    """``ipppss`` of the first exposure (HST: instrument, program, visit), e.g. ``ib6o23``."""
    return datasets[0].exposures[0].rootname[:6].lower()


def group_datasets(datasets: Sequence[Dataset], visit_root: str) -> list[VisitGroup]:
    """Group resolved datasets by instrument/detector/filter (pure).

    Parameters
    ----------
    datasets : sequence of Dataset
        What :func:`collect_datasets` resolved (association tables and single exposures).
    visit_root : str
        Prefix of the product roots of groups that need a built association table.

    Returns
    -------
    list of VisitGroup
        Imaging groups first, then grism/prism groups, each in order of first appearance.

    Raises
    ------
    InputError
        An association mixes filters, an exposure is named twice, or a group's exposures lie in
        different folders (an association table can only name exposures beside it).
    """
    order: list[tuple[str, str]] = []
    members: dict[tuple[str, str], list[Exposure]] = {}
    sources: dict[tuple[str, str], list[Dataset]] = {}
    seen: dict[Path, str] = {}
    for ds in datasets:
        labels = {filter_label(e.filters) for e in ds.exposures}
        if len(labels) > 1:
            raise InputError(
                f"{ds.input.name} mixes filters ({', '.join(sorted(labels))}); a visit is grouped by "
                "filter: give the exposures (or one association per filter) instead"
            )
        key = (ds.instrument_key, labels.pop())
        for exposure in ds.exposures:
            for path in exposure.paths:
                resolved = path.resolve()
                if resolved in seen:
                    raise InputError(f"{path.name} is named twice (by {seen[resolved]} and {ds.input.name})")
                seen[resolved] = ds.input.name
        if key not in members:
            order.append(key)
            members[key] = []
            sources[key] = []
        members[key].extend(ds.exposures)
        sources[key].append(ds)

    ambiguous = {f for _, f in order if sum(1 for _, g in order if g == f) > 1}
    groups = []
    for key in order:
        exposures = tuple(members[key])
        folders = {e.paths[0].parent.resolve() for e in exposures}
        if len(folders) > 1:
            raise InputError(
                f"{key[0]} {key[1]}: exposures lie in different folders ({', '.join(map(str, sorted(folders)))}); "
                "put the exposures of one filter into one folder"
            )
        only = sources[key][0] if len(sources[key]) == 1 else None
        if only is not None and only.kind == "asn":
            root, asn = only.root, only.input
        else:
            label = key[1].lower().replace("/", "_")
            if key[1] in ambiguous:  # one filter name on two detectors: name the detector too
                label = f"{key[0].split('/')[-1].lower()}_{label}"
            root, asn = f"{visit_root}_{label}", None
        spectroscopic = any(ds.is_spectroscopic for ds in sources[key])
        groups.append(VisitGroup(key[0], key[1], root, exposures, asn, spectroscopic))
    roots = [g.root for g in groups]
    if len(set(roots)) != len(roots):
        raise InputError(f"two groups would write the same products ({', '.join(roots)})")
    return [g for g in groups if not g.spectroscopic] + [g for g in groups if g.spectroscopic]


def _is_calibrated(path: Path) -> bool:
    return path.name.lower().endswith(_CALIBRATED_SUFFIXES)


def collect_datasets(paths: Sequence[str | Path]) -> list[Dataset]:
    """Resolve association tables, FLT/FLC files and folders into datasets (reads headers only).

    A folder contributes its association tables (except those this module built on an earlier
    run) and every calibrated exposure that none of them names; an FLC whose FLT sits beside it
    travels with the FLT.

    Raises
    ------
    InputError
        Nothing usable was named, or a path cannot be resolved (see
        :func:`autodriz.inputs.resolve_input`).
    """
    datasets: list[Dataset] = []
    for raw in paths:
        path = Path(raw).expanduser().absolute()
        if not path.is_dir():
            datasets.append(resolve_input(path))
            continue
        covered: set[str] = set()
        for asn in sorted(path.glob("*_asn.fits")):
            built = str(fits.getheader(asn, 0).get("ASNBUILT", "") or "")
            if built.startswith("autodriz visit"):
                logger.info("%s: skipped, it was built by an earlier autodriz visit run", asn.name)
                continue
            ds = resolve_input(asn)
            datasets.append(ds)
            covered.update(str(p.resolve()) for e in ds.exposures for p in e.paths)
        for file in sorted(p for p in path.iterdir() if p.is_file() and _is_calibrated(p)):
            if str(file.resolve()) in covered:
                continue
            if file.name.lower().endswith("_flc.fits") and file.with_name(
                file.name[: -len("_flc.fits")] + "_flt.fits"
            ).is_file():
                continue  # picked up with its FLT
            ds = resolve_input(file)
            datasets.append(ds)
            covered.update(str(p.resolve()) for e in ds.exposures for p in e.paths)
    if not datasets:
        raise InputError("no association table or calibrated exposure (FLT/FLC) found in " + ", ".join(map(str, paths)))
    return datasets


def write_group_asn(group: VisitGroup) -> Path:
    """Association table for a group that has none, written atomically beside its exposures.

    Raises
    ------
    InputError
        ``<root>_asn.fits`` exists and was not written by this module (it is never replaced).
    """
    path = group.directory / f"{group.root}_asn.fits"
    if path.exists():
        built = str(fits.getheader(path, 0).get("ASNBUILT", "") or "")
        if not built.startswith("autodriz visit"):
            raise InputError(f"{path} exists and was not built by autodriz visit; give --visit-root to choose another name")
    instrument, _, detector = group.instrument_key.partition("/")
    tmp = path.with_name(path.name + ".autodriz-tmp")
    write_asn_table(
        tmp, group.root, [e.rootname for e in group.exposures],
        instrument=instrument, detector=detector or instrument, built_by=BUILT_BY,
    )
    with fits.open(tmp, mode="update") as hdul:
        hdul[0].header["FILENAME"] = path.name
        hdul[0].header["ASN_TAB"] = path.name
    tmp.replace(path)
    logger.info("%s %s: association table %s written for %d exposure(s) (ASNBUILT)",
                group.instrument_key, group.filter, path.name, len(group.exposures))
    return path

