"""DAOStarFinder measuring given positions on an image it does not convolve again.

:func:`autodriz.detect._dao_find` convolves a chip with the finder's kernel to find its peaks,
then hands the finder the few that can pass its cuts (``xycoords``). The finder would convolve
the whole chip again before measuring them (~0.35 s per 2048x4096 chip, a fifth of detection):
:class:`MeasuringFinder` measures on the convolved image it is given instead. Only that step is
replaced; the catalog, its measurements and its cuts are photutils' own
(``tests/test_detect.py`` compares the result with the plain finder's, value for value).
Imported only where detection runs (it imports photutils).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from photutils.detection import DAOStarFinder

# Private to photutils (pinned < 3): the class DAOStarFinder builds its catalog with.
from photutils.detection.daofinder import _DAOStarFinderCatalog


class MeasuringFinder(DAOStarFinder):
    """:class:`~photutils.detection.DAOStarFinder` with the convolved image given.

    Parameters
    ----------
    convolved : numpy.ndarray
        The image to be searched convolved with this finder's kernel, as the finder itself
        convolves it (``scipy.ndimage.convolve(data, kernel.data, mode="constant", cval=0.0)``).
    **kwargs
        DAOStarFinder's arguments; ``xycoords`` is required (nothing is searched).
    """

    def __init__(self, convolved: np.ndarray, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.xycoords is None:
            raise ValueError("MeasuringFinder measures given positions: pass xycoords")
        self._convolved = convolved

    def _get_raw_catalog(self, data: np.ndarray, *, mask: np.ndarray | None = None) -> Any:
        del mask  # positions are given: the mask only matters to a search
        if self._convolved.shape != np.shape(data):
            raise ValueError(f"convolved image {self._convolved.shape} does not match the data {np.shape(data)}")
        return _DAOStarFinderCatalog(
            data, self._convolved, self.xycoords, self.threshold, self.kernel,
            sharplo=self.sharplo, sharphi=self.sharphi, roundlo=self.roundlo, roundhi=self.roundhi,
            brightest=self.brightest, peakmax=self.peakmax,
        )
