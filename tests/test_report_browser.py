"""The HTML report opens in a real headless browser (Debian's Chromium) and shows its images.

Chromium is a system package, not a PyPI one: ``.ci/run`` installs it and sets
``AUTODRIZ_REQUIRE_BROWSER=1`` so that CI fails, rather than skips, when it is missing.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from autodriz.report import SCHEMA_VERSION, footprint_box, summary_banner, weight_map_check, write_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


# Module scope, and asked for before demo_page: without a browser the test is skipped before the
# demo (a full simulate-align-drizzle run) is made for it.
@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("AUTODRIZ_REQUIRE_BROWSER"):
            pytest.fail("chromium is required (AUTODRIZ_REQUIRE_BROWSER is set) but not installed")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return CHROMIUM


def _dump_dom(chromium: str, page: Path, profile: Path) -> str:
    return subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout


def _loaded_images(dom: str) -> tuple[int, int]:
    """(decoded, total) images, as the page's own load handler counted them in the browser."""
    found = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert found, "the page's load handler did not run"
    return int(found.group(1)), int(found.group(2))


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def _product(path: Path) -> Path:
    rng = np.random.default_rng(1)
    sci = rng.normal(1.0, 0.1, (300, 400)).astype(np.float32)
    yy, xx = np.mgrid[0:300, 0:400]
    for x, y in rng.uniform(20, 280, (30, 2)):
        sci += 50 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.0)
    wht = np.full_like(sci, 400.0)
    wht[:, 300:] = 0.0  # the footprint is 300 x 300: the thumbnails are square, not 3:4
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
        "status": {"exit_code": "DEFAULT_ONLY", "exit": 9},
    }
    page = write_html(report, tmp_path / "x_report.html")
    profile = tmp_path / "profile"

    dom = _dump_dom(chromium, page, profile)
    assert "autodriz report: x" in dom and dom.count("data:image/png;base64,") == 2
    assert _loaded_images(dom) == (2, 2)
    summary = _text(re.search(r'<p id="summary"[^>]*>(.*?)</p>', dom, flags=re.S).group(1))
    assert summary == "DEFAULT_ONLY (exit 9) · chosen WCS IDC_x (default) · images at the pipeline-default WCS"
    # Thumbnails are cut to the footprint (WHT > 0): square here, not the frame's 3:4.
    assert footprint_box(np.where(np.arange(400) < 300, 1.0, 0.0)[None, :].repeat(5, 0)) == (slice(0, 5), slice(0, 300))
    from base64 import b64decode
    from io import BytesIO

    from matplotlib.image import imread

    first = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", dom).group(1)
    h, w = imread(BytesIO(b64decode(first))).shape[:2]
    assert abs(h / w - 1.0) < 0.15, (h, w)

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


def test_a_real_runs_report_renders_thumbnails_overlay_and_residual_plots(chromium, demo_page, tmp_path):
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", demo_page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert "autodriz report: jsim01010" in dom
    # The browser parsed every embedded image: 4 thumbnails, the matched stars over the DRZ,
    # and at least the chosen fit's residual vectors.
    assert dom.count("data:image/png;base64,") >= 6
    loaded, total = _loaded_images(dom)
    assert loaded == total == dom.count("data:image/png;base64,")
    # The banner says at once what happened: status, chosen WCS, fit, verification, move.
    summary = _text(re.search(r'<p id="summary"[^>]*>(.*?)</p>', dom, flags=re.S).group(1))
    found = re.fullmatch(
        r"OK \(exit 0\) · chosen WCS IDC_0461802ej-FIT_REL_USER \(aposteriori-REL-USER-rscale\) · "
        r"fit RMS \d\.\d mas over \d+ matches, quality 1 · verification pass: all 2 exposures registered .* · "
        r"images moved (\d+\.\d) mas from IDC_0461802ej", summary)
    assert found, summary
    # The demo injects a common (150, -100) mas = 180 mas error, plus per-exposure pointing and
    # roll errors (measured: 196.6 mas).
    assert 150.0 < float(found.group(1)) < 250.0, summary
    # The candidates side by side: one table row each, with RMS, matches and move; one residual
    # plot per fit in one row.
    table = re.search(r'<table id="candidates">(.*?)</table>', dom, flags=re.S).group(1)
    rows = re.findall(r"<tr class=\"(\w+)\">(.*?)</tr>", table, flags=re.S)
    assert [cls for cls, _ in rows].count("chosen") == 1 and len(rows) >= 2
    cells = [_text(c) for c in re.findall(r"<td>(.*?)</td>", dict((c, r) for c, r in rows)["chosen"], flags=re.S)]
    assert cells[0] == "aposteriori-REL-USER-rscale" and float(cells[4]) < 5 and int(cells[5]) > 50
    residuals = re.search(r'<div id="residuals" class="row">(.*?)</div>', dom, flags=re.S).group(1)
    fits_made = [c for c, r in rows if _text(re.findall(r"<td>(.*?)</td>", r, flags=re.S)[1]) == "aposteriori"
                 and c != "pruned"]
    assert residuals.count(" residuals\"") == len(fits_made) >= 1
    # … and the registration of each exposure under the verified candidate(s), as one chart.
    assert residuals.count("registration per exposure and candidate\"") == 1
    assert "matched sources (aposteriori-REL-USER-rscale)" in dom
    assert "aposteriori-REL-USER-rscale residuals" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,1300",
         demo_page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    # The coloured figures (WHT in viridis, the matched stars in orange) are on the first screen:
    # the page's text and tables are black, grey and pale tints only (0.0 without the images,
    # 1.6 % with them, measured).
    assert ((pixels.max(axis=2) - pixels.min(axis=2)) > 0.3).mean() > 0.005
