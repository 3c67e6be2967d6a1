"""Reference catalogs: reading the real extracts, epochs, file/folder/cache/service order, bounded delays."""

from __future__ import annotations

import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from astropy.table import Table

from autodriz import catalogs as cm
from autodriz.astrometry.config import load_aposteriori_config

SPECS = load_aposteriori_config("ACS/WFC").catalogs.specs
NGC6791 = cm.Region(290.2211, 37.7875, 0.03)


def test_reads_the_real_gaia_extract(shared_data):
    table, notes = cm.read_catalog_file(shared_data / "catalogs" / "gaia.cat")
    assert len(table) == 5940
    assert {"ra", "dec", "mag"} <= set(table.colnames) and "pmra" not in table.colnames
    assert np.all(np.isfinite(table["mag"]))
    assert not notes


def test_sdss_missing_magnitudes_become_nan(shared_data):
    table, notes = cm.read_catalog_file(shared_data / "catalogs" / "sdss.cat")
    assert len(table) == 7999
    assert int(np.isnan(table["mag"]).sum()) == 241
    assert "241 of 7999 magnitudes missing" in notes[0]


def test_reads_the_real_ecsv_with_upper_case_columns(shared_data):
    table, _ = cm.read_catalog_file(shared_data / "catalogs" / "ref_cat_None.ecsv")
    assert len(table) == 2132
    assert 80 < float(np.median(table["ra"])) < 81 and float(np.median(table["dec"])) < -67


def test_no_position_columns_is_an_error(tmp_path):
    path = tmp_path / "x.ecsv"
    Table({"a": [1.0], "b": [2.0]}).write(path)
    with pytest.raises(ValueError, match="no RA/Dec"):
        cm.read_catalog_file(path)


def test_proper_motions_are_propagated_to_the_observation_epoch():
    t = Table({"ra": [10.0, 10.0], "dec": [60.0, 60.0], "pmra": [100.0, np.nan], "pmdec": [-50.0, np.nan],
               "epoch": [2016.0, 2016.0], "mag": [18.0, 19.0]})
    moved, n = cm.propagate(t, 2006.0)
    assert n == 1
    # -10 yr: dec -(-50 mas/yr) → +500 mas; ra: -1000 mas / cos(60°) = -2000 mas of RA.
    assert (moved["dec"][0] - 60.0) * 3.6e6 == pytest.approx(500.0, abs=1e-3)
    assert (moved["ra"][0] - 10.0) * 3.6e6 == pytest.approx(-2000.0, rel=1e-3)
    assert moved["ra"][1] == 10.0 and moved["dec"][1] == 60.0
    cat = cm.finish_catalog("GAIAeDR3", t, "test", SPECS["GAIAeDR3"], 2006.0)
    assert cat.has_pm and cat.epoch == 2006.0 and cat.catalog_epoch == 2016.0
    assert "1 stars without proper motion" in cat.notes[0]


def test_catalog_without_pm_is_marked_and_its_expected_error_grows_with_the_gap():
    t = Table({"ra": [10.0], "dec": [60.0], "mag": [18.0]})
    near = cm.finish_catalog("GAIA", t, "test", SPECS["GAIA"], 2016.0)
    far = cm.finish_catalog("GAIA", t, "test", SPECS["GAIA"], 2006.0, unknown_pm_mas_yr=5.0)
    assert not far.has_pm and not near.has_pm
    assert far.expected_error_mas > 60 > near.expected_error_mas
    assert "no proper motions" in far.notes[0] and "10.0 yr" in far.notes[0]
    sdss = cm.finish_catalog("SDSS", t, "test", SPECS["SDSS"], 2005.0)
    assert sdss.expected_error_mas > 60


@pytest.mark.parametrize(
    ("filename", "meta", "expected"),
    [
        ("gaia.cat", {}, "GAIA"),
        ("sdss.cat", {}, "SDSS"),
        ("field_gaiadr3.ecsv", {}, "GAIADR3"),
        ("Gaia_eDR3.ecsv", {}, "GAIAeDR3"),
        ("jsim01010_refcat.ecsv", {}, "USER"),
        ("whatever.ecsv", {"catalog": "MY-CAT"}, "MYCAT"),
    ],
)
def test_name_of_a_user_file(tmp_path, filename, meta, expected):
    assert cm.name_for_file(tmp_path / filename, meta, SPECS) == expected


def _write(path, n=50, **extra):
    rng = np.random.default_rng(0)
    t = Table({"ra": NGC6791.ra + rng.uniform(-0.01, 0.01, n), "dec": NGC6791.dec + rng.uniform(-0.01, 0.01, n),
               "mag": rng.uniform(16, 20, n), **extra})
    t.write(path, format="ascii.ecsv", overwrite=True)
    return path


class _Stub:
    description = "stub service"

    def __init__(self, table=None, error=None):
        self.table, self.error, self.calls = table, error, []

    def query(self, spec, region, timeout, epoch=None):
        self.calls.append(spec.name)
        if self.error:
            raise cm.ServiceUnavailable(self.error)
        return self.table


def test_a_named_file_is_the_only_catalog(shared_data):
    stub = _Stub()
    out = cm.resolve_catalogs(["GAIAeDR3", "GAIADR2"], NGC6791, 2005.6, specs=SPECS,
                              catalog_path=shared_data / "catalogs" / "gaia.cat", service=stub)
    assert [c.name for c in out] == ["GAIA"]
    assert isinstance(out[0], cm.ReferenceCatalog)
    assert out[0].origin.startswith("file:") and not out[0].has_pm
    # Cut to the region.
    assert 0 < len(out[0].table) < 5940
    assert stub.calls == []


def test_folder_then_cache_then_service_in_order(tmp_path):
    folder = tmp_path / "cats"
    folder.mkdir()
    _write(folder / "gaiadr3.ecsv")
    _write(folder / "sdss.ecsv")
    cache = tmp_path / "cache"
    service_table = Table.read(_write(tmp_path / "svc.ecsv"))
    stub = _Stub(table=service_table)
    out = cm.resolve_catalogs(["GAIAeDR3", "GAIADR3"], NGC6791, 2005.6, specs=SPECS, catalog_path=folder,
                              cache_dir=cache, service=stub, timeout=1.0)
    names = [(c.name, c.origin.split(":")[0]) for c in out]
    # GAIAeDR3 is not in the folder: from the service; GAIADR3 from the folder; SDSS, also in
    # the folder, tried after the list.
    assert names == [("GAIAeDR3", "service"), ("GAIADR3", "folder"), ("SDSS", "folder")]
    assert stub.calls == ["GAIAeDR3"]
    # The download was cached; the next run takes it from the cache without the service.
    assert list((cache / "catalogs" / "GAIAeDR3").glob("*.ecsv"))
    stub2 = _Stub(error="must not be called")
    again = cm.resolve_catalogs(["GAIAeDR3"], NGC6791, 2005.6, specs=SPECS, cache_dir=cache, service=stub2)
    assert again[0].origin.startswith("cache:") and stub2.calls == []
    # A cached cone that does not cover the region is not used.
    far = cm.Region(NGC6791.ra + 1.0, NGC6791.dec, 0.03)
    assert cm.find_in_cache(cache, "GAIAeDR3", far) is None


def test_offline_never_calls_the_service(tmp_path):
    stub = _Stub(error="must not be called")
    out = cm.resolve_catalogs(["GAIAeDR3", "GSC242"], NGC6791, 2005.6, specs=SPECS, offline=True, service=stub)
    assert all(isinstance(c, cm.CatalogUnavailable) and "offline" in c.reason for c in out)
    assert stub.calls == []


def test_failed_service_is_not_asked_again_and_strict_raises():
    stub = _Stub(error="connection refused")
    out = cm.resolve_catalogs(["GAIAeDR3", "GAIADR3", "2MASS"], NGC6791, 2005.6, specs=SPECS, service=stub)
    assert stub.calls == ["GAIAeDR3"]
    assert "connection refused" in out[0].reason and "not asked again" in out[1].reason
    with pytest.raises(cm.CatalogServiceError, match="strict"):
        cm.resolve_catalogs(["GAIAeDR3"], NGC6791, 2005.6, specs=SPECS, service=_Stub(error="down"), strict_services=True)


def test_empty_answer_and_empty_file(tmp_path):
    out = cm.resolve_catalogs(["GAIAeDR3"], NGC6791, 2005.6, specs=SPECS, service=_Stub(table=Table()))
    assert "no star" in out[0].reason
    empty = tmp_path / "gaiaedr3.ecsv"
    Table({"ra": np.zeros(0), "dec": np.zeros(0)}).write(empty)
    out = cm.resolve_catalogs([], NGC6791, 2005.6, specs=SPECS, catalog_path=empty)
    assert isinstance(out[0], cm.CatalogUnavailable) and "no star within" in out[0].reason
    broken = tmp_path / "broken.cat"
    broken.write_text("# ra dec\n1 2 3 4\nnot a table\n")
    out = cm.resolve_catalogs([], NGC6791, 2005.6, specs=SPECS, catalog_path=broken)
    assert isinstance(out[0], cm.CatalogUnavailable)


def test_call_with_deadline_is_bounded():
    t0 = time.monotonic()
    with pytest.raises(cm.ServiceUnavailable, match="no answer within 0.3"):
        cm.call_with_deadline(lambda: time.sleep(5), 0.3)
    assert time.monotonic() - t0 < 0.8
    assert cm.call_with_deadline(lambda: 42, 1.0) == 42


def _raise(exc: BaseException):
    def fn():
        raise exc
    return fn


def test_call_with_deadline_turns_only_service_errors_into_service_unavailable():
    from astroquery.exceptions import RemoteServiceError

    # What a service or its answer raises is an outage, named by its type …
    for exc in (ConnectionResetError("reset by peer"), ValueError("not a VOTable"), RemoteServiceError("500"),
                cm.CatalogNotServed("MAST answered: Error")):
        with pytest.raises(cm.ServiceUnavailable, match=type(exc).__name__):
            cm.call_with_deadline(_raise(exc), 1.0)
    # … a bug in our own code is not: it surfaces as itself (exit 1 with its traceback).
    for exc in (TypeError("unsupported operand"), KeyError("ra"), ZeroDivisionError("division by zero")):
        with pytest.raises(type(exc)) as caught:
            cm.call_with_deadline(_raise(exc), 1.0)
        assert not isinstance(caught.value, cm.ServiceUnavailable)


@pytest.fixture
def refusing_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there any more: connections are refused
    return port


@pytest.fixture
def silent_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)  # accepts TCP connections (kernel backlog) but never answers
    yield s.getsockname()[1]
    s.close()


def _vizier_delay(port: int, timeout: float) -> tuple[float, list]:
    pytest.importorskip("astroquery")
    import astroquery.vizier  # noqa: F401  (import time must not count against the timeout)

    service = cm.VizierService(server=f"127.0.0.1:{port}")
    t0 = time.monotonic()
    out = cm.resolve_catalogs(["GAIAeDR3", "GAIADR3", "GAIADR2"], NGC6791, 2005.6, specs=SPECS,
                              service=service, timeout=timeout)
    return time.monotonic() - t0, out


def test_refusing_service_fails_fast(refusing_port):
    seconds, out = _vizier_delay(refusing_port, 2.0)
    assert seconds < 2.0
    assert all(isinstance(c, cm.CatalogUnavailable) for c in out)
    assert "VizieR 127.0.0.1" in out[0].reason and "not asked again" in out[2].reason


def test_silent_service_delay_is_bounded_by_the_timeout(silent_port):
    seconds, out = _vizier_delay(silent_port, 1.0)
    # One timeout for all three catalogs (plus scheduling slack), not three.
    assert seconds < 1.0 + 0.5
    assert "no answer within 1 s" in out[0].reason
    assert all(isinstance(c, cm.CatalogUnavailable) for c in out)


def test_catalog_config_from_the_packaged_file():
    cfg = load_aposteriori_config("ACS/WFC").catalogs
    assert cfg.order[:3] == ("GAIAeDR3", "GAIADR3", "GAIADR2")
    for name in cfg.order:
        spec = cfg.specs[name]
        assert spec.vizier and spec.epoch and spec.error_mas > 0
    assert math.isclose(cfg.specs["GAIADR2"].epoch, 2015.5)


def _gaia_pm(shared_data, tmp_path):
    import gzip

    path = tmp_path / "gaia_pm.cat"
    path.write_bytes(gzip.decompress((shared_data / "catalogs" / "gaia_pm.cat.gz").read_bytes()))
    table, _ = cm.read_catalog_file(path, default_epoch=2016.0)
    return table


@pytest.mark.parametrize("obs_epoch, dropped", [(2011.8, False), (2005.6, True)])
def test_gaia_stars_without_proper_motion_are_dropped_beyond_a_5_year_gap(shared_data, tmp_path, obs_epoch, dropped):
    # Real Gaia DR3 (J2016.0) around NGC 6791: 289 of 4865 stars have no proper motion. The real
    # WFC3/UVIS visit (2011.8) is 4.2 yr away: they stay, weighted by their larger error; an
    # observation 10.4 yr away would carry ~50 mas of their unknown motion: they go.
    table = _gaia_pm(shared_data, tmp_path)
    no_pm = ~np.isfinite(np.asarray(table["pmra"], dtype=float))
    assert int(no_pm.sum()) == 289
    cat = cm.finish_catalog("GAIAeDR3", table, "test", SPECS["GAIAeDR3"], obs_epoch)
    assert len(cat.table) == (4865 - 289 if dropped else 4865)
    assert ("289 stars without proper motion dropped" in cat.notes[0]) is dropped
    sigma = np.asarray(cat.table["sigma_mas"], dtype=float)
    assert np.all(np.isfinite(sigma) & (sigma > 0))
    if not dropped:
        # 5 mas/yr of unknown motion over 4.2 yr against < 1 mas/yr errors of measured ones.
        moved = np.isfinite(np.asarray(cat.table["pmra"], dtype=float))
        assert np.median(sigma[~moved]) > 15.0 > 5.0 > np.median(sigma[moved])



def test_service_failures_are_named_in_a_few_words():
    def chained(outer, inner):
        try:
            try:
                raise inner
            except Exception as exc:
                raise outer from exc
        except Exception as exc:  # noqa: BLE001 (building a chain to classify)
            return exc

    dns = chained(cm.ServiceUnavailable("ConnectionError: HTTPSConnectionPool(host='vizier.cds.unistra.fr', port=443): "
                                        "Max retries exceeded"),
                  OSError("NameResolutionError: Failed to resolve 'vizier.cds.unistra.fr' "
                          "([Errno -3] Temporary failure in name resolution)"))
    assert cm.failure_class(dns) == "DNS lookup failed: no network?"
    assert cm.failure_class(chained(cm.ServiceUnavailable("x"), ConnectionRefusedError(111, "Connection refused"))) \
        == "connection refused"
    assert cm.failure_class(cm.ServiceUnavailable("no answer within 1.5 s")) == "no answer within 1.5 s"
    assert cm.failure_class(cm.ServiceUnavailable("ReadTimeout: read timed out"), 2.0) == "no answer within 2 s"
    assert cm.failure_class(cm.ServiceUnavailable("HTTPError: 500 Server Error: boom for url")) == "HTTP 500"
    assert cm.failure_class(cm.ServiceUnavailable("the answer is not a VOTable")) == "the answer is not a VOTable"
    assert len(cm.failure_class(cm.ServiceUnavailable("weird " * 100))) <= 100


def test_each_stars_own_proper_motion_error_sets_its_weight():
    # Gaia DR3: 0.02 mas/yr at G = 15, 1.4 mas/yr at G = 21; ten years from J2016 that is
    # 0.2 vs 14 mas, which the catalog's one typical figure (1 mas/yr) would hide.
    t = Table({
        "ra": [10.0, 10.0001], "dec": [60.0, 60.0001], "pmra": [1.0, 1.0], "pmdec": [0.0, 0.0],
        "epoch": [2016.0, 2016.0], "ra_error": [0.02, 1.0], "dec_error": [0.02, 1.0],
        "e_pmRA": [0.02, 1.4], "e_pmDE": [0.02, 1.4], "mag": [15.0, 21.0],
    })
    table, _ = cm.normalise_table(t)  # VizieR's e_pmRA/e_pmDE become pmra_error/pmdec_error
    cat = cm.finish_catalog("GAIAeDR3", table, "test", SPECS["GAIAeDR3"], 2006.0)
    sigma = np.asarray(cat.table["sigma_mas"], dtype=float)
    assert sigma[0] == pytest.approx(math.hypot(0.02, 0.2), rel=1e-3)
    assert sigma[1] == pytest.approx(math.hypot(1.0, 14.0), rel=1e-3)


# --------------------------------------------------------------------------------------------
# MAST's catalog web service, against a loopback fake that answers as drizzlepac reads it


#: Three Gaia stars in the NGC 6791 cone at J2016, with proper motions (mas/yr).
MAST_STARS = [(290.2211, 37.7875, 40.0, -30.0, 17.1), (290.2251, 37.7901, 0.0, 0.0, 18.3),
              (290.2160, 37.7840, -12.0, 25.0, 19.0)]
GAIA_HEADER = "objID,ra,dec,ra_error,dec_error,pmra,pmra_error,pmdec,pmdec_error,mag,epoch"


def _gaia_csv(epoch: float | None) -> str:
    """The answer as the service gives it: a description line, then CSV, lines ending in CRLF.

    With ``epoch`` the positions are moved there (the service propagates, as asked by EPOCH=).
    """
    rows = []
    for i, (ra, dec, pmra, pmdec, mag) in enumerate(MAST_STARS):
        dt = 0.0 if epoch is None else epoch - 2016.0
        ra_t, dec_t = ra + pmra * dt / 3.6e6 / math.cos(math.radians(dec)), dec + pmdec * dt / 3.6e6
        rows.append(f"{1000 + i},{ra_t:.9f},{dec_t:.9f},0.1,0.1,{pmra},0.1,{pmdec},0.1,{mag},2016.0")
    return "\r\n".join([f"Number of objects: {len(rows)}", GAIA_HEADER, *rows, ""])


class _MastFake:
    """A loopback MAST catalog service: ``mode`` is ok, empty, http500, garbage or epoch-error."""

    def __init__(self, mode: str) -> None:
        self.mode, self.requests = mode, []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests.append(self.path)
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                epoch = float(query["EPOCH"]) if "EPOCH" in query else None
                status, body = 200, _gaia_csv(epoch).encode()
                if fake.mode == "empty":
                    body = f"Number of objects: 0\r\n{GAIA_HEADER}\r\n".encode()
                elif fake.mode == "http500":
                    status, body = 500, b"<html>Internal Server Error</html>"
                elif fake.mode == "garbage":
                    body = b"\x89PNG\r\n\x1a\n\x00 not a table <html>maintenance" + bytes(range(256))
                elif fake.mode == "epoch-error" and epoch is not None:
                    body = b"Error: Cannot find table 0\r\n"
                self.send_response(status)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webservices"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mast_fake():
    started = []

    def start(mode: str) -> _MastFake:
        started.append(_MastFake(mode))
        return started[-1]

    yield start
    for fake in started:
        fake.close()


def _from_mast(url: str, names=("GAIAeDR3",), epoch=2009.755, timeout=5.0, **kw):
    return cm.resolve_catalogs(list(names), NGC6791, epoch, specs=SPECS, service=cm.MastCatalogService(url),
                               timeout=timeout, **kw)


def test_mast_is_asked_as_drizzlepac_asks_and_its_epoch_propagation_is_not_repeated(mast_fake, tmp_path):
    fake = mast_fake("ok")
    out = _from_mast(fake.url, cache_dir=tmp_path / "cache")
    cat = out[0]
    assert isinstance(cat, cm.ReferenceCatalog) and cat.origin == f"service:MAST catalogs 127.0.0.1:{fake.url.split(':')[2].split('/')[0]}"
    # drizzlepac's get_catalog: vo/CatalogSearch.aspx, RA/DEC/SR in degrees, CSV, MINDET=5, EPOCH=%.3f.
    path, query = fake.requests[0].split("?", 1)
    assert path == "/webservices/vo/CatalogSearch.aspx"
    assert query == (f"RA={NGC6791.ra}&DEC={NGC6791.dec}&SR={NGC6791.radius}&FORMAT=CSV&CAT=GAIAeDR3&MINDET=5"
                     "&EPOCH=2009.755")
    # The service moved the stars to 2009.755; they are used there, not moved a second time.
    expected = Table.read(_gaia_csv(2009.755).splitlines()[1:], format="ascii.csv")
    assert len(cat.table) == 3 and cat.has_pm and cat.epoch == pytest.approx(2009.755)
    assert np.allclose(cat.table["ra"], expected["ra"], rtol=0, atol=1e-9)
    assert np.allclose(cat.table["dec"], expected["dec"], rtol=0, atol=1e-9)
    assert cat.catalog_epoch == 2016.0 and any("by the catalog service" in n for n in cat.notes)
    # The error model still counts the 6.2 years since the catalog epoch.
    assert cat.expected_error_mas > math.sqrt(2) * 0.5 * 6.2 * 0.9
    # Cached with the epoch the positions are at: a run at another epoch moves them from there.
    later = cm.resolve_catalogs(["GAIAeDR3"], NGC6791, 2019.755, specs=SPECS, cache_dir=tmp_path / "cache",
                                service=_Stub(error="must not be asked"))[0]
    assert later.origin.startswith("cache:")
    ten_years = Table.read(_gaia_csv(2019.755).splitlines()[1:], format="ascii.csv")
    assert np.allclose(later.table["ra"], ten_years["ra"], rtol=0, atol=1e-8)
    assert np.allclose(later.table["dec"], ten_years["dec"], rtol=0, atol=1e-8)


def test_mast_without_epoch_support_is_asked_again_without_it_and_positions_are_propagated_here(mast_fake):
    fake = mast_fake("epoch-error")
    cat = _from_mast(fake.url)[0]
    assert "EPOCH=2009.755" in fake.requests[0] and "EPOCH" not in fake.requests[1]
    moved = Table.read(_gaia_csv(2009.755).splitlines()[1:], format="ascii.csv")
    assert "positions_epoch" not in cat.table.meta
    assert np.allclose(cat.table["ra"], moved["ra"], rtol=0, atol=1e-8)


def test_mast_empty_answer_http_500_and_garbage(mast_fake):
    empty = _from_mast(mast_fake("empty").url)[0]
    assert isinstance(empty, cm.CatalogUnavailable) and "returned no star" in empty.reason
    failed = _from_mast(mast_fake("http500").url, names=("GAIAeDR3", "GSC242"))
    assert "unreachable (HTTP 500)" in failed[0].reason and "not asked again" in failed[1].reason
    garbage = _from_mast(mast_fake("garbage").url)[0]
    assert "unreachable (the answer is not the catalog CSV" in garbage.reason
    with pytest.raises(cm.CatalogServiceError, match="HTTP 500"):
        _from_mast(mast_fake("http500").url, strict_services=True)


def test_mast_hang_costs_at_most_the_timeout(silent_port):
    t0 = time.monotonic()
    out = _from_mast(f"http://127.0.0.1:{silent_port}/webservices", names=("GAIAeDR3", "GSC242", "2MASS"), timeout=1.0)
    assert time.monotonic() - t0 < 1.0 + 0.5
    assert "no answer within 1 s" in out[0].reason and all(isinstance(c, cm.CatalogUnavailable) for c in out)


def test_mast_catalog_names_and_the_2mass_julian_date(mast_fake):
    # GAIADR3 is not a name of MAST's service (drizzlepac asks GAIAeDR3): said, and the next is asked.
    fake = mast_fake("ok")
    out = _from_mast(fake.url, names=("GAIADR3", "GAIAeDR3"))
    assert "not a catalog of MAST" in out[0].reason and isinstance(out[1], cm.ReferenceCatalog)
    assert len(fake.requests) == 1
    table = cm.parse_mast_csv("2MASS\r\nra,dec,mag,objid,jdate\r\n290.2,37.8,14.2,7,2451544.5\r\n")
    assert table["epoch"][0] == pytest.approx(2000.0, abs=1e-3) and table["mag"][0] == 14.2
    gsc = cm.parse_mast_csv("GSC\r\nra,dec,raErr,decErr,rapm,decpm,mag,epoch\r\n290.2,37.8,0.2,0.2,3.0,-4.0,15.0,2016.0\r\n")
    assert (gsc["pmra"][0], gsc["pmdec"][0]) == (3.0, -4.0) and "ra_error" not in gsc.colnames
    with pytest.raises(cm.CatalogNotServed):
        cm.parse_mast_csv("Error: Cannot find table 0\r\n")


def test_the_catalog_service_setting_chooses_the_client():
    from autodriz.config import load_settings
    from autodriz.errors import ConfigError

    cfg = load_aposteriori_config("WFC3/IR").catalogs
    assert isinstance(cm.make_service("mast", cfg), cm.MastCatalogService)
    assert cm.make_service("mast", cfg).url == "https://gsss.stsci.edu/webservices"
    assert isinstance(cm.make_service("vizier", cfg), cm.VizierService)
    assert load_settings(env={"AUTODRIZ_CATALOG_SERVICE": "MAST"}).catalog_service == "mast"
    assert load_settings(cli={"profile": "archive"}, env={}).catalog_service == "mast"
    with pytest.raises(ConfigError, match="accepted values: vizier, mast"):
        load_settings(env={"AUTODRIZ_CATALOG_SERVICE": "simbad"})
