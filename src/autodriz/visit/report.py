"""The visit report: ``<visit>_visit_report.json`` and its page."""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any


from autodriz import __version__
from autodriz.config import Settings
from autodriz.exitcodes import ExitCode
from autodriz.visit.consistency import CONSISTENCY_TOLERANCE_PIX, Consistency
from autodriz.visit.grid import OutputGrid
from autodriz.visit.outcome import GroupOutcome

logger = logging.getLogger(__name__)


def write_visit_report(
    output_dir: Path,
    root: str,
    grid: OutputGrid,
    outcomes: Sequence[GroupOutcome],
    checks: Sequence[Consistency],
    code: ExitCode,
    settings: Settings,
) -> Path:
    """``<root>_visit_report.json`` and ``.html`` (combined report; per-group reports linked).

    Per group: its outcome, products, the weight-map check of each product (from the group's
    own report), the grism WCS transfer; then the grid and the cross-filter checks.
    """
    from autodriz.products import write_json_atomic
    from autodriz.report import _plain

    def weight_checks(o: GroupOutcome) -> dict[str, Any]:
        # The weight-map check of each product, as its own report recorded it.
        if o.report is None or not o.report.is_file():
            return {}
        return json.loads(o.report.read_text(encoding="utf-8")).get("qa", {})

    data = _plain({
        "schema": 1,
        "autodriz": __version__,
        "visit": root,
        "exit_code": int(code),
        "exit_name": code.name,
        "grid": grid.as_dict(),
        "groups": [
            {
                "instrument": o.group.instrument_key,
                "filter": o.group.filter,
                "root": o.group.root,
                "input": o.input,
                "asn_built": o.group.asn is None,
                "spectroscopic": o.group.spectroscopic,
                "wcs_transfer": o.wcs_transfer or None,
                "exposures": [e.rootname for e in o.group.exposures],
                "exit_code": int(o.exit_code),
                "exit_name": o.exit_code.name,
                "message": o.message,
                "wcsname": o.wcsname,
                "products": list(o.products),
                "weight_maps": weight_checks(o),
                "report": o.report,
                "trailer": o.trailer,
            }
            for o in outcomes
        ],
        "consistency": {
            "tolerance_pix": CONSISTENCY_TOLERANCE_PIX,
            "checks": [asdict(c) for c in checks],
        },
        "settings": settings.as_dict(),
    })
    path = write_json_atomic(output_dir / f"{root}_visit_report.json", data)
    _write_visit_html(data, output_dir / f"{root}_visit_report.html")
    logger.info("visit report: %s", path)
    return path


def _fmt(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else html.escape(str(value))


def _weight_text(checks: Mapping[str, Any]) -> str:
    """``name ratio ok|FLAGGED`` per product, for the groups table."""
    parts = []
    for name, chk in checks.items():
        ratio = chk.get("ratio")
        parts.append(f"{html.escape(Path(name).name)} {'—' if ratio is None else f'{ratio:.3f}'} "
                     f"{'FLAGGED' if chk.get('flagged') else 'ok'}")
    return "<br>".join(parts) or "-"


def _report_link(report: str | None) -> str:
    if not report:
        return "-"
    name = html.escape(Path(report).name.replace(".json", ".html"), quote=True)
    return f"<a href='{name}'>report</a>"


def _write_visit_html(data: Mapping[str, Any], path: Path) -> Path:
    esc = html.escape
    g = data["grid"]
    group_rows = "".join(
        f"<tr><td>{esc(x['instrument'])}</td><td>{esc(x['filter'])}</td><td>{esc(x['root'])}</td>"
        f"<td>{len(x['exposures'])}</td><td>{esc(x['exit_name'])}</td><td>{esc(x['wcsname'] or '-')}</td>"
        f"<td>{', '.join(esc(Path(p).name) for p in x['products'])}</td><td>{_weight_text(x['weight_maps'])}</td>"
        f"<td>{_report_link(x['report'])}</td></tr>"
        for x in data["groups"]
    )
    grism_rows = "".join(
        f"<li>{esc(x['instrument'])} {esc(x['filter'])} ({esc(x['root'])}): drizzled on the common grid; "
        f"{esc(x['wcs_transfer'] or '')}</li>"
        for x in data["groups"] if x["spectroscopic"]
    )
    check_rows = "".join(
        f"<tr class='{esc(c['status'])}'><td>{esc(c['product'])}</td><td>{esc(c['reference'])}</td><td>{c['n_matched']}</td>"
        f"<td>{_fmt(c['dx_pix'])}</td><td>{_fmt(c['dy_pix'])}</td><td>{_fmt(c['offset_pix'])}</td>"
        f"<td>{_fmt(c['rms_pix'])}</td><td>{esc(c['status'])}</td></tr>"
        for c in data["consistency"]["checks"]
    ) or "<tr><td colspan='8'>fewer than two imaging products: nothing to compare</td></tr>"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>autodriz visit {esc(data['visit'])}</title>
<style>body {{ font-family: sans-serif; margin: 2em; }} table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
td, th {{ border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }} tr.fail {{ background: #fdd; }}
tr.pass {{ background: #dfd; }}</style></head><body>
<h1>autodriz visit: {esc(data['visit'])}</h1>
<p>Exit: {esc(data['exit_name'])} ({data['exit_code']}); autodriz {esc(data['autodriz'])}.</p>
<h2>Common grid</h2><p id="grid">north up, {g['scale_arcsec']}"/px, {g['naxis'][0]} × {g['naxis'][1]} px,
CRVAL {g['crval'][0]:.8f} {g['crval'][1]:.8f}, CRPIX {g['crpix'][0]} {g['crpix'][1]}</p>
<h2>Groups</h2><table id="groups"><tr><th>instrument</th><th>filter</th><th>root</th><th>exposures</th>
<th>exit</th><th>WCSNAME</th><th>products</th><th>weight maps (std/mean)</th><th>report</th></tr>{group_rows}</table>
{'<h2>Grism/prism</h2><ul id="grism">' + grism_rows + '</ul>' if grism_rows else ''}
<h2>Cross-filter consistency</h2>
<p>Sources matched between each product and the first filter's; the median offset must be ≤
{data['consistency']['tolerance_pix']} px.</p>
<table id="consistency"><tr><th>product</th><th>reference</th><th>matched</th><th>dx (px)</th><th>dy (px)</th>
<th>offset (px)</th><th>rms (px)</th><th>verdict</th></tr>{check_rows}</table>
</body></html>
"""
    tmp = path.with_name(path.name + ".autodriz-tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
