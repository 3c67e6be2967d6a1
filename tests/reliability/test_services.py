"""Every network service failure costs at most its timeout and falls through to the next source.

The matrix: {refused, hanging, garbage answer, empty answer} × {catalog service (VizieR through
astroquery, HTTPS), astrometry database (HTTP)}, each against the loopback fake of
``conftest.fake_service``. The refused/silent-port cases of ``tests/test_catalogs.py`` and
``tests/test_astrometrydb.py`` test the clients alone; here each case also shows that the
stage goes on with the source after the service: a catalog from the user's folder, the a
priori solution embedded in the exposures.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from autodriz import catalogs as cm
from autodriz.catalogs import services as catalog_services
from autodriz.cli import main
from autodriz.config import Settings
from autodriz.exitcodes import ExitCode
from autodriz.inputs import resolve_input
from autodriz.simulate import EXACT_WORLD, SimulatedVisit, SimulationConfig, simulate_visit
from autodriz.astrometry.config import load_aposteriori_config
from autodriz.solutions.apriori import find_apriori_solutions
from autodriz.solutions.base import Candidate, copy_exposures, prepare_workdir

import fakeservice
from fakeservice import FAILURES, FakeService

pytestmark = [
    pytest.mark.filterwarnings("ignore:Some non-standard WCS keywords were excluded"),
    pytest.mark.filterwarnings("ignore:The WCS transformation has more axes"),
]


@pytest.fixture
def fake_service(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeService]]:
    """``fake_service("hang", tls=True)``: a loopback fake service, stopped after the test."""
    yield from fakeservice.fake_services(monkeypatch)


TIMEOUT = 1.5
#: Scheduling slack on a loaded 2-core machine; a second try or a per-request (not shared)
#: budget would cost a whole timeout more and still fail.
MARGIN = 0.5
SPECS = load_aposteriori_config("ACS/WFC").catalogs.specs
REGION = cm.Region(290.2211, 37.7875, 0.03)
ORDER = ["GAIAeDR3", "GAIADR3", "GAIADR2"]
_RealVizier = cm.VizierService

#: What the reason given for the service's catalog must say, per behaviour.
CATALOG_REASON = {
    "refuse": "refused",
    # The deadline and requests' own read timeout are the same: either may speak first.
    "hang": rf"no answer within {TIMEOUT:g} s|read timed out\. \(read timeout={TIMEOUT:g}\)",
    "garbage": r"not a votable",
    "empty": "returned no star",
}


def _write_catalog(path: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(1)
    Table({
        "ra": REGION.ra + rng.uniform(-0.01, 0.01, n),
        "dec": REGION.dec + rng.uniform(-0.01, 0.01, n),
        "mag": rng.uniform(16, 20, n),
    }).write(path, format="ascii.ecsv")
    return path


@pytest.mark.parametrize("behaviour", FAILURES)
def test_catalog_service_failure_is_bounded_and_the_folder_still_serves(behaviour, fake_service, tmp_path):
    pytest.importorskip("astroquery")
    import astroquery.vizier  # noqa: F401  (its import time must not count against the timeout)

    service = fake_service(behaviour, tls=True)
    folder = tmp_path / "catalogs"
    folder.mkdir()
    _write_catalog(folder / "gaiadr3.ecsv")  # the second catalog of the list, from the folder

    t0 = time.monotonic()
    out = cm.resolve_catalogs(ORDER, REGION, 2005.6, specs=SPECS, catalog_path=folder,
                              service=cm.VizierService(server=service.netloc), timeout=TIMEOUT)
    seconds = time.monotonic() - t0

    assert seconds <= TIMEOUT + MARGIN, f"{behaviour}: {seconds:.2f} s"
    by_name = {c.name: c for c in out}
    assert list(by_name) == ORDER
    # The service's catalogs are unavailable, with a reason that says why …
    for name in ("GAIAeDR3", "GAIADR2"):
        assert isinstance(by_name[name], cm.CatalogUnavailable), name
    assert re.search(CATALOG_REASON[behaviour], by_name["GAIAeDR3"].reason.lower()), by_name["GAIAeDR3"].reason
    # … and the next source still gives its catalog.
    dr3 = by_name["GAIADR3"]
    assert isinstance(dr3, cm.ReferenceCatalog) and dr3.origin.startswith("folder:") and len(dr3.table) == 40
    # The fake was really reached (HTTPS, our certificate trusted) when it was there at all.
    if behaviour in ("garbage", "empty"):
        assert service.requests and all(r.startswith("POST /viz-bin/votable") for r in service.requests)
    elif behaviour == "hang":
        assert service.connections >= 1
    # An outage is not asked again; an empty answer is an answer, and the next catalog is asked.
    assert len(service.requests) == (2 if behaviour == "empty" else 1 if behaviour == "garbage" else 0)


def test_slow_catalog_service_shares_one_timeout_across_catalogs(fake_service):
    pytest.importorskip("astroquery")
    import astroquery.vizier  # noqa: F401

    # Each answer (no star) takes 0.6 of the timeout: three catalogs asked one full timeout
    # each would cost 1.8 timeouts.
    service = fake_service("empty", tls=True, delay=0.6 * TIMEOUT)
    t0 = time.monotonic()
    out = cm.resolve_catalogs(ORDER, REGION, 2005.6, specs=SPECS,
                              service=cm.VizierService(server=service.netloc), timeout=TIMEOUT)
    seconds = time.monotonic() - t0
    assert seconds <= TIMEOUT + MARGIN, f"{seconds:.2f} s"
    assert all(isinstance(c, cm.CatalogUnavailable) for c in out)
    assert "returned no star" in out[0].reason
    assert re.search(r"no answer within|read timed out|used up", out[1].reason, flags=re.IGNORECASE), out[1].reason


# --------------------------------------------------------------------------------------------
# the astrometry database


@pytest.fixture(scope="module")
def visit(tmp_path_factory: pytest.TempPathFactory) -> SimulatedVisit:
    """One exposure (FLT + FLC) carrying an embedded GSC240 headerlet; read-only in the tests."""
    return simulate_visit(
        tmp_path_factory.mktemp("services") / "visit",
        SimulationConfig(**EXACT_WORLD, n_exposures=1, chip_shape=(64, 128), n_stars=20, cosmic_ray_fraction=0.0,
                         apriori_errors_mas=(("GSC240", 20.0, -10.0),)),
    )


def _header_default(visit: SimulatedVisit, out: Path) -> Candidate:
    dataset = resolve_input(visit.asn_path)
    originals = [*dataset.flt_paths, *dataset.flc_paths]
    workdir = prepare_workdir(out / f"{dataset.root}_default")
    return Candidate("default", "header", workdir, copy_exposures(originals, workdir), "test", updated=False)


@pytest.mark.parametrize("behaviour", FAILURES)
def test_astrometry_db_failure_is_bounded_and_embedded_solutions_still_count(
    behaviour, fake_service, visit, tmp_path, caplog
):
    service = fake_service(behaviour)
    default = _header_default(visit, tmp_path)
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO, logger="autodriz"):
        inventory = find_apriori_solutions(default, Settings(service_timeout=TIMEOUT),
                                           use_service=True, service_url=service.url)
    seconds = time.monotonic() - t0

    assert inventory.service_seconds <= TIMEOUT + MARGIN, f"{behaviour}: {inventory.service_seconds:.2f} s"
    assert seconds <= TIMEOUT + MARGIN + 1.0  # plus reading the embedded headerlets
    # The next source: the solution embedded in the exposures is still found and usable.
    assert [s.short for s in inventory.usable] == ["GSC240"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("autodriz")]
    if behaviour == "empty":
        # Nothing to add is a normal answer: no warning.
        assert "0 headerlet(s) received" in inventory.service and not warnings
        assert [r.split("?")[0] for r in service.requests] == ["GET /availability", "GET /observation/read/jsim01a1q"]
    else:
        assert "unavailable" in inventory.service
        assert len(warnings) == 1 and "unavailable" in warnings[0], warnings
        if behaviour == "garbage":
            assert "not XML" in inventory.service or "else than XML" in inventory.service


# --------------------------------------------------------------------------------------------
# the whole command: the stage that met the failing service costs at most the timeout


@pytest.fixture(scope="module")
def small_visit(tmp_path_factory: pytest.TempPathFactory) -> SimulatedVisit:
    """One exposure, FLT only, with an embedded GSC240 headerlet: the cheapest full command."""
    return simulate_visit(
        tmp_path_factory.mktemp("services-cli") / "template",
        SimulationConfig(**EXACT_WORLD, n_exposures=1, chip_shape=(128, 256), n_stars=60, write_flc=False,
                         apriori_errors_mas=(("GSC240", 20.0, -10.0),)),
    )


def _cli_copy(template: SimulatedVisit, tmp_path: Path) -> Path:
    directory = tmp_path / "visit"
    shutil.copytree(template.directory, directory)
    return directory


def _service_seconds(trailer: Path, pattern: str) -> float:
    found = re.findall(pattern, trailer.read_text(encoding="utf-8"))
    assert found, f"{pattern!r} not in the trailer"
    return float(found[-1])


def test_cli_with_a_hanging_catalog_service_ends_with_the_default_wcs(
    small_visit, fake_service, tmp_path, monkeypatch, capsys
):
    pytest.importorskip("astroquery")
    service = fake_service("hang", tls=True)
    # The packaged aposteriori.toml names VizieR's real server: send the stage to the fake
    # (make_service, in catalogs.services, builds the stage's service).
    monkeypatch.setattr(catalog_services, "VizierService", lambda server, **kw: _RealVizier(server=service.netloc, **kw))
    directory = _cli_copy(small_visit, tmp_path)
    code = main([str(directory / "jsim01010_asn.fits"), "--jref", str(directory / "jref"), "--no-apriori",
                 "--aposteriori", "--no-verify", "--service-timeout", str(TIMEOUT),
                 "--cache-dir", str(tmp_path / "cache"), "--num-cores", "1"])
    err = capsys.readouterr().err
    assert code == ExitCode.DEFAULT_ONLY, err
    assert service.connections >= 1
    trailer = directory / "jsim01010.tra"
    assert _service_seconds(trailer, r"VizieR \S+ failed after ([\d.]+) s \(") <= TIMEOUT + MARGIN
    # One timeout for the whole list, not one per catalog.
    assert "catalog service not asked again" in trailer.read_text(encoding="utf-8")
    # The console says it once, short, with what to do.
    lines = [line for line in err.splitlines() if line.startswith("WARNING") and "catalog service" in line]
    assert len(lines) == 1, err
    assert f"unreachable (no answer within {TIMEOUT:g} s)" in lines[0] and "--catalog FILE" in lines[0]
    assert len(lines[0]) < 250


def test_cli_with_a_hanging_astrometry_db_uses_the_embedded_solution(small_visit, fake_service, tmp_path, capsys):
    service = fake_service("hang")
    directory = _cli_copy(small_visit, tmp_path)
    code = main([str(directory / "jsim01010_asn.fits"), "--jref", str(directory / "jref"), "--apriori",
                 "--no-aposteriori", "--no-verify", "--astrometry-db", "--astrometry-db-url", service.url,
                 "--service-timeout", str(TIMEOUT), "--num-cores", "1"])
    err = capsys.readouterr().err
    assert code == ExitCode.OK, err
    assert "astrometry database" in err and "unavailable" in err  # the one warning
    trailer = directory / "jsim01010.tra"
    assert _service_seconds(trailer, r"astrometry database \S+: unavailable \(.*\) after ([\d.]+) s") <= TIMEOUT + MARGIN
    assert "chosen WCS: IDC_0461802ej-GSC240" in trailer.read_text(encoding="utf-8")


def test_vizier_is_asked_for_the_brightest_stars_first_down_to_the_catalog_limit(fake_service):
    # A dense field must lose its faintest stars to the row limit, not an arbitrary subset.
    pytest.importorskip("astroquery")
    from urllib.parse import unquote_plus

    service = fake_service("empty", tls=True)
    table = cm.VizierService(server=service.netloc).query(SPECS["GAIAeDR3"], REGION, timeout=10.0)
    assert len(table) == 0
    body = unquote_plus(b"".join(service.bodies).decode())
    assert "-sort=Gmag" in body and "Gmag=<21" in body, body
