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
``provenance``
    the inputs (names, sizes, hashes) and settings as this run leaves them, which a later run
    compares (:mod:`autodriz.provenance`), or null.

The report is built as a typed :class:`RunRecord` (:func:`build_report`, pure);
:meth:`RunRecord.as_dict` gives the JSON above and :func:`write_html` renders the page from it,
through the page template the visit report shares (:mod:`autodriz.htmlpage`).

The HTML page opens with a one-line summary (:func:`summary_banner`): exit status, chosen WCS,
its fit RMS and verification, and how far it moved the images from the WCS its fit started
from; then the candidates side by side (table and residual plots), then the products.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autodriz.weightmap import WEIGHT_RATIO_LIMIT, WeightCheck, weight_map_check  # noqa: F401 - re-exported
from autodriz.htmlpage import figures, render_page, table, write_page
from autodriz.reportfigures import (
    footprint_box,  # noqa: F401  (re-exported: part of this module's interface)
    matched_sources_plot,
    registration_chart,
    residual_plots,
    thumbnails,
)

if TYPE_CHECKING:
    from autodriz.drizzle import DrizzleRun
    from autodriz.exitcodes import ExitCode
    from autodriz.inputs import Dataset
    from autodriz.select import Verdict
    from autodriz.solutions.base import Candidate
    from autodriz.verify import VerificationResult

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

def plain(value: Any) -> Any:
    """JSON-friendly copy of dataclasses, paths, numpy scalars and containers (non-finite
    floats become None)."""
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------------------------------
# The run record (typed); its JSON form is the schema above
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetRecord:
    """What the input resolved to (the report's ``dataset``)."""

    root: str
    instrument: str
    filters: tuple[str, ...]
    exposures: tuple[str, ...]
    not_present: tuple[str, ...]
    #: rootname → why the member was dropped (e.g. EXPTIME = 0).
    dropped: Mapping[str, str]
    #: rootname → why it was drizzled but left out of detection and fitting.
    not_aligned: Mapping[str, tuple[str, ...]]
    has_flc: bool
    #: Who built the ASN table outside the archive (``ASNBUILT``), or None.
    asn_built: str | None

    @classmethod
    def of(cls, dataset: Dataset) -> DatasetRecord:
        """The record of a resolved dataset."""
        return cls(
            root=dataset.root,
            instrument=dataset.instrument_key,
            filters=tuple(dataset.filters),
            exposures=tuple(e.rootname for e in dataset.exposures),
            not_present=tuple(dataset.not_present),
            dropped=dict(dataset.dropped),
            not_aligned={e.rootname: tuple(e.not_alignable) for e in dataset.exposures if e.not_alignable},
            has_flc=dataset.has_flc,
            asn_built=dataset.asn_built,
        )


@dataclass(frozen=True)
class CandidateRecord:
    """One candidate as the report shows it: what it is, its score, verification and verdict."""

    name: str
    kind: str
    wcsname: str
    source: str
    quality: int
    #: The candidate's details (fit statistics, residuals …), as the strategy recorded them.
    details: Mapping[str, Any]
    notes: tuple[str, ...]
    verification: VerificationResult | None
    #: ``chosen``, ``lost`` or ``pruned`` (no verdict: the selection never ranked it).
    verdict: str
    reason: str


@dataclass(frozen=True)
class ChosenRecord:
    """The winner and why it won."""

    name: str
    wcsname: str
    why: str


@dataclass(frozen=True)
class DrizzleRecord:
    """One final AstroDrizzle run."""

    product: str
    #: Where its parameters came from (MDRIZTAB row, defaults, overrides).
    parameters: str
    seconds: float
    #: The chips the product holds, read from its ``D###DATA`` keywords.
    drizzled: tuple[str, ...]

    @classmethod
    def of(cls, run: DrizzleRun) -> DrizzleRecord:
        """The record of a finished run (seconds to 0.01 s)."""
        return cls(run.product.name, run.parameter_source, round(run.seconds, 2), tuple(run.drizzled))


@dataclass(frozen=True)
class RunStatus:
    """The exit status as far as the report knows it when written."""

    exit_code: str
    exit: int

    @classmethod
    def of(cls, code: ExitCode) -> RunStatus:
        """The status of an exit code (its name and number)."""
        return cls(code.name, int(code))


@dataclass(frozen=True)
class RunRecord:
    """Everything one run reports (see the module docstring for each field's meaning).

    :meth:`as_dict` is the JSON written to ``<root>_report.json``; :func:`write_html` renders
    the page from it.
    """

    autodriz: str
    versions: Mapping[str, str]
    input: Path
    dataset: DatasetRecord
    candidates: tuple[CandidateRecord, ...]
    chosen: ChosenRecord
    alignment: tuple[str, ...]
    #: Strategy stage (folder) → why it did not run.
    skipped_stages: Mapping[str, str]
    drizzle: tuple[DrizzleRecord, ...]
    timings: Mapping[str, float]
    qa: Mapping[str, WeightCheck]
    updated_inputs: tuple[Path, ...]
    products: tuple[Path, ...]
    settings: Mapping[str, Any]
    status: RunStatus | None = None
    #: The inputs and settings as this run leaves them (:mod:`autodriz.provenance`), or None.
    provenance: Mapping[str, Any] | None = None
    schema: int = SCHEMA_VERSION

    @property
    def astrodrizzle_runs(self) -> int:
        """Full AstroDrizzle runs in this run (the expensive step, counted)."""
        return len(self.drizzle)

    def as_dict(self) -> dict[str, Any]:
        """The report's JSON form (plain types only; the schema of the module docstring)."""
        candidates = [
            {**{f.name: getattr(c, f.name) for f in fields(c)},
             "verification": c.verification.as_dict() if c.verification is not None else None}
            for c in self.candidates
        ]
        return plain({
            "schema": self.schema,
            "autodriz": self.autodriz,
            "versions": self.versions,
            "input": self.input,
            "dataset": self.dataset,
            "candidates": candidates,
            "chosen": self.chosen,
            "alignment": self.alignment,
            "skipped_stages": self.skipped_stages,
            "drizzle": self.drizzle,
            "astrodrizzle_runs": self.astrodrizzle_runs,
            "timings": self.timings,
            "qa": self.qa,
            "updated_inputs": self.updated_inputs,
            "products": self.products,
            "settings": self.settings,
            "status": self.status,
            "provenance": self.provenance,
        })


def build_report(
    *,
    version: str,
    versions: Mapping[str, str],
    input_path: Path,
    dataset: DatasetRecord,
    candidates: Sequence[Candidate],
    verdicts: Sequence[Verdict],
    chosen: ChosenRecord,
    verifications: Mapping[str, VerificationResult],
    alignment: Sequence[str],
    drizzle_runs: Sequence[DrizzleRecord],
    timings: Mapping[str, float],
    qa: Mapping[str, WeightCheck],
    updated_inputs: Sequence[Path],
    products: Sequence[Path],
    settings: Mapping[str, Any],
    status: RunStatus | None = None,
    skipped_stages: Mapping[str, str] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> RunRecord:
    """Assemble the run record (pure): each candidate joined with its verdict and verification.

    A candidate without a verdict was pruned before ranking. Mappings are copied, so a later
    change to ``timings`` (the stages still to come) does not change the record.
    """
    verdict_by_name = {v.name: v for v in verdicts}
    entries = tuple(
        CandidateRecord(
            name=c.name, kind=c.kind, wcsname=c.wcsname, source=c.source, quality=c.quality,
            # The typed facts a strategy sets besides its details are shown with them.
            details={**c.details, **({"unfitted_wcsname": dict(c.unfitted_wcsnames)} if c.unfitted_wcsnames else {})},
            notes=tuple(c.notes), verification=verifications.get(c.name),
            verdict=v.status if (v := verdict_by_name.get(c.name)) else "pruned",
            reason=v.reason if v else "",
        )
        for c in candidates
    )
    return RunRecord(
        autodriz=version, versions=dict(versions), input=input_path, dataset=dataset, candidates=entries,
        chosen=chosen, alignment=tuple(alignment), skipped_stages=dict(skipped_stages or {}),
        drizzle=tuple(drizzle_runs), timings=dict(timings), qa=dict(qa), updated_inputs=tuple(updated_inputs),
        products=tuple(products), settings=dict(settings), status=status,
        provenance=dict(provenance) if provenance is not None else None,
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


def _number(value: Any, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def report_pictures(report: Mapping[str, Any]) -> tuple[list, list]:
    """The page's images (product thumbnails, the chosen fit's matches) and its fit charts.

    From the products and candidates of ``report`` (JSON form) only: a run renders them while
    it fingerprints its inputs, and passes them to :func:`write_html`.
    """
    images = []
    for product in report["products"]:
        p = Path(product)
        if p.is_file():
            images.extend(thumbnails(p))
    chosen_entry = next((c for c in report["candidates"] if c.get("verdict") == "chosen"), None)
    if chosen_entry is not None and report["products"]:
        images.extend(matched_sources_plot(Path(report["products"][0]), chosen_entry))
    return images, residual_plots(report["candidates"]) + registration_chart(report["candidates"])


def write_html(report: RunRecord | Mapping[str, Any], path: Path, *,
               pictures: tuple[list, list] | None = None) -> Path:
    """Write a self-contained HTML page for ``report`` (images embedded); return ``path``.

    ``report`` is the run record or its JSON form (a saved ``<root>_report.json`` renders the
    same page): the page shows what the JSON says. ``pictures``: :func:`report_pictures` of
    the same report, made already.
    """
    if isinstance(report, RunRecord):
        report = report.as_dict()
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
    images, residuals = pictures if pictures is not None else report_pictures(report)
    qa_rows = (
        f"<tr><td>{esc(Path(name).name)}</td><td>{chk['ratio'] if chk['ratio'] is None else round(chk['ratio'], 3)}</td>"
        f"<td>{chk['limit']}</td><td>{'FLAGGED' if chk['flagged'] else 'ok'}</td></tr>"
        for name, chk in report["qa"].items()
    )
    timing_rows = (f"<tr><td>{esc(k)}</td><td>{v:.1f}</td></tr>" for k, v in report["timings"].items())
    chosen = report["chosen"]
    dataset = report["dataset"]
    not_aligned = dataset.get("not_aligned") or {}
    screened = table(
        "not-aligned", ("exposure", "drizzled, not aligned because"),
        (f"<tr><td>{esc(k)}</td><td>{esc('; '.join(v))}</td></tr>" for k, v in not_aligned.items()),
    ) if not_aligned else ""
    plan = "".join(f"<li>{esc(line)}</li>" for line in report.get("alignment", ()))
    body = f"""<p>{esc(dataset['instrument'])} {esc('/'.join(dataset['filters']))},
{len(dataset['exposures'])} exposure(s); autodriz {esc(report['autodriz'])}.
Chosen <b>{esc(chosen['wcsname'])}</b> ({esc(chosen['name'])}): <span id="chosen">{esc(chosen['why'])}</span></p>
<h2>Candidates</h2>
{table("candidates", ("name", "kind", "WCSNAME", "quality", "fit RMS (mas)", "matches", "moved (mas)",
                      "verification", "verdict", "reason"), rows)}
<div id="residuals" class="row">{figures(residuals)}</div>
<h2>Products</h2>{table("qa", ("product", "std/mean WHT", "limit", "weight map"), qa_rows)}
<div id="figures" class="row">{figures(images)}</div>
<h2>Alignment</h2><ul id="alignment">{plan}</ul>{screened}
<h2>Timings (s)</h2>{table("timings", ("stage", "seconds"), timing_rows)}
<p>AstroDrizzle runs: {report['astrodrizzle_runs']}</p>"""
    status = report.get("status") or {}
    page = render_page(title=f"autodriz report: {dataset['root']}", summary=summary_banner(report),
                       ok=status.get("exit_code") == "OK", body=body)
    return write_page(page, path)
