"""The HTML report opens in a real headless browser (Debian's Chromium) and shows its images.

Chromium is a system package, not a PyPI one: ``.ci/run`` installs it and sets
``AUTODRIZ_REQUIRE_BROWSER=1`` so that CI fails, rather than skips, when it is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from autodriz.report import SCHEMA_VERSION, weight_map_check, write_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("AUTODRIZ_REQUIRE_BROWSER"):
            pytest.fail("chromium is required (AUTODRIZ_REQUIRE_BROWSER is set) but not installed")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return CHROMIUM


def _product(path: Path) -> Path:
    rng = np.random.default_rng(1)
    sci = rng.normal(1.0, 0.1, (300, 400)).astype(np.float32)
    yy, xx = np.mgrid[0:300, 0:400]
    for x, y in rng.uniform(20, 280, (30, 2)):
        sci += 50 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.0)
    wht = np.full_like(sci, 400.0)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(sci, name="SCI"), fits.ImageHDU(wht, name="WHT")]).writeto(path)
    return path


def test_report_page_renders_with_its_images(tmp_path, chromium):
    product = _product(tmp_path / "x_drz.fits")
    report = {
        "schema": SCHEMA_VERSION, "autodriz": "test", "versions": {}, "input": "x_asn.fits",
        "dataset": {"root": "x", "instrument": "ACS/WFC", "filters": ["F606W"], "exposures": ["a", "b"]},
        "candidates": [{"name": "default", "kind": "default", "wcsname": "IDC_x", "source": "s", "quality": -1,
                        "details": {}, "notes": [], "verification": None, "verdict": "chosen", "reason": "only one"}],
        "chosen": {"name": "default", "wcsname": "IDC_x", "why": "only one"},
        "alignment": [], "drizzle": [], "astrodrizzle_runs": 1, "timings": {"drizzle": 1.0},
        "qa": {"x_drz.fits": weight_map_check(np.full((3, 3), 1.0)).__dict__},
        "updated_inputs": [], "products": [str(product)], "settings": {},
    }
    page = write_html(report, tmp_path / "x_report.html")
    profile = tmp_path / "profile"

    dom = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert "autodriz report: x" in dom and dom.count("data:image/png;base64,") == 2

    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,1000", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    # The two thumbnails (SCI in grey, WHT in colour) are drawn: a page of text alone is almost
    # all white, a rendered figure area is not.
    assert (pixels.mean(axis=2) < 0.9).mean() > 0.10


@pytest.fixture(scope="module")
def demo_page(tmp_path_factory) -> Path:
    """The report page of a real run: ``autodriz demo`` (simulate, align, drizzle)."""
    from autodriz.cli import main

    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "-o", str(out), "-q"]) == 0
    return out / "jsim01010_report.html"


def test_a_real_runs_report_renders_thumbnails_overlay_and_residual_plots(demo_page, chromium, tmp_path):
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", demo_page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert "autodriz report: jsim01010" in dom
    # The browser parsed every embedded image: 4 thumbnails, the matched stars over the DRZ,
    # and at least the chosen fit's residual vectors.
    assert dom.count("data:image/png;base64,") >= 6
    assert "matched sources (aposteriori-REL-USER-rscale)" in dom
    assert "aposteriori-REL-USER-rscale residuals" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,2400",
         demo_page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert (pixels.mean(axis=2) < 0.9).mean() > 0.10
