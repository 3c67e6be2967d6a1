"""The run report: ``<root>_report.json`` (documented schema) and ``<root>_report.html``.

JSON schema (``schema`` = 1); every key is always present:

``schema``, ``autodriz``, ``versions``
    report format version, autodriz version, versions of the packages that did the work.
``input``, ``dataset``
    what was asked for and what it resolved to (root, instrument, filters, exposures,
    members not present, members dropped and why (``dropped``: rootname → reason, e.g.
    EXPTIME = 0), exposures drizzled but left out of source detection and fitting and why
    (``not_aligned``: rootname → reasons, :mod:`autodriz.screening`), FLC in step, whether
    the ASN table was built outside the archive).
``candidates``
    one entry per candidate: name, kind (default/apriori/aposteriori), WCSNAME, source, fit
    quality (-1 when not a fit), details (fit statistics …), notes, verification (or null),
    verdict (chosen/lost/pruned) and its reason.
``chosen``
    name, WCSNAME and why it won.
``alignment``
    sentences saying which alignment stages ran or why not.
``skipped_stages``
    strategy stage (folder name: ``apriori``, ``aposteriori`` …) → why it did not run.
``drizzle``
    one entry per AstroDrizzle run: product, where its parameters came from, seconds, and
    ``drizzled``: the chips the product holds, read from its ``D###DATA`` keywords
    (``<file>[sci,<n>]``) after they were checked against the exposures meant to be drizzled.
``astrodrizzle_runs``
    number of full AstroDrizzle runs in this run (the expensive step, counted).
``timings``
    seconds per stage.
``qa``
    per product: the weight-map check (std/mean of WHT over the footprint; flagged at ≥ 0.3, as
    the hand reductions autodriz replaces did).
``updated_inputs``, ``products``, ``settings``
    files whose WCS was replaced, products written, effective settings with provenance.
``status``
    the run's exit status as far as the report knows it when written (``exit_code`` name and
    ``exit`` number: OK or DEFAULT_ONLY; a later failure is in the trailer), or null.

The HTML page opens with a one-line summary (:func:`summary_banner`): exit status, chosen WCS,
its fit RMS and verification, and how far it moved the images from the WCS its fit started
from; then the candidates side by side (table and residual plots), then the products.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autodriz import failpoints

if TYPE_CHECKING:
    from autodriz.verify import VerificationResult

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

#: std(WHT)/mean(WHT) over the footprint at or above which the weight map is flagged.
WEIGHT_RATIO_LIMIT = 0.3


@dataclass(frozen=True)
class WeightCheck:
    """Uniformity of a drizzle weight map over its footprint."""

    ratio: float
    limit: float
    flagged: bool
    footprint_pixels: int


def weight_map_check(wht: np.ndarray, limit: float = WEIGHT_RATIO_LIMIT) -> WeightCheck:
    """std/mean of the weight map where it is positive; flagged when ≥ ``limit``.

    A strongly non-uniform weight map over the footprint means uneven coverage or many rejected
    pixels; NaN-only or empty maps give ``ratio = nan`` and are flagged.
    """
    w = np.asarray(wht)
    good = np.isfinite(w) & (w > 0)
    n = int(good.sum())
    if n == 0:
        return WeightCheck(float("nan"), limit, True, 0)
    # Accumulate in float64 without a float64 copy of a full-size map.
    values = w[good]
    ratio = float(values.std(dtype=np.float64) / values.mean(dtype=np.float64))
    return WeightCheck(ratio, limit, ratio >= limit, n)


def _plain(value: Any) -> Any:
    """JSON-friendly copy of dataclasses, paths, numpy scalars and containers."""
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def build_report(
    *,
    version: str,
    versions: Mapping[str, str],
    input_path: Path,
    dataset: Mapping[str, Any],
    candidates: Sequence[Any],
    verdicts: Sequence[Any],
    chosen: Mapping[str, Any],
    verifications: Mapping[str, VerificationResult],
    alignment: Sequence[str],
    drizzle_runs: Sequence[Mapping[str, Any]],
    timings: Mapping[str, float],
    qa: Mapping[str, WeightCheck],
    updated_inputs: Sequence[Path],
    products: Sequence[Path],
    settings: Mapping[str, Any],
    status: Mapping[str, Any] | None = None,
    skipped_stages: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Assemble the report dictionary (pure). See the module docstring for the schema."""
    verdict_by_name = {v.name: v for v in verdicts}
    entries = []
    for c in candidates:
        v = verdict_by_name.get(c.name)
        entries.append(
            {
                "name": c.name,
                "kind": c.kind,
                "wcsname": c.wcsname,
                "source": c.source,
                "quality": c.quality,
                "details": _plain(c.details),
                "notes": list(c.notes),
                "verification": _plain(record.as_dict()) if (record := verifications.get(c.name)) else None,
                "verdict": v.status if v else "pruned",
                "reason": v.reason if v else "",
            }
        )
    return _plain(
        {
            "schema": SCHEMA_VERSION,
            "autodriz": version,
            "versions": dict(versions),
            "input": input_path,
            "dataset": dataset,
            "candidates": entries,
            "chosen": chosen,
            "alignment": list(alignment),
            # Stages (strategies) that did not run, and why: folder → reason.
            "skipped_stages": dict(skipped_stages or {}),
            "drizzle": list(drizzle_runs),
            "astrodrizzle_runs": len(drizzle_runs),
            "timings": dict(timings),
            "qa": {name: check for name, check in qa.items()},
            "updated_inputs": list(updated_inputs),
            "products": list(products),
            "settings": settings,
            "status": dict(status) if status is not None else None,
        }
    )


# ------------------------------------------------------------------------------------------
# Summary figures of a candidate (pure)
# ------------------------------------------------------------------------------------------


def fit_figures(candidate: Mapping[str, Any]) -> dict[str, Any]:
    """RMS (mas), matches and the move of the images (mas) of a candidate's fit, where known.

    ``moved_mas`` is the mean per-exposure correction (east, north) the fit applied to the WCS
    it started from (``details['start']``); the default's is 0 by definition; None when the
    candidate is not a fit.
    """
    details = candidate.get("details") or {}
    stats = details.get("statistics") or {}
    corrections = [e.get("correction_mas") for e in details.get("per_exposure") or [] if e.get("correction_mas")]
    moved = None
    if corrections:
        east, north = np.mean(np.asarray(corrections, dtype=float), axis=0)
        moved = float(np.hypot(east, north))
    elif candidate.get("kind") == "default":
        moved = 0.0
    return {
        "rms_mas": stats.get("rms_mas"),
        "n_matches": stats.get("n_matches"),
        "moved_mas": moved,
        "start": details.get("start"),
    }


def summary_banner(report: Mapping[str, Any]) -> str:
    """One line that says what happened: status, chosen WCS, fit RMS, verification, move.

    The same words head the HTML page (``id="summary"``).
    """
    chosen = report["chosen"]
    entry = next((c for c in report["candidates"] if c["name"] == chosen["name"]), {})
    status = report.get("status") or {}
    parts = [f"{status['exit_code']} (exit {status['exit']})" if status else "status not recorded",
             f"chosen WCS {chosen['wcsname']} ({chosen['name']})"]
    figures = fit_figures(entry)
    if figures["rms_mas"] is not None:
        parts.append(f"fit RMS {figures['rms_mas']:.1f} mas over {figures['n_matches']} matches, "
                     f"quality {entry.get('quality')}")
    verification = entry.get("verification")
    if isinstance(verification, Mapping):
        parts.append(f"verification {verification.get('status')}: {verification.get('reason')}")
    if figures["moved_mas"] is not None and entry.get("kind") != "default":
        parts.append(f"images moved {figures['moved_mas']:.1f} mas from {figures['start'] or 'the default WCS'}")
    elif entry.get("kind") == "default":
        parts.append("images at the pipeline-default WCS")
    return " · ".join(parts)


# ------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


#: Longest side of an image panel on the page, inches (at the 80 dpi of :func:`_png`).
PANEL_INCHES = 4.0


def footprint_box(wht: np.ndarray) -> tuple[slice, slice]:
    """The bounding box of ``wht > 0`` (the whole array when nothing is covered)."""
    covered = np.isfinite(wht) & (wht > 0)
    if not covered.any():
        return slice(0, wht.shape[0]), slice(0, wht.shape[1])
    rows, cols = np.flatnonzero(covered.any(axis=1)), np.flatnonzero(covered.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _image_panel(data: np.ndarray, *, stretch: bool) -> tuple[Any, Any, int]:
    """A figure showing ``data`` downsampled to ~600 px: (figure, axes, downsampling step).

    ``stretch``: asinh grey scale (faint sky and bright stars both visible), else linear viridis.
    The figure's longest side is :data:`PANEL_INCHES`, so a tall strip is a narrow panel, not a
    full-height one.
    """
    from matplotlib.figure import Figure

    step = max(1, int(np.ceil(max(data.shape) / 600)))
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


def _thumbnails(product: Path) -> list[tuple[str, str]]:
    """(caption, base64 PNG) of the product's SCI and WHT, downsampled for the page."""
    from astropy.io import fits

    out = []
    with fits.open(product) as hdul:
        box = footprint_box(np.asarray(hdul["WHT"].data)) if "WHT" in hdul else (slice(None), slice(None))
        for extname in ("SCI", "WHT"):
            if extname not in hdul:
                continue
            # Downsample the memory-mapped pixels before converting them (the panel shows ~600
            # px of a ~4000 px side): the same pixels as converting first, a fraction of the work.
            data = hdul[extname].data[box]
            step = max(1, int(np.ceil(max(data.shape) / 600)))
            fig, ax, _ = _image_panel(np.asarray(data[::step, ::step], dtype=float), stretch=extname == "SCI")
            ax.set_title(f"{product.name} [{extname}]")
            ax.set_xticks([])
            ax.set_yticks([])
            out.append((f"{product.name} {extname}", _png(fig)))
    return out


def _residual_plots(candidates: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
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
        out.append((f"{c['name']} residuals", _png(fig)))
    return out


def _registration_chart(candidates: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
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
    return [("registration per exposure and candidate", _png(fig))]


def _matched_sources_plot(product: Path, candidate: Mapping[str, Any]) -> list[tuple[str, str]]:
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
        data = np.asarray(hdul["SCI"].data, dtype=float)
        wcs = WCS(hdul["SCI"].header)
    x, y = wcs.all_world2pix(ra, dec, 0)
    fig, ax, step = _image_panel(data, stretch=True)
    small_shape = (len(range(0, data.shape[0], step)), len(range(0, data.shape[1], step)))
    ax.scatter(x / step, y / step, s=40, facecolors="none", edgecolors="tab:orange", linewidths=0.8)
    ax.set_xlim(-0.5, small_shape[1] - 0.5)
    ax.set_ylim(-0.5, small_shape[0] - 0.5)
    ax.set_title(f"{product.name}: {ra.size} stars matched by {candidate['name']}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return [(f"{product.name} matched sources ({candidate['name']})", _png(fig))]


def _number(value: Any, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def write_html(report: Mapping[str, Any], path: Path) -> Path:
    """Write a self-contained HTML page for ``report`` (images embedded); return ``path``."""
    esc = html.escape
    rows = []
    for c in report["candidates"]:
        verif = c.get("verification")
        if verif is None:
            vtext = "—"
        elif isinstance(verif, Mapping):
            vtext = esc(f"{verif.get('status', '?')}: {verif.get('reason', '')}")
        else:
            vtext = esc(str(verif))
        fig = fit_figures(c)
        rows.append(
            "<tr class='{cls}'><td>{name}</td><td>{kind}</td><td>{wcs}</td><td>{q}</td><td>{rms}</td><td>{n}</td>"
            "<td>{moved}</td><td>{v}</td><td>{verdict}</td><td>{reason}</td></tr>".format(
                cls=esc(c["verdict"]), name=esc(c["name"]), kind=esc(c["kind"]), wcs=esc(c["wcsname"]),
                q=c["quality"], rms=_number(fig["rms_mas"]), n="—" if fig["n_matches"] is None else fig["n_matches"],
                moved=_number(fig["moved_mas"]), v=vtext, verdict=esc(c["verdict"]), reason=esc(c["reason"]),
            )
        )
    thumbnails = []
    for product in report["products"]:
        p = Path(product)
        if p.is_file():
            thumbnails.extend(_thumbnails(p))
    chosen_entry = next((c for c in report["candidates"] if c.get("verdict") == "chosen"), None)
    if chosen_entry is not None and report["products"]:
        thumbnails.extend(_matched_sources_plot(Path(report["products"][0]), chosen_entry))
    residuals = _residual_plots(report["candidates"]) + _registration_chart(report["candidates"])
    qa_rows = "".join(
        f"<tr><td>{esc(Path(name).name)}</td><td>{chk['ratio'] if chk['ratio'] is None else round(chk['ratio'], 3)}</td>"
        f"<td>{chk['limit']}</td><td>{'FLAGGED' if chk['flagged'] else 'ok'}</td></tr>"
        for name, chk in report["qa"].items()
    )
    timing_rows = "".join(f"<tr><td>{esc(k)}</td><td>{v:.1f}</td></tr>" for k, v in report["timings"].items())

    def figures(items: Sequence[tuple[str, str]]) -> str:
        return "".join(
            f"<figure><img alt='{esc(cap)}' src='data:image/png;base64,{b64}'><figcaption>{esc(cap)}</figcaption></figure>"
            for cap, b64 in items
        )

    chosen = report["chosen"]
    not_aligned = report["dataset"].get("not_aligned") or {}
    screened = (
        "<table id='not-aligned'><tr><th>exposure</th><th>drizzled, not aligned because</th></tr>"
        + "".join(f"<tr><td>{esc(k)}</td><td>{esc('; '.join(v))}</td></tr>" for k, v in not_aligned.items())
        + "</table>"
    ) if not_aligned else ""
    plan = "".join(f"<li>{esc(line)}</li>" for line in report.get("alignment", ()))
    status = report.get("status") or {}
    banner_class = "ok" if status.get("exit_code") == "OK" else "warn"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>autodriz report {esc(report['dataset']['root'])}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; max-width: 1400px; }} table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
td, th {{ border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
tr.chosen {{ background: #dfd; }} tr.pruned {{ color: #777; }}
#summary {{ font-size: 1.05em; padding: 0.6em 0.9em; border-radius: 4px; }}
#summary.ok {{ background: #e3f4e3; border: 1px solid #7b7; }} #summary.warn {{ background: #fff4d6; border: 1px solid #db4; }}
.row {{ display: flex; flex-wrap: wrap; gap: 0.8em; align-items: flex-start; }}
figure {{ margin: 0; }} figcaption {{ font-size: 0.85em; color: #444; }}
.row img {{ max-width: 340px; max-height: 340px; }} p.broken {{ color: #b00; }}
</style></head><body>
<h1>autodriz report: {esc(report['dataset']['root'])}</h1>
<p id="summary" class="{banner_class}">{esc(summary_banner(report))}</p>
<p>{esc(report['dataset']['instrument'])} {esc('/'.join(report['dataset']['filters']))},
{len(report['dataset']['exposures'])} exposure(s); autodriz {esc(report['autodriz'])}.
Chosen <b>{esc(chosen['wcsname'])}</b> ({esc(chosen['name'])}): <span id="chosen">{esc(chosen['why'])}</span></p>
<h2>Candidates</h2>
<table id="candidates"><tr><th>name</th><th>kind</th><th>WCSNAME</th><th>quality</th><th>fit RMS (mas)</th>
<th>matches</th><th>moved (mas)</th><th>verification</th><th>verdict</th><th>reason</th></tr>
{''.join(rows)}</table>
<div id="residuals" class="row">{figures(residuals)}</div>
<h2>Products</h2><table id="qa"><tr><th>product</th><th>std/mean WHT</th><th>limit</th><th>weight map</th></tr>{qa_rows}</table>
<div id="figures" class="row">{figures(thumbnails)}</div>
<h2>Alignment</h2><ul id="alignment">{plan}</ul>{screened}
<h2>Timings (s)</h2><table id="timings">{timing_rows}</table>
<p>AstroDrizzle runs: {report['astrodrizzle_runs']}</p>
<script>
// Say so on the page when an embedded image did not decode (and count them for checks).
window.addEventListener("load", () => {{
  const images = Array.from(document.images);
  const broken = images.filter((img) => !(img.complete && img.naturalWidth > 0));
  broken.forEach((img) => img.insertAdjacentHTML("afterend", "<p class='broken'>image failed to load</p>"));
  document.body.dataset.imagesLoaded = `${{images.length - broken.length}}/${{images.length}}`;
}});
</script>
</body></html>
"""
    tmp = path.with_name(path.name + ".autodriz-tmp")
    failpoints.hit("report.html")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
