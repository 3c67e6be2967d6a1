"""The visit report: ``<visit>_visit_report.json`` and its page (the dataset report's template,
:mod:`autodriz.htmlpage`).

JSON (``schema`` = 1): ``autodriz``, ``visit``, ``exit_code``/``exit_name``, ``grid`` (CRVAL,
scale, NAXIS, CRPIX, CD), ``groups`` (per filter group: instrument, filter, root, input,
``asn_built``, ``spectroscopic``, ``wcs_transfer``, exposures, exit, message, WCSNAME, products,
``weight_maps`` from the group's own report, links to its report and trailer), ``consistency``
(tolerance and one check per imaging product against the first), ``settings``.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from autodriz import __version__
from autodriz.config import Settings
from autodriz.exitcodes import ExitCode
from autodriz.htmlpage import render_page, table, write_page
from autodriz.report import plain
from autodriz.visit.consistency import CONSISTENCY_TOLERANCE_PIX, Consistency
from autodriz.visit.grid import OutputGrid
from autodriz.visit.outcome import GroupOutcome

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupRecord:
    """One filter group of the visit as the report shows it."""

    instrument: str
    filter: str
    root: str
    input: Path
    asn_built: bool
    spectroscopic: bool
    #: Grism/prism: the direct images' correction applied, or why none was; else None.
    wcs_transfer: str | None
    exposures: tuple[str, ...]
    exit_code: int
    exit_name: str
    message: str
    wcsname: str | None
    products: tuple[Path, ...]
    #: Product name → its weight-map check, as the group's own report recorded it.
    weight_maps: Mapping[str, Any]
    report: Path | None
    trailer: Path | None

    @classmethod
    def of(cls, outcome: GroupOutcome, weight_maps: Mapping[str, Any]) -> GroupRecord:
        """The record of a group's run; ``weight_maps`` as its own report recorded them."""
        o = outcome
        return cls(
            instrument=o.group.instrument_key, filter=o.group.filter, root=o.group.root, input=o.input,
            asn_built=o.group.asn is None, spectroscopic=o.group.spectroscopic, wcs_transfer=o.wcs_transfer or None,
            exposures=tuple(e.rootname for e in o.group.exposures), exit_code=int(o.exit_code),
            exit_name=o.exit_code.name, message=o.message, wcsname=o.wcsname, products=tuple(o.products),
            weight_maps=dict(weight_maps), report=o.report, trailer=o.trailer,
        )


@dataclass(frozen=True)
class VisitRecord:
    """Everything a visit reports; :meth:`as_dict` is ``<visit>_visit_report.json``."""

    visit: str
    exit: ExitCode
    grid: OutputGrid
    groups: tuple[GroupRecord, ...]
    checks: tuple[Consistency, ...]
    settings: Mapping[str, Any]
    tolerance_pix: float = CONSISTENCY_TOLERANCE_PIX
    autodriz: str = __version__
    schema: int = 1

    def as_dict(self) -> dict[str, Any]:
        """The report's JSON form (plain types only)."""
        return plain({
            "schema": self.schema,
            "autodriz": self.autodriz,
            "visit": self.visit,
            "exit_code": int(self.exit),
            "exit_name": self.exit.name,
            "grid": self.grid.as_dict(),
            "groups": [{f.name: getattr(g, f.name) for f in fields(g)} for g in self.groups],
            "consistency": {"tolerance_pix": self.tolerance_pix, "checks": self.checks},
            "settings": self.settings,
        })


def visit_banner(record: VisitRecord) -> str:
    """One line that says what happened: exit status, the grid, the cross-filter verdicts (pure)."""
    g = record.grid
    checks = ", ".join(f"{c.product} {c.status}" for c in record.checks) or "not run (fewer than two imaging products)"
    return " · ".join([f"{record.exit.name} (exit {int(record.exit)})",
                       f"{len(record.groups)} group(s) on one {g.nx} × {g.ny} px grid at {g.scale_arcsec}\"/px",
                       f"cross-filter check {checks}"])


def _weight_checks(outcome: GroupOutcome) -> dict[str, Any]:
    """The weight-map check of each product, as the group's own report recorded it (I/O)."""
    if outcome.report is None or not outcome.report.is_file():
        return {}
    return json.loads(outcome.report.read_text(encoding="utf-8")).get("qa", {})


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

    record = VisitRecord(
        visit=root, exit=code, grid=grid, groups=tuple(GroupRecord.of(o, _weight_checks(o)) for o in outcomes),
        checks=tuple(checks), settings=settings.as_dict(),
    )
    path = write_json_atomic(output_dir / f"{root}_visit_report.json", record.as_dict())
    write_visit_html(record, output_dir / f"{root}_visit_report.html")
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


def write_visit_html(record: VisitRecord, path: Path) -> Path:
    """The visit's page, through the same template as a dataset's report."""
    esc = html.escape
    data = record.as_dict()
    g = data["grid"]
    group_rows = (
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
    check_rows = (
        f"<tr class='{esc(c['status'])}'><td>{esc(c['product'])}</td><td>{esc(c['reference'])}</td><td>{c['n_matched']}</td>"
        f"<td>{_fmt(c['dx_pix'])}</td><td>{_fmt(c['dy_pix'])}</td><td>{_fmt(c['offset_pix'])}</td>"
        f"<td>{_fmt(c['rms_pix'])}</td><td>{esc(c['status'])}</td></tr>"
        for c in data["consistency"]["checks"]
    )
    body = f"""<p>autodriz {esc(data['autodriz'])}.</p>
<h2>Common grid</h2><p id="grid">north up, {g['scale_arcsec']}"/px, {g['naxis'][0]} × {g['naxis'][1]} px,
CRVAL {g['crval'][0]:.8f} {g['crval'][1]:.8f}, CRPIX {g['crpix'][0]} {g['crpix'][1]}</p>
<h2>Groups</h2>
{table("groups", ("instrument", "filter", "root", "exposures", "exit", "WCSNAME", "products",
                  "weight maps (std/mean)", "report"), group_rows)}
{'<h2>Grism/prism</h2><ul id="grism">' + grism_rows + '</ul>' if grism_rows else ''}
<h2>Cross-filter consistency</h2>
<p>Sources matched between each product and the first filter's; the median offset must be ≤
{data['consistency']['tolerance_pix']} px.</p>
{table("consistency", ("product", "reference", "matched", "dx (px)", "dy (px)", "offset (px)", "rms (px)", "verdict"),
       check_rows, empty="fewer than two imaging products: nothing to compare")}"""
    page = render_page(title=f"autodriz visit: {record.visit}", summary=visit_banner(record),
                       ok=record.exit == ExitCode.OK, body=body)
    return write_page(page, path)
