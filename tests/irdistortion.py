"""A RECONSTRUCTION of the WFC3/IR distortion table ``w3m18525i_idc.fits`` (test-data tool), and
of the WFC3/UVIS table ``2731450pi_idc.fits`` by the same method (:func:`rebuild_wfc3uvis_idctab`,
see its docstring and ``src/autodriz/data/iref/README.md`` for what is approximated there).

The ERS GOODS-S exposures in the shared data name ``IDCTAB = iref$w3m18525i_idc.fits``, which no
public package ships. What is public is what ``updatewcs`` wrote into real headers processed with
it: the SIP polynomial (``A_p_q``/``B_p_q`` to 4th order), the first-order IDC terms it kept
(``OCX10 OCX11 OCY10 OCY11``) and the reference-point keywords (``IDCSCALE IDCTHETA IDCXREF IDCYREF
IDCV2REF IDCV3REF``). stwcs derives the SIP from the table (``updatewcs/corrections.py``,
``CompSIP``) as::

    [A_m_(n-m), B_m_(n-m)] = M⁻¹ · [CXnm, CYnm],   M = [[CX11, CX10], [CY11, CY10]]

so the table row follows by inverting it: ``CXnm = OCX11·A + OCX10·B`` and ``CYnm = OCY11·A +
OCY10·B`` (WFC3 has no time-dependent distortion, so ``OCXij`` *are* the table's ``CXij``). With
this table in ``iref`` the unchanged ``updatewcs(..., use_db=False)`` — autodriz's pipeline-default
stage — gives the ERS exposures the ``IDC_w3m18525i`` WCS the archive would.

What is exact and what is approximated
--------------------------------------
* The polynomial of each row is exact up to the 15 significant digits of the header values.
* Filter dependence: the real table has one row per filter (stwcs picks the row by ``FILTER`` and
  raises ``LookupError`` for a filter without one). Only two rows are public: F110W (the sample FLT
  ``ib4606cpq``) and F140W (``iczgs3ygq``, filter inferred from its flat field). Other filters get a
  copy of one of these (:data:`FILTER_STAND_INS`): grism exposures use the row of the direct-imaging
  filter they are paired with in practice (G141 → F140W, G102 → F110W), which is also how the grism
  exposures inherit their direct image's WCS downstream; the F110W and F140W rows differ by up to
  ~16 mas over the detector, a bound on the error of such a stand-in.
* Velocity aberration is not in the table at all: ``updatewcs`` scales CD (and the CRVAL offset)
  by each exposure's own ``VAFACTOR`` (``VACorr``), so it is applied exactly, per exposure.
* WFC3/IR has no NPOLFILE and no D2IMFILE (``N/A`` in its headers): the table is the whole model.
* Columns not used by stwcs for WFC3/IR (XCOM/YCOM, the inverse-direction rows) are not rebuilt.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

IDCTAB_NAME = "w3m18525i_idc.fits"
ORDER = 4
DETECTOR_SIZE = 1014

#: Filters without a public row, and the row they are given (see the module docstring).
FILTER_STAND_INS: Mapping[str, str] = {"G141": "F140W", "G102": "F110W"}

_KEY_VALUE = re.compile(r"^([A-Z0-9_]{1,8})\s*=\s*([^/]+?)\s*(?:/.*)?$")


@dataclass(frozen=True)
class IDCRow:
    """One filter row of an IDCTAB (forward direction, the only one updatewcs reads)."""

    filter: str
    xref: float
    yref: float
    v2ref: float
    v3ref: float
    scale: float
    theta: float
    cx: np.ndarray  # cx[n, m]: coefficient CXnm, n = total order, m ≤ n
    cy: np.ndarray
    source: str
    detchip: int = 1  # CCDCHIP the row is for (WFC3/UVIS has two)


def _coefficient_from_sip(ocx: tuple[float, float], a: float, b: float) -> float:
    """``CXnm`` (or ``CYnm``) from the SIP pair: the inverse of stwcs's ``CompSIP``."""
    ocx11, ocx10 = ocx
    return ocx11 * a + ocx10 * b


def idc_row_from_sip(keywords: Mapping[str, float], filter_name: str, source: str, detchip: int = 1) -> IDCRow:
    """Rebuild the IDCTAB row an ``updatewcs``-processed header was computed from.

    Parameters
    ----------
    keywords : mapping
        The SCI header keywords ``A_p_q``/``B_p_q`` (2 ≤ p+q ≤ 4), ``OCX10 OCX11 OCY10 OCY11``,
        ``IDCSCALE IDCTHETA IDCXREF IDCYREF IDCV2REF IDCV3REF``.
    filter_name : str
        The row's ``FILTER``.
    source : str
        Where the keywords come from (kept in the table's history).
    detchip : int
        The row's ``DETCHIP`` (the header's CCDCHIP; 1 for WFC3/IR).

    Raises
    ------
    KeyError
        A keyword is missing.
    """
    order = int(keywords.get("A_ORDER", ORDER))
    if order != ORDER:
        raise ValueError(f"expected a SIP of order {ORDER}, got {order}")
    cx = np.zeros((ORDER + 1, ORDER + 1))
    cy = np.zeros((ORDER + 1, ORDER + 1))
    cx[1, 0], cx[1, 1] = float(keywords["OCX10"]), float(keywords["OCX11"])
    cy[1, 0], cy[1, 1] = float(keywords["OCY10"]), float(keywords["OCY11"])
    for n in range(2, ORDER + 1):
        for m in range(n + 1):
            # stwcs: A_<m>_<n-m> and B_<m>_<n-m> come from CXnm and CYnm.
            a = float(keywords.get(f"A_{m}_{n - m}", 0.0))
            b = float(keywords.get(f"B_{m}_{n - m}", 0.0))
            cx[n, m] = _coefficient_from_sip((cx[1, 1], cx[1, 0]), a, b)
            cy[n, m] = _coefficient_from_sip((cy[1, 1], cy[1, 0]), a, b)
    return IDCRow(
        filter=filter_name,
        xref=float(keywords["IDCXREF"]),
        yref=float(keywords["IDCYREF"]),
        v2ref=float(keywords["IDCV2REF"]),
        v3ref=float(keywords["IDCV3REF"]),
        scale=float(keywords["IDCSCALE"]),
        theta=float(keywords["IDCTHETA"]),
        cx=cx,
        cy=cy,
        source=source,
        detchip=detchip,
    )


def read_keyword_text(path: Path) -> dict[str, float]:
    """Read ``KEY = value`` lines (a header printed as text; ``#`` lines are comments)."""
    out: dict[str, float] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _KEY_VALUE.match(line.strip())
        if match is None:
            raise ValueError(f"{path}: not a KEY = value line: {line!r}")
        out[match.group(1)] = float(match.group(2))
    return out


def read_flt_sci_keywords(path: Path, idc_root: str = "w3m18525i", extver: int = 1) -> tuple[dict[str, float], str]:
    """The SCI,``extver`` IDC/SIP keywords of an ``updatewcs``-processed FLT/FLC (``.gz`` allowed)
    and its FILTER.

    The primary WCS of that header must have been computed from the IDCTAB ``idc_root``: an
    aligned solution (``IDC_w3m18525i-FIT_…``) keeps the IDC SIP, only CRVAL/CD move. The
    header's ``CCDCHIP`` (if any) is returned among the keywords.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh, fits.open(fh) as hdul:
        filt = str(hdul[0].header["FILTER"]).strip()
        sci = hdul["SCI", extver].header
        wcsname = str(sci.get("WCSNAME", ""))
        if not wcsname.startswith(f"IDC_{idc_root}"):
            raise ValueError(f"{path}: SCI,{extver} WCSNAME {wcsname!r} is not from {idc_root}")
        keys = [k for k in sci if re.fullmatch(r"[AB]_\d_\d|[AB]_ORDER|OC[XY]1[01]|IDC(SCALE|THETA|[XY]REF|V[23]REF)|CCDCHIP", k)]
        return {k: float(sci[k]) for k in keys}, filt


def write_idctab(
    rows: list[IDCRow],
    path: Path,
    stand_ins: Mapping[str, str] = FILTER_STAND_INS,
    *,
    detector: str = "IR",
    size: tuple[int, int] = (DETECTOR_SIZE, DETECTOR_SIZE),
    name: str = "w3m18525i",
) -> Path:
    """Write ``rows`` (plus copies for ``stand_ins``) as an IDCTAB that stwcs reads.

    Parameters
    ----------
    rows : list of IDCRow
        One row per filter that has a public solution.
    path : Path
        Output file (normally ``<iref>/w3m18525i_idc.fits``).
    stand_ins : mapping
        Filter without a row → filter whose row it gets (every chip's). A stand-in whose source
        row is missing is left out (stwcs then raises for that filter, as it would for the real
        table).
    detector, size, name : str, (int, int), str
        WFC3 ``DETECTOR`` of the table, chip ``(XSIZE, YSIZE)``, and the IDCTAB root it
        reconstructs (for the header).
    """
    filters = {r.filter for r in rows}
    table_rows = list(rows)
    for filt, src in stand_ins.items():
        if filt in filters:
            continue
        for r in rows:
            if r.filter == src:
                table_rows.append(IDCRow(filt, r.xref, r.yref, r.v2ref, r.v3ref, r.scale, r.theta, r.cx, r.cy,
                                         f"copy of the {src} row (no public {filt} row)", r.detchip))
    n = len(table_rows)
    cols = [
        fits.Column("DETCHIP", "J", array=np.array([r.detchip for r in table_rows], dtype=np.int32)),
        fits.Column("DIRECTION", "8A", array=["FORWARD"] * n),
        fits.Column("FILTER", "8A", array=[r.filter for r in table_rows]),
        fits.Column("XSIZE", "J", array=np.full(n, size[0], dtype=np.int32)),
        fits.Column("YSIZE", "J", array=np.full(n, size[1], dtype=np.int32)),
        fits.Column("XREF", "D", array=[r.xref for r in table_rows]),
        fits.Column("YREF", "D", array=[r.yref for r in table_rows]),
        fits.Column("V2REF", "D", array=[r.v2ref for r in table_rows]),
        fits.Column("V3REF", "D", array=[r.v3ref for r in table_rows]),
        fits.Column("SCALE", "D", array=[r.scale for r in table_rows]),
        # Without THETA stwcs takes 0 and the CD matrix comes out rotated by IDCTHETA (45°).
        fits.Column("THETA", "D", array=[r.theta for r in table_rows]),
    ]
    for prefix, attr in (("CX", "cx"), ("CY", "cy")):
        for i in range(1, ORDER + 1):
            for j in range(i + 1):
                cols.append(fits.Column(f"{prefix}{i}{j}", "D", array=[getattr(r, attr)[i, j] for r in table_rows]))
    primary = fits.PrimaryHDU()
    h = primary.header
    h["INSTRUME"] = "WFC3"
    h["DETECTOR"] = detector
    h["NORDER"] = ORDER
    h["FILETYPE"] = "DISTORTION COEFFICIENTS"
    h["PEDIGREE"] = "DUMMY"
    h["DESCRIP"] = f"RECONSTRUCTION of {name} from public updatewcs headers"
    h["COMMENT"] = "Not the CRDS file: rows rebuilt by inverting stwcs CompSIP (autodriz tests/irdistortion.py)."
    for r in table_rows:
        h["HISTORY"] = f"{r.filter}: {r.source}" if detector == "IR" else f"{r.filter} chip {r.detchip}: {r.source}"
    hdul = fits.HDUList([primary, fits.BinTableHDU.from_columns(cols, name="IDCTAB")])
    path.parent.mkdir(parents=True, exist_ok=True)
    hdul.writeto(path, overwrite=True)
    return path


def rebuild_wfc3ir_idctab(shared_data: Path, iref: Path) -> Path:
    """Write the reconstructed ``w3m18525i_idc.fits`` into the folder ``iref``; return its path.

    Rows: F110W from ``real/headers/sample_ipppssoot_flt.fits.gz`` (SCI,1), F140W from
    ``real/headers/wfc3ir_iczgs3ygq_idc_sip.txt``, and the :data:`FILTER_STAND_INS` copies.
    """
    headers = shared_data / "real" / "headers"
    sample = headers / "sample_ipppssoot_flt.fits.gz"
    keys, filt = read_flt_sci_keywords(sample)
    rows = [idc_row_from_sip(keys, filt, "SCI,1 of the real FLT ib4606cpq (shared sample_ipppssoot_flt)")]
    text = headers / "wfc3ir_iczgs3ygq_idc_sip.txt"
    rows.append(idc_row_from_sip(read_keyword_text(text), "F140W",
                                 "keywords of iczgs3ygq (filter inferred from its F140W flat)"))
    return write_idctab(rows, Path(iref) / IDCTAB_NAME)


# --------------------------------------------------------------------------------------------
# WFC3/UVIS: the same reconstruction for 2731450pi, one row per chip
# --------------------------------------------------------------------------------------------

UVIS_IDCTAB_NAME = "2731450pi_idc.fits"
UVIS_CHIP_SIZE = (4096, 2051)  # (XSIZE, YSIZE)

#: UVIS filters the simulator offers without a public row, and the row they are given. The real
#: table's filter rows differ (WFC3/UVIS distortion is filter dependent at the 0.1 px level for
#: some filters): a stand-in is right for simulated data, whose truth uses the same table, and
#: not for real F606W/F814W exposures.
UVIS_FILTER_STAND_INS: Mapping[str, str] = {"F606W": "F555W", "F814W": "F555W"}


def rebuild_wfc3uvis_idctab(shared_data: Path, iref: Path) -> Path:
    """Write the reconstructed WFC3/UVIS ``2731450pi_idc.fits`` into ``iref``; return its path.

    Rows: F555W for both chips, from SCI,1 (CCDCHIP 2) and SCI,2 (CCDCHIP 1) of the real FLC
    ``ib4606c5q`` (``real/headers/sample_ipppssoot_flc.fits.gz``, WCSNAME
    ``IDC_2731450pi-FIT_REL_GAIAeDR3``: the alignment moved CRVAL/CD, the SIP is the IDCTAB's), and
    the :data:`UVIS_FILTER_STAND_INS` copies. The NPOLFILE ``y7b1516qi`` and D2IMFILE ``y7b1516hi``
    that the real exposure also used are not public: the table is the model without them.
    """
    sample = shared_data / "real" / "headers" / "sample_ipppssoot_flc.fits.gz"
    rows = []
    for extver in (1, 2):
        keys, filt = read_flt_sci_keywords(sample, idc_root="2731450pi", extver=extver)
        chip = int(keys.pop("CCDCHIP"))
        rows.append(idc_row_from_sip(keys, filt, f"SCI,{extver} of the real FLC ib4606c5q (shared sample_ipppssoot_flc)", chip))
    return write_idctab(rows, Path(iref) / UVIS_IDCTAB_NAME, UVIS_FILTER_STAND_INS,
                        detector="UVIS", size=UVIS_CHIP_SIZE, name="2731450pi")
