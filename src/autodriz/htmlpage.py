"""The one HTML page of autodriz's reports: the dataset report and the visit report both render
through :func:`render_page` (same head, style sheet, summary banner and image check).

A page is self-contained (images embedded as base64 PNG) and written atomically
(:func:`write_page`), so a reader never sees half a page.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from pathlib import Path
from string import Template

from autodriz import failpoints

# string.Template (``$name``) rather than str.format: the style sheet and the script keep their
# braces as they are.
_PAGE = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>$title</title>
<style>
body { font-family: sans-serif; margin: 1.5em; max-width: 1400px; } table { border-collapse: collapse; margin-bottom: 1.5em; }
td, th { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
tr.chosen, tr.pass { background: #dfd; } tr.pruned { color: #777; } tr.fail { background: #fdd; }
#summary { font-size: 1.05em; padding: 0.6em 0.9em; border-radius: 4px; }
#summary.ok { background: #e3f4e3; border: 1px solid #7b7; } #summary.warn { background: #fff4d6; border: 1px solid #db4; }
.row { display: flex; flex-wrap: wrap; gap: 0.8em; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 0.85em; color: #444; }
.row img { max-width: 340px; max-height: 340px; } p.broken { color: #b00; }
</style></head><body>
<h1>$heading</h1>
<p id="summary" class="$summary_class">$summary</p>
$body
<script>
// Say so on the page when an embedded image did not decode (and count them for checks).
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter((img) => !(img.complete && img.naturalWidth > 0));
  broken.forEach((img) => img.insertAdjacentHTML("afterend", "<p class='broken'>image failed to load</p>"));
  document.body.dataset.imagesLoaded = `$${images.length - broken.length}/$${images.length}`;
});
</script>
</body></html>
""")


def render_page(*, title: str, summary: str, ok: bool, body: str) -> str:
    """The whole page (pure).

    Parameters
    ----------
    title : str
        Plain text: the ``<title>`` and the ``<h1>`` (escaped here).
    summary : str
        Plain text: the one-line banner under the heading (``id="summary"``, escaped here).
    ok : bool
        Banner colour: green when the run ended OK, amber otherwise.
    body : str
        HTML of the sections, already escaped by the caller (built with :func:`table`,
        :func:`figures` and :func:`html.escape`).
    """
    esc = html.escape
    return _PAGE.substitute(title=esc(title), heading=esc(title), summary=esc(summary),
                            summary_class="ok" if ok else "warn", body=body)


def table(table_id: str, headers: Sequence[str], rows: Iterable[str], *, empty: str = "") -> str:
    """``<table id=…>`` with a header row (``headers`` plain text) and ``rows`` (``<tr>`` HTML).

    ``empty``: plain text of a single row spanning the table when there are no rows.
    """
    body = "".join(rows)
    if not body and empty:
        body = f"<tr><td colspan='{len(headers)}'>{html.escape(empty)}</td></tr>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    return f"<table id=\"{html.escape(table_id)}\"><tr>{head}</tr>\n{body}</table>"


def figures(items: Sequence[tuple[str, str]]) -> str:
    """``<figure>`` elements of (caption, base64 PNG) pairs."""
    esc = html.escape
    return "".join(
        f"<figure><img alt='{esc(cap)}' src='data:image/png;base64,{b64}'><figcaption>{esc(cap)}</figcaption></figure>"
        for cap, b64 in items
    )


def write_page(page: str, path: Path) -> Path:
    """Write ``page`` to ``path`` atomically (temporary file beside it, then a rename)."""
    tmp = path.with_name(path.name + ".autodriz-tmp")
    failpoints.hit("report.html")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
