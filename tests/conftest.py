"""Shared fixtures. Every test, and every process it starts, runs with the network closed: only loopback
may be reached (tests/netguard/sitecustomize.py)."""

from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
from pathlib import Path

import pytest



def _find_shared_data() -> Path | None:
    """``$AUTODRIZ_SHARED_DATA``, else the nearest ``shared/data`` beside the project or above it."""
    if os.environ.get("AUTODRIZ_SHARED_DATA"):
        return Path(os.environ["AUTODRIZ_SHARED_DATA"])
    for parent in Path(__file__).resolve().parents[1:]:
        candidate = parent / "shared" / "data"
        if (candidate / "README.md").is_file():
            return candidate
    return None


def _load_netguard():
    # By path: tests/ is not a package, and the module's import name in children is "sitecustomize".
    spec = importlib.util.spec_from_file_location("_tests_netguard", NETGUARD_DIR / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NETGUARD_DIR = Path(__file__).resolve().parent / "netguard"
netguard = _load_netguard()


def pytest_configure(config: pytest.Config) -> None:
    """Every Python process the tests start is guarded too (see tests/netguard/sitecustomize.py)."""
    os.environ[netguard.ENV] = "1"
    path = os.environ.get("PYTHONPATH", "")
    if str(NETGUARD_DIR) not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(NETGUARD_DIR), path) if p)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Fail any test that tries to reach beyond loopback, by a connection or a name lookup."""
    for (owner, name), function in netguard.replacements().items():
        monkeypatch.setattr(owner, name, function)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only shared data folder; tests copy from it, never write to it."""
    found = _find_shared_data()
    if found is None or not found.is_dir():
        pytest.fail("shared test data not found: expected ../shared/data beside the project, or set AUTODRIZ_SHARED_DATA")
    return found


@pytest.fixture(scope="session")
def apriori_twin_visit(tmp_path_factory):
    """A small simulated FLT+FLC visit whose files carry an a priori GSC240 headerlet.

    Its HDRNAME names the file, so an exposure's FLT and FLC differ there (the twin checks of
    ``autodriz.wcstransfer`` and ``autodriz.twinprep``). Read only: tests copy it.
    """
    from autodriz import simulate as S

    return S.simulate_visit(
        tmp_path_factory.mktemp("twins"),
        S.SimulationConfig(seed=5, apriori_errors_mas=(("GSC240", 20.0, -10.0),),
                           chip_shape=(128, 256), n_stars=60, cosmic_ray_fraction=0.0),
    )


@pytest.fixture(scope="session")
def goodss_pair_catalog(shared_data, tmp_path_factory) -> Path:
    """A reference catalog of the real F140W field from ib6o23rtq + ib6o23rwq placed at grizli's
    WCS (``realdata.reference_pair_catalog``), built once per session: four real-data tests read
    it and it costs ~40 s to make. Read-only for its users."""
    from irdistortion import rebuild_wfc3ir_idctab
    from realdata import reference_pair_catalog

    work = tmp_path_factory.mktemp("goodss_pair")
    with pytest.MonkeyPatch.context() as patch:  # the per-test network guard is not active yet
        for (owner, name), function in netguard.replacements().items():
            patch.setattr(owner, name, function)
        iref = rebuild_wfc3ir_idctab(shared_data, work / "iref").parent
        catalog = reference_pair_catalog(shared_data, work, iref, ("ib6o23rtq", "ib6o23rwq"))
    catalog.chmod(0o444)
    return catalog


def copy_decompressed(src: Path, dest_dir: Path) -> Path:
    """Copy ``src`` into ``dest_dir``, gunzipping ``*.gz``; return the new path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    if src.suffix == ".gz":
        dest = dest_dir / src.name[:-3]
        with gzip.open(src, "rb") as fin, open(dest, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    else:
        dest = dest_dir / src.name
        shutil.copyfile(src, dest)
    dest.chmod(0o644)
    return dest
