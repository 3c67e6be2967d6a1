"""Astrometry of a visit against reference catalogs (the a posteriori stage's machinery).

- :mod:`.config`: the stage's settings (``config/aposteriori.toml``) per detector;
- :mod:`.sources`: the exposures' chips and sources the fits are given (read from working
  copies, detected on the originals' pixels) and the catalog stars that fall on them;
- :mod:`.fit`: relative and absolute tweakwcs fits of in-memory WCSs, typed results (no files);
- :mod:`.residuals`: post-fit cross-match with the catalog and its clipped statistics (pure).

:mod:`autodriz.solutions.aposteriori` orchestrates them into candidates.
"""
