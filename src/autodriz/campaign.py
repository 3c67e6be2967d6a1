"""The campaign report: one view of a whole ``autodriz batch`` ledger (JSON + HTML).

``<ledger>.campaign.json`` and ``<ledger>.campaign.html`` are written beside the ledger at the end
of every campaign and by ``autodriz batch --report LEDGER``: counts by outcome and by the chosen
WCS's kind and catalog, failure classes with examples, histograms of run time and peak memory,
the slowest and largest datasets, and what changed since the previous report (new datasets,
datasets run again, status or WCS changes). :func:`build_campaign` is pure (rows in, data out);
:func:`write_campaign_report` does the I/O.
"""

from __future__ import annotations

import html
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: Datasets listed as the slowest / largest, and examples kept per failure class.
TOP = 5
EXAMPLES = 3

_FIT = re.compile(r"-FIT_(?P<mode>[A-Z]+)_(?P<catalog>[A-Za-z0-9]+)")
_APRIORI = re.compile(r"^IDC_[A-Za-z0-9]+-(?P<catalog>[A-Za-z0-9.+]+)$")


def wcs_kind(wcsname: str | None) -> tuple[str, str]:
    """(kind, catalog) of a chosen WCSNAME: ``aposteriori``/``apriori``/``default``/``other``/``none``."""
    if not wcsname:
        return "none", "-"
    if m := _FIT.search(wcsname):
        return "aposteriori", m["catalog"]
    if m := _APRIORI.match(wcsname):
        return "apriori", m["catalog"]
    if re.fullmatch(r"IDC_[A-Za-z0-9]+", wcsname):
        return "default", "-"
    return "other", wcsname


def _label(path: str, base: Path | None) -> str:
    from autodriz.batch import dataset_label

    return dataset_label(path, base)


def _histogram(values: Sequence[float], bins: int = 10) -> dict[str, list[float]]:
    if not values:
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(np.asarray(values, dtype=float), bins=min(bins, max(1, len(values))))
    return {"edges": [round(float(e), 2) for e in edges], "counts": [int(c) for c in counts]}


def build_campaign(
    rows: Sequence[Any], *, meta: Mapping[str, str] | None = None, previous: Mapping[str, Any] | None = None,
    base: Path | None = None,
) -> dict[str, Any]:
    """The campaign report's data from the ledger's rows (and the previous report, if any).

    Parameters
    ----------
    rows : sequence of autodriz.ledger.Row
        Every dataset of the ledger.
    meta : mapping, optional
        The ledger's metadata (last campaign, its command and times).
    previous : mapping, optional
        The previous ``campaign.json``; its ``datasets`` are compared with these rows.
    base : Path, optional
        Folder that dataset labels are relative to (the ledger's).

    Returns
    -------
    dict
        JSON-friendly report.
    """
    by_status = Counter(r.status for r in rows)
    by_kind: Counter[str] = Counter()
    by_catalog: Counter[str] = Counter()
    failures: dict[str, dict[str, Any]] = {}
    datasets: dict[str, dict[str, Any]] = {}
    for r in rows:
        kind, catalog = wcs_kind(r.wcsname)
        label = _label(r.input, base)
        datasets[label] = {"status": r.status, "wcsname": r.wcsname, "attempts": r.attempts, "seconds": r.seconds,
                           "peak_rss_mb": r.peak_rss_mb, "exit_name": r.exit_name, "reason": r.reason}
        if r.status == "done":
            by_kind[kind] += 1
            if kind in ("aposteriori", "apriori"):
                by_catalog[catalog] += 1
        if r.status == "failed":
            cls = failures.setdefault(r.exit_name or "UNKNOWN", {"count": 0, "examples": []})
            cls["count"] += 1
            if len(cls["examples"]) < EXAMPLES:
                cls["examples"].append({"dataset": label, "message": (r.message or "").splitlines()[0][:300]
                                        if r.message else ""})
    timed = [r for r in rows if r.seconds is not None]
    sized = [r for r in rows if r.peak_rss_mb is not None]
    changes: dict[str, list[str]] = {"new": [], "ran_again": [], "status_changed": [], "wcs_changed": []}
    if previous:
        before = previous.get("datasets") or {}
        for label, now in datasets.items():
            was = before.get(label)
            if was is None:
                changes["new"].append(label)
                continue
            if now["attempts"] != was.get("attempts"):
                changes["ran_again"].append(label)
            if now["status"] != was.get("status"):
                changes["status_changed"].append(f"{label}: {was.get('status')} → {now['status']}")
            if now["wcsname"] != was.get("wcsname"):
                changes["wcs_changed"].append(f"{label}: {was.get('wcsname')} → {now['wcsname']}")
    return {
        "schema": SCHEMA_VERSION,
        "campaign": dict(meta or {}),
        "datasets_total": len(rows),
        "counts": {s: by_status.get(s, 0) for s in ("done", "failed", "skipped", "pending", "running")},
        "chosen_wcs": {"by_kind": dict(by_kind), "by_catalog": dict(by_catalog)},
        "failure_classes": dict(sorted(failures.items(), key=lambda kv: -kv[1]["count"])),
        "seconds": {"histogram": _histogram([r.seconds for r in timed]),
                    "total": round(sum(r.seconds for r in timed), 1)},
        "peak_rss_mb": {"histogram": _histogram([r.peak_rss_mb for r in sized])},
        "slowest": [{"dataset": _label(r.input, base), "seconds": r.seconds}
                    for r in sorted(timed, key=lambda r: -r.seconds)[:TOP]],
        "largest": [{"dataset": _label(r.input, base), "peak_rss_mb": r.peak_rss_mb}
                    for r in sorted(sized, key=lambda r: -r.peak_rss_mb)[:TOP]],
        "changes_since_previous": changes if previous else None,
        "datasets": datasets,
    }


def _histogram_png(hist: Mapping[str, list[float]], xlabel: str) -> str | None:
    from matplotlib.figure import Figure

    from autodriz.reportfigures import png_base64

    if not hist.get("counts"):
        return None
    edges = np.asarray(hist["edges"])
    fig = Figure(figsize=(5, 2.8))
    ax = fig.add_subplot()
    ax.bar(edges[:-1], hist["counts"], width=np.diff(edges), align="edge", color="#4477aa", edgecolor="white")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("datasets")
    return png_base64(fig)


def _table(header: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><tr>{head}</tr>{rows}</table>"


def campaign_html(data: Mapping[str, Any], title: str) -> str:
    """A self-contained page (histograms embedded as PNG) for the campaign report."""
    esc = html.escape
    figures = []
    for key, label in (("seconds", "run time per dataset (s)"), ("peak_rss_mb", "peak memory per dataset (MB)")):
        png = _histogram_png(data[key]["histogram"], label)
        if png:
            figures.append(f"<figure><img alt='{esc(label)}' src='data:image/png;base64,{png}'>"
                           f"<figcaption>{esc(label)}</figcaption></figure>")
    failures = [(name, c["count"], "; ".join(f"{e['dataset']}: {e['message']}" for e in c["examples"]))
                for name, c in data["failure_classes"].items()]
    changes = data.get("changes_since_previous")
    change_rows = [(k, len(v), ", ".join(v[:10])) for k, v in (changes or {}).items()]
    camp = data.get("campaign") or {}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}figure{{display:inline-block;margin:0 1em}}</style>
</head><body>
<h1>{esc(title)}</h1>
<p>last campaign {esc(str(camp.get('last_campaign', '-')))}: started {esc(str(camp.get('last_started', '-')))},
ended {esc(str(camp.get('last_ended', '-')))}; {data['datasets_total']} dataset(s)</p>
<h2>Outcomes</h2>{_table(["status", "datasets"], list(data["counts"].items()))}
<h2>Chosen WCS</h2>{_table(["kind", "datasets"], list(data["chosen_wcs"]["by_kind"].items()))}
{_table(["catalog", "datasets"], list(data["chosen_wcs"]["by_catalog"].items()))}
<h2>Failure classes</h2>{_table(["exit", "datasets", "examples"], failures) if failures else "<p>none</p>"}
<h2>Time and memory</h2>{"".join(figures) or "<p>no dataset has run</p>"}
<h3>Slowest</h3>{_table(["dataset", "seconds"], [(d["dataset"], d["seconds"]) for d in data["slowest"]])}
<h3>Largest (peak memory)</h3>{_table(["dataset", "MB"], [(d["dataset"], d["peak_rss_mb"]) for d in data["largest"]])}
<h2>Since the previous report</h2>{_table(["change", "datasets", "which"], change_rows) if changes else "<p>first report</p>"}
</body></html>
"""


def report_paths(ledger_path: Path) -> tuple[Path, Path]:
    """``<ledger stem>.campaign.json`` and ``.campaign.html`` beside the ledger."""
    stem = ledger_path.name.removesuffix(".sqlite")
    return ledger_path.with_name(f"{stem}.campaign.json"), ledger_path.with_name(f"{stem}.campaign.html")


def write_campaign_report(ledger_path: Path) -> tuple[Path, Path]:
    """Read the ledger, compare with the previous report, write both files atomically; return them."""
    import json
    import os
    import tempfile

    from autodriz.ledger import Ledger
    from autodriz.products import write_json_atomic

    with Ledger(ledger_path, readonly=True) as ledger:
        rows, meta = ledger.rows(), ledger.meta()
    json_path, html_path = report_paths(ledger_path)
    previous = None
    if json_path.is_file():
        try:
            previous = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.warning("previous campaign report %s unreadable (%s): no comparison", json_path, exc)
    data = build_campaign(rows, meta=meta, previous=previous, base=ledger_path.parent)
    write_json_atomic(json_path, data)
    fd, tmp = tempfile.mkstemp(dir=html_path.parent, prefix=f".{html_path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(campaign_html(data, f"autodriz campaign: {ledger_path.name}"))
    os.replace(tmp, html_path)
    logger.info("campaign report: %s, %s", json_path, html_path)
    return json_path, html_path
