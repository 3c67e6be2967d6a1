"""Image-based verification, in parts; the entry points and their rationale are in :mod:`autodriz.verify`.

* :mod:`.thresholds` — statuses, :class:`~.thresholds.Thresholds` and ``verify.toml``;
* :mod:`.results` — the result dataclasses and :class:`~.results.Tile`;
* :mod:`.measure` — per-tile preparation, detection, coarse offsets and per-source centroids;
* :mod:`.registration` — consensus, transform fit and the per-exposure decision;
* :mod:`.focus` — the focus index;
* :mod:`.singles` — the common output frame and the single-exposure drizzles that
  :mod:`autodriz.verifydriz` makes of a candidate's exposures.
"""
