"""The vocabulary of reference catalogs: specs, regions, results, errors and ``[catalogs]`` settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from astropy.table import Table

from autodriz.errors import AutodrizError
from autodriz.exitcodes import ExitCode

#: File extensions a catalog file may have (looked for in catalog folders).
CATALOG_EXTENSIONS: tuple[str, ...] = (".ecsv", ".cat", ".csv", ".txt", ".dat", ".fits", ".fit")

#: MAST's catalog web service, as drizzlepac's ``haputils.astrometric_utils`` (``DEF_CAT_URL``).
MAST_URL = "https://gsss.stsci.edu/webservices"


class CatalogServiceError(AutodrizError):
    """A catalog service was unreachable and ``strict_services`` asks for that to be an error."""

    exit_code = ExitCode.WCS_FAILED


class ServiceUnavailable(RuntimeError):
    """A service request failed or timed out (message says which)."""


class CatalogNotServed(LookupError):
    """The service does not provide this catalog (the service itself may be fine)."""


@dataclass(frozen=True)
class CatalogSpec:
    """What we know about one named catalog (``[catalog.<NAME>]`` in aposteriori.toml).

    Attributes
    ----------
    name : str
        Canonical name, as written into WCSNAME (``GAIAeDR3``).
    vizier : str or None
        VizieR catalog id for the network service (None: no service).
    mast : str or None
        Name of the catalog at MAST's catalog web service (``CAT=``; None: not served there).
    columns : tuple of str
        VizieR columns to fetch (``*`` for the default set).
    epoch : float or None
        Epoch of the positions (decimal year) when the table has no epoch column.
    error_mas : float
        Typical per-axis position error at ``epoch``, mas (used when the table has no error
        columns).
    pm_error_mas_yr : float
        Typical proper-motion error, mas/yr (grows the error away from ``epoch``).
    mag_column : str or None
        VizieR magnitude column: the service returns the brightest stars first, so that a
        dense field is cut at the faint end, not at an arbitrary row.
    mag_limit : float or None
        Faintest magnitude asked for (stars fainter than HST's detections add only false
        matches).
    """

    name: str
    vizier: str | None = None
    mast: str | None = None
    columns: tuple[str, ...] = ("*",)
    epoch: float | None = None
    error_mas: float = 50.0
    pm_error_mas_yr: float = 1.0
    mag_column: str | None = None
    mag_limit: float | None = None


@dataclass(frozen=True)
class Region:
    """A cone on the sky, degrees."""

    ra: float
    dec: float
    radius: float


@dataclass(frozen=True)
class ReferenceCatalog:
    """A reference catalog ready for fitting.

    Attributes
    ----------
    name : str
        Catalog name (``GAIAeDR3``, ``SDSS``, ``USER`` …).
    table : astropy.table.Table
        Normalised columns (see module notes), positions at ``epoch`` when ``has_pm``.
    origin : str
        Where it came from: ``file:…``, ``folder:…``, ``cache:…``, ``service:…``.
    has_pm : bool
        Proper motions were available and applied.
    epoch : float or None
        Epoch the positions refer to after propagation (None: unknown).
    catalog_epoch : float or None
        Epoch of the catalog's own positions.
    expected_error_mas : float
        Expected per-star position error (total, both axes) at the observation epoch, mas.
    notes : tuple of str
        Facts worth reporting (missing magnitudes, epoch handling …).
    """

    name: str
    table: Table
    origin: str
    has_pm: bool
    epoch: float | None
    catalog_epoch: float | None
    expected_error_mas: float
    notes: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description for the report."""
        return {
            "catalog": self.name,
            "origin": self.origin,
            "n_stars": len(self.table),
            "has_pm": self.has_pm,
            "epoch": self.epoch,
            "catalog_epoch": self.catalog_epoch,
            "expected_error_mas": round(self.expected_error_mas, 3),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class CatalogUnavailable:
    """A catalog that could not be obtained, and why."""

    name: str
    reason: str
    seconds: float = 0.0


class CatalogService(Protocol):
    """A network service that returns a catalog around a region (raises ServiceUnavailable)."""

    description: str

    def query(self, spec: CatalogSpec, region: Region, timeout: float, epoch: float | None = None) -> Table:
        """Stars around ``region``; ``epoch`` is the observation's, for services that propagate
        proper motions themselves (they then set ``meta["positions_epoch"]``)."""


@dataclass(frozen=True)
class CatalogConfig:
    """``[catalogs]`` and ``[catalog.*]`` of aposteriori.toml."""

    order: tuple[str, ...] = ("GAIAeDR3", "GAIADR3", "GAIADR2")
    specs: Mapping[str, CatalogSpec] = field(default_factory=dict)
    vizier_server: str = "vizier.cds.unistra.fr"
    mast_url: str = MAST_URL
    unknown_pm_mas_yr: float = 5.0
    max_gap_without_pm_yr: float = 5.0
    max_reference_stars: int = 3000
    footprint_margin_arcsec: float = 10.0

    @classmethod
    def from_toml(cls, data: Mapping[str, Any]) -> CatalogConfig:
        cats = dict(data.get("catalogs", {}))
        specs = {}
        for name, values in dict(data.get("catalog", {})).items():
            values = dict(values)
            if "columns" in values:
                values["columns"] = tuple(values["columns"])
            specs[name] = CatalogSpec(name=name, **values)
        return cls(
            order=tuple(cats.get("order", cls.order)),
            specs=specs,
            vizier_server=str(cats.get("vizier_server", cls.vizier_server)),
            mast_url=str(cats.get("mast_url", cls.mast_url)),
            unknown_pm_mas_yr=float(cats.get("unknown_pm_mas_yr", cls.unknown_pm_mas_yr)),
            max_gap_without_pm_yr=float(cats.get("max_gap_without_pm_yr", cls.max_gap_without_pm_yr)),
            max_reference_stars=int(cats.get("max_reference_stars", cls.max_reference_stars)),
            footprint_margin_arcsec=float(cats.get("footprint_margin_arcsec", cls.footprint_margin_arcsec)),
        )
