"""The figures of the run report (I/O: product pixels; matplotlib, no display).

Each function returns ``(caption, base64 PNG)`` pairs, ready for :func:`autodriz.htmlpage.figures`;
they read the report's plain JSON form (what the page shows is what the JSON says).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def png_base64(fig: Any) -> str:
    """A matplotlib figure as a base64 PNG (80 dpi), to embed in a page."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


#: Longest side of an image panel on the page, inches (at the 80 dpi of :func:`_png`).
PANEL_INCHES = 4.0

#: Longest side of an image panel's pixels: an image is shown every ``panel_step`` pixels.
PANEL_PIXELS = 600


def panel_step(shape: tuple[int, ...]) -> int:
    """Every how many pixels an image of ``shape`` is shown in a panel (~:data:`PANEL_PIXELS` a side)."""
    return max(1, int(np.ceil(max(shape) / PANEL_PIXELS)))


def downsampled(data: np.ndarray) -> tuple[np.ndarray, int]:
    """``data`` as a panel shows it, as float, and the step taken.

    The pixels are picked before the conversion: of a memory-mapped product only those are
    read and converted, never a float64 copy of the whole array (~140 MB for ACS/WFC).
    """
    step = panel_step(data.shape)
    return np.asarray(data[::step, ::step], dtype=float), step


def footprint_box(wht: np.ndarray) -> tuple[slice, slice]:
    """The bounding box of ``wht > 0`` (the whole array when nothing is covered)."""
    covered = np.isfinite(wht) & (wht > 0)
    if not covered.any():
        return slice(0, wht.shape[0]), slice(0, wht.shape[1])
    rows, cols = np.flatnonzero(covered.any(axis=1)), np.flatnonzero(covered.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def image_panel(data: np.ndarray, *, stretch: bool) -> tuple[Any, Any, int]:
    """A figure showing ``data`` downsampled to ~600 px: (figure, axes, downsampling step).

    ``stretch``: asinh grey scale (faint sky and bright stars both visible), else linear viridis.
    The figure's longest side is :data:`PANEL_INCHES`, so a tall strip is a narrow panel, not a
    full-height one.
    """
    from matplotlib.figure import Figure

    step = panel_step(data.shape)
    small = data[::step, ::step]
    finite = small[np.isfinite(small)]
    aspect = small.shape[0] / max(small.shape[1], 1)
    fig = Figure(figsize=(PANEL_INCHES / max(aspect, 1.0), PANEL_INCHES * min(aspect, 1.0)))
    ax = fig.add_subplot()
    if finite.size:
        lo, hi = np.percentile(finite, [1, 99.5])
        if stretch:
            ax.imshow(np.arcsinh((small - lo) / max(hi - lo, 1e-12) * 10), origin="lower", cmap="gray",
                      interpolation="nearest")
        else:
            ax.imshow(small, origin="lower", cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
    return fig, ax, step


def thumbnails(product: Path) -> list[tuple[str, str]]:
    """(caption, base64 PNG) of the product's SCI and WHT, downsampled for the page."""
    from astropy.io import fits

    out = []
    with fits.open(product) as hdul:
        box = footprint_box(np.asarray(hdul["WHT"].data)) if "WHT" in hdul else (slice(None), slice(None))
        for extname in ("SCI", "WHT"):
            if extname not in hdul:
                continue
            small, _ = downsampled(hdul[extname].data[box])
            fig, ax, _ = image_panel(small, stretch=extname == "SCI")
            ax.set_title(f"{product.name} [{extname}]")
            ax.set_xticks([])
            ax.set_yticks([])
            out.append((f"{product.name} {extname}", png_base64(fig)))
    return out


def residual_plots(candidates: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Fit residual vectors of every candidate that recorded them (details['residuals'])."""
    from matplotlib.figure import Figure

    out = []
    for c in candidates:
        res = (c.get("details") or {}).get("residuals")
        if not res:
            continue
        x, y, dx, dy = (np.asarray(res.get(k, []), dtype=float) for k in ("x", "y", "dx", "dy"))
        if not (len(x) and len(x) == len(y) == len(dx) == len(dy)):
            continue
        longest = max(float(np.hypot(dx, dy).max()), 1e-9)
        # Arrows scaled so that the longest is 6 % of the field: residuals are mas, the field arcsec.
        span = max(float(np.ptp(x)), float(np.ptp(y)), 1e-9)
        fig = Figure(figsize=(4, 3.6))
        ax = fig.add_subplot()
        ax.quiver(x, y, dx, dy, angles="xy", scale_units="xy", scale=longest / (0.06 * span), width=0.003)
        rms = float(np.sqrt(np.mean(dx**2 + dy**2)))
        ax.set_title(f"{c['name']}: {len(x)} residuals, rms {rms:.1f} mas, longest {longest:.1f} mas", fontsize=9)
        ax.set_xlabel("east (arcsec)")
        ax.set_ylabel("north (arcsec)")
        ax.invert_xaxis()  # east to the left, as on the sky
        ax.set_aspect("equal")
        out.append((f"{c['name']} residuals", png_base64(fig)))
    return out


def registration_chart(candidates: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """One small bar chart: the registration offset (px) of each exposure for every candidate
    the images verified, beside the limit a pass needs (the verification's own figures)."""
    from matplotlib.figure import Figure

    series = []
    for c in candidates:
        verification = c.get("verification")
        if not isinstance(verification, Mapping):
            continue
        rows = [s for s in verification.get("similarity") or [] if isinstance(s, Mapping) and s.get("offset_px") is not None]
        if rows:
            series.append((c["name"], {s["name"]: float(s["offset_px"]) for s in rows},
                           next((s["max_offset_px"] for s in rows if s.get("max_offset_px") is not None), None)))
    if not series:
        return []
    exposures = sorted({name for _, offsets, _ in series for name in offsets})
    fig = Figure(figsize=(4, 3))
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    for i, (name, offsets, _) in enumerate(series):
        at = [j + (i - (len(series) - 1) / 2) * width for j, e in enumerate(exposures) if e in offsets]
        ax.bar(at, [offsets[e] for e in exposures if e in offsets], width=width, label=name)
    limit = next((lim for _, _, lim in series if lim is not None), None)
    if limit is not None:
        ax.axhline(limit, color="tab:red", linestyle="--", linewidth=1, label=f"pass limit {limit:g} px")
    ax.set_xticks(range(len(exposures)), exposures, rotation=30, fontsize=7)
    ax.set_ylabel("registration offset (px)")
    ax.legend(fontsize=6)
    ax.set_title("registration per exposure and candidate", fontsize=9)
    return [("registration per exposure and candidate", png_base64(fig))]


def matched_sources_plot(product: Path, candidate: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The chosen fit's matched catalog stars drawn over the product's SCI image."""
    from astropy.io import fits
    from astropy.wcs import WCS

    res = (candidate.get("details") or {}).get("residuals") or {}
    ra, dec = (np.asarray(res.get(k, []), dtype=float) for k in ("ra", "dec"))
    if not (ra.size and ra.size == dec.size) or not product.is_file():
        return []
    with fits.open(product) as hdul:
        if "SCI" not in hdul:
            return []
        small, step = downsampled(hdul["SCI"].data)
        wcs = WCS(hdul["SCI"].header)
    x, y = wcs.all_world2pix(ra, dec, 0)
    fig, ax, _ = image_panel(small, stretch=True)
    ax.scatter(x / step, y / step, s=40, facecolors="none", edgecolors="tab:orange", linewidths=0.8)
    ax.set_xlim(-0.5, small.shape[1] - 0.5)
    ax.set_ylim(-0.5, small.shape[0] - 0.5)
    ax.set_title(f"{product.name}: {ra.size} stars matched by {candidate['name']}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return [(f"{product.name} matched sources ({candidate['name']})", png_base64(fig))]
