"""Header and structure fuzzing of real HST files: seeded mutations and the property every run must keep.

A case is ``(seed, index)``: :func:`make_case` draws, from a generator seeded with both, which real
file set to start from and which mutation to apply (and how). :func:`run_case` copies the pristine
files into a fresh folder, mutates the copy, runs ``autodriz`` on it and checks the property:

- the exit code is a documented one (:class:`autodriz.exitcodes.ExitCode`) and not 1 (internal error);
- no traceback on the console (stdout or stderr);
- exactly one verdict line (``autodriz: …``, the trailer's location aside);
- the inputs are byte-identical unless the run succeeded (exit 0 or 9);
- no product under a final name unless it succeeded, and no ``*.autodriz-tmp`` left.

The real files (``../shared/data``): two dithers of the WFC3/IR GOODS-S F140W association (FLTs
of 1014x1014, ASN table rebuilt for them) and a WFC3/IR FLT with real embedded headerlets (10x10 pixels), plus the real
standalone headerlet ``ia1d23dmq_flt_hlet.fits``. Their IDCTAB is not available offline, so a run
that gets past input resolution stops at the reference-file check (exit 4) — cheap — unless the case
is a *full* one (``--allow-header-wcs``, a priori on), which drizzles the 10x10 exposure.

Memory bombs (absurd NAXIS on a sparse file) run in a child process with an address-space limit,
never in the calling process: a run that tried to allocate them fails there with exit 1, which the
property reports, instead of taking the machine's memory.

Used by ``tests/reliability/test_fuzz.py`` (a fixed sample) and ``scripts/fuzz.py`` (thousands).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import os
import re
import resource
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from autodriz.exitcodes import PRODUCT_CODES, ExitCode

CARD = 80
BLOCK = 2880
ASN_ID = "IB6O23020"
ASN_NAME = "ib6o23020_asn.fits"
GOODSS_KEPT = ("ib6o23rtq", "ib6o23rwq")
GOODSS_DROPPED = ("ib6o23rzq", "ib6o23s2q")
UVIS_ROOT = "ib4606cpq"  # the embedded-headerlet sample (WFC3/IR despite the file's name)
#: Address-space limit of the child that runs a memory-bomb case.
BOMB_ADDRESS_SPACE = 6 * 1024**3
#: Files larger than this are digested by size, mtime and their first and last MiB (sparse bombs).
_DIGEST_WHOLE_BELOW = 64 * 1024**2
FAST = ["--no-aposteriori", "--no-verify", "--offline", "--no-apriori", "--num-cores", "1"]
FULL = ["--no-aposteriori", "--no-verify", "--offline", "--apriori", "--allow-header-wcs", "--num-cores", "1"]


# ----------------------------------------------------------------------------------------------
# the pristine file sets


@dataclass(frozen=True)
class Templates:
    """Pristine copies of the real files, prepared once; cases copy from here."""

    goodss: Path  # folder: ib6o23020_asn.fits + 2 FLTs
    single: Path  # folder: ib4606cpq_flt.fits (embedded HDRLETs)
    hlet: Path  # the standalone real headerlet file


def prepare_templates(shared_data: Path, dest: Path) -> Templates:
    """Copy and decompress the real files into ``dest`` (see :func:`tests.realdata.prepare_goodss`)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from realdata import BUILT_BY, prepare_goodss

    from autodriz.asn import write_asn_table

    goodss = prepare_goodss(shared_data, dest / "goodss", ASN_ID).parent
    # Two of the four dithers: half the bytes to copy and digest per case, still a real association.
    for extra in GOODSS_DROPPED:
        (goodss / f"{extra}_flt.fits").unlink()
    (goodss / ASN_NAME).unlink()
    write_asn_table(goodss / ASN_NAME, ASN_ID, list(GOODSS_KEPT), instrument="WFC3", detector="IR",
                    built_by=BUILT_BY)
    single = dest / "single"
    single.mkdir(parents=True)
    with gzip.open(shared_data / "real" / "headers" / "sample_ipppssoot_flt.fits.gz") as fh:
        (single / f"{UVIS_ROOT}_flt.fits").write_bytes(fh.read())
    with gzip.open(shared_data / "real" / "headers" / "ia1d23dmq_flt_hlet.fits.gz") as fh:
        (dest / "ia1d23dmq_hlet.fits").write_bytes(fh.read())
    for p in dest.rglob("*.fits"):
        p.chmod(0o644)
    return Templates(goodss, single, dest / "ia1d23dmq_hlet.fits")


# ----------------------------------------------------------------------------------------------
# byte-level header editing (astropy would refuse to write most of these headers)


@dataclass(frozen=True)
class HduSpan:
    index: int
    name: str
    header: tuple[int, int]  # byte offsets [start, end) of the header blocks
    data: tuple[int, int]


def spans(path: Path) -> list[HduSpan]:
    """Where each HDU's header and data lie in a (pristine) file."""
    out = []
    with fits.open(path) as hdul:
        for i, hdu in enumerate(hdul):
            info = hdu.fileinfo()
            out.append(HduSpan(i, hdu.name, (info["hdrLoc"], info["datLoc"]),
                               (info["datLoc"], info["datLoc"] + info["datSpan"])))
    return out


def _card_offsets(raw: bytes, start: int, end: int) -> dict[str, int]:
    found = {}
    for off in range(start, end, CARD):
        key = raw[off:off + 8].decode("ascii", errors="replace").strip()
        if key == "END":
            break
        if key and key not in found and raw[off + 8:off + 10] == b"= ":
            found[key] = off
    return found


def keys_of(path: Path, span: HduSpan) -> dict[str, int]:
    """Valued keywords of one header and the byte offset of their card."""
    return _card_offsets(path.read_bytes(), *span.header)


def write_card(path: Path, offset: int, card: bytes) -> None:
    """Overwrite the 80 bytes at ``offset`` (padded or cut to 80)."""
    card = card[:CARD].ljust(CARD, b" ")
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(card)


def valued_card(key: str, value: bytes) -> bytes:
    return f"{key:<8}= ".encode() + value.rjust(20)


# ----------------------------------------------------------------------------------------------
# the mutations: each edits files under ``case_dir`` and returns a one-line description


@dataclass(frozen=True)
class Target:
    """The copied file set a mutation works on, and how to call autodriz on it."""

    directory: Path
    input: Path  # what autodriz is given
    exposures: tuple[Path, ...]
    asn: Path | None


IMPORTANT_PRIMARY = ("INSTRUME", "DETECTOR", "EXPTIME", "ROOTNAME", "ASN_ID", "FILTER", "DRIZCORR", "IDCTAB",
                     "DATE-OBS", "EXPSTART", "EXPEND", "FILENAME", "NEXTEND", "TELESCOP", "MDRIZTAB", "ASN_MTYP",
                     "NPOLFILE", "D2IMFILE", "OBSTYPE", "APERTURE", "SUBARRAY", "CCDGAIN", "TARGNAME", "PA_V3",
                     "BITPIX", "NAXIS", "EXTEND", "SIMPLE")
IMPORTANT_EXT = ("CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "CTYPE1", "CTYPE2",
                 "EXTNAME", "EXTVER", "BUNIT", "ORIENTAT", "WCSNAME", "NAXIS1", "NAXIS2", "NAXIS", "BITPIX",
                 "LTV1", "LTV2", "LTM1_1", "LTM2_2", "VAFACTOR", "IDCSCALE", "PCOUNT", "GCOUNT", "XTENSION",
                 "A_ORDER", "B_ORDER", "OCX10", "OCY11", "SAMPTIME")
WCS_KEYS = ("CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "ORIENTAT", "PA_V3",
            "VAFACTOR", "IDCSCALE", "LTV1", "LTM1_1")
#: Values astropy parses (huge, zero, tiny, negative, a string "NaN", an integer beyond int64).
BAD_NUMBERS = (b"1.0E+300", b"-1.0E+300", b"0.0", b"-0.0", b"1.0E-300", b"'NaN'", b"'inf'", b"9223372036854775808",
               b"-1")
#: NaN/inf written as bare literals: not FITS, astropy calls the card unparsable when it is read.
UNPARSABLE_NUMBERS = (b"NAN", b"INF", b"-INF", b"1E+999", b"1.0.0")
WRONG_TYPES = (b"'abc'", b"T", b"F", b"123", b"-1.5E+00", b"''", b"'       '", b"(1.0, 2.0)", b"'1.0'")
EXPTIME_VALUES = (b"-100.0", b"1.0E+300", b"1.0E-300", b"'abc'", b"T", b"0", b"'NaN'", b"'inf'")


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _exposure_span(rng, t: Target, names=("PRIMARY", "SCI", "ERR", "DQ", "SAMP", "TIME")) -> tuple[Path, HduSpan]:
    path = _pick(rng, t.exposures)
    choices = [s for s in spans(path) if s.name in names]
    return path, _pick(rng, choices)


def m_delete_key(rng, t: Target) -> str:
    path, span = _exposure_span(rng, t, ("PRIMARY", "SCI", "DQ", "ERR"))
    keys = keys_of(path, span)
    wanted = IMPORTANT_PRIMARY if span.index == 0 else IMPORTANT_EXT
    key = _pick(rng, [k for k in wanted if k in keys] or list(keys))
    write_card(path, keys[key], b"")  # a blank card: the keyword is gone, the file keeps its layout
    return f"{path.name}[{span.index}] delete {key}"


def m_wrong_type(rng, t: Target) -> str:
    path, span = _exposure_span(rng, t, ("PRIMARY", "SCI", "DQ"))
    keys = keys_of(path, span)
    wanted = IMPORTANT_PRIMARY if span.index == 0 else IMPORTANT_EXT
    key = _pick(rng, [k for k in wanted if k in keys] or list(keys))
    value = _pick(rng, WRONG_TYPES)
    write_card(path, keys[key], valued_card(key, value))
    return f"{path.name}[{span.index}] {key} = {value.decode()}"


def m_bad_number(values: tuple[bytes, ...], rng, t: Target) -> str:
    path, span = _exposure_span(rng, t, ("SCI",))
    keys = keys_of(path, span)
    key = _pick(rng, [k for k in WCS_KEYS if k in keys])
    value = _pick(rng, values)
    write_card(path, keys[key], valued_card(key, value))
    return f"{path.name}[{span.index}] {key} = {value.decode()}"


def m_bad_exptime(values: tuple[bytes, ...], rng, t: Target) -> str:
    path = _pick(rng, t.exposures)
    key = _pick(rng, ("EXPTIME", "EXPSTART", "EXPEND"))
    span = spans(path)[0]
    keys = keys_of(path, span)
    value = _pick(rng, values)
    write_card(path, keys[key], valued_card(key, value))
    return f"{path.name}[0] {key} = {value.decode()}"


def m_truncate(rng, t: Target) -> str:
    path = _pick(rng, (*t.exposures, *([t.asn] if t.asn else [])))
    size = path.stat().st_size
    where = _pick(rng, ("header", "block", "data"))
    layout = spans(path)
    span = _pick(rng, layout[1:] or layout)
    if where == "header":
        cut = int(rng.integers(span.header[0] + 1, span.header[1]))
    elif where == "block":
        cut = span.header[0]
    else:
        lo, hi = span.data
        cut = int(rng.integers(lo, hi)) if hi > lo + 1 else max(0, size - 1)
    with open(path, "r+b") as fh:
        fh.truncate(cut)
    return f"{path.name} truncated to {cut} of {size} bytes ({where} of HDU {span.index})"


def _rewrite(path: Path, fn: Callable[[fits.HDUList], fits.HDUList | None]) -> None:
    with fits.open(path) as hdul:
        hdul.readall()
        new = fn(hdul) or hdul
        buf = io.BytesIO()
        new.writeto(buf, output_verify="silentfix+ignore")
    path.write_bytes(buf.getvalue())


def m_reorder(rng, t: Target) -> str:
    path = _pick(rng, t.exposures)
    n = len(spans(path))
    i, j = sorted(int(x) for x in rng.choice(np.arange(1, n), size=2, replace=False))
    kind = _pick(rng, ("swap", "drop", "duplicate"))

    def fn(hdul: fits.HDUList) -> fits.HDUList:
        hdus = list(hdul)
        if kind == "swap":
            hdus[i], hdus[j] = hdus[j], hdus[i]
        elif kind == "drop":
            del hdus[i]
        else:
            hdus.insert(j, hdus[i].copy())
        return fits.HDUList([hdus[0], *hdus[1:]])

    _rewrite(path, fn)
    return f"{path.name}: {kind} extensions {i} and {j}"


def m_shape_mismatch(rng, t: Target) -> str:
    path = _pick(rng, t.exposures)
    ext = _pick(rng, ("DQ", "ERR", "SCI"))
    change = _pick(rng, ("row", "column", "transpose", "1d", "3d", "empty"))

    def fn(hdul: fits.HDUList) -> None:
        hdu = hdul[ext, 1]
        data = hdu.data
        if change == "row":
            hdu.data = data[:-1]
        elif change == "column":
            hdu.data = np.ascontiguousarray(data[:, :-3])
        elif change == "transpose":
            hdu.data = np.ascontiguousarray(data[:, : data.shape[0] // 2].T)
        elif change == "1d":
            hdu.data = data.ravel()[: data.size // 2]
        elif change == "3d":
            hdu.data = np.stack([data, data])
        else:
            hdu.data = None

    _rewrite(path, fn)
    return f"{path.name}[{ext},1] shape changed: {change}"


def m_bitpix(rng, t: Target) -> str:
    path, span = _exposure_span(rng, t, ("SCI", "DQ", "ERR"))
    keys = keys_of(path, span)
    value = _pick(rng, (b"8", b"16", b"32", b"64", b"-64", b"-32", b"7", b"0", b"'abc'"))
    write_card(path, keys["BITPIX"], valued_card("BITPIX", value))
    return f"{path.name}[{span.index}] BITPIX = {value.decode()}"


def m_naxis(axes: bool, rng, t: Target) -> str:
    """Absurd NAXIS (``axes``: the number of axes) or NAXISn values that need no large file."""
    path, span = _exposure_span(rng, t, ("SCI", "DQ"))
    keys = keys_of(path, span)
    key = "NAXIS" if axes else _pick(rng, ("NAXIS1", "NAXIS2"))
    value = _pick(rng, (b"999", b"-1", b"0", b"1", b"3", b"1000000") if axes
                  else (b"999", b"-5", b"0", b"3", b"2147483648", b"100000000000", b"1.5", b"'x'"))
    write_card(path, keys[key], valued_card(key, value))
    return f"{path.name}[{span.index}] {key} = {value.decode()}"


def m_memory_bomb(rng, t: Target) -> str:
    """NAXIS1 x NAXIS2 far beyond any HST detector on the last image extension, file grown sparsely."""
    path = _pick(rng, t.exposures)
    layout = spans(path)
    images = [s for s in layout if s.name in ("SCI", "ERR", "DQ", "SAMP", "TIME")]
    span = images[-1] if rng.random() < 0.5 else [s for s in images if s.name == "SCI"][0]
    n1, n2 = _pick(rng, ((80000, 80000), (200000, 50000), (1 << 20, 1 << 14)))
    with fits.open(path) as hdul:
        nbytes = abs(int(hdul[span.index].header["BITPIX"])) // 8
    keys = keys_of(path, span)
    write_card(path, keys["NAXIS1"], valued_card("NAXIS1", str(n1).encode()))
    write_card(path, keys["NAXIS2"], valued_card("NAXIS2", str(n2).encode()))
    need = span.data[0] + n1 * n2 * nbytes
    # Sparse: the file claims tens of GB and occupies almost nothing.
    with open(path, "r+b") as fh:
        fh.truncate(max(need + BLOCK, path.stat().st_size))
    return f"{path.name}[{span.index},{span.name}] NAXIS1={n1} NAXIS2={n2} (sparse file {need / 1e9:.0f} GB)"


#: Non-ASCII text (UTF-8, Latin-1, an escape sequence): astropy reads these cards, with a warning.
NON_ASCII = ("'Ωmega ü'".encode(), b"'caf\xe9'", b"'\x1b[31mred'", "'✓'".encode())
#: NUL and bytes no text encoding has: astropy calls the card unparsable when it is read.
UNPARSABLE_STRINGS = (b"'\xff\xfe\x00\x01'", b"'a\x00b'")


def m_non_ascii(values: tuple[bytes, ...], rng, t: Target) -> str:
    path, span = _exposure_span(rng, t, ("PRIMARY", "SCI"))
    keys = keys_of(path, span)
    strings = [k for k in ("FILTER", "TARGNAME", "ROOTNAME", "ASN_ID", "INSTRUME", "DETECTOR", "EXTNAME", "WCSNAME",
                           "IDCTAB", "CTYPE1", "FILENAME", "APERTURE", "DRIZCORR", "BUNIT") if k in keys]
    key = _pick(rng, strings)
    value = _pick(rng, values)
    write_card(path, keys[key], valued_card(key, value))
    return f"{path.name}[{span.index}] {key} = {value!r}"


def m_overlong(rng, t: Target) -> str:
    path = _pick(rng, t.exposures)
    key = _pick(rng, ("TARGNAME", "FILTER", "ROOTNAME", "IDCTAB", "ASN_ID", "INSTRUME", "MDRIZTAB"))
    n = int(_pick(rng, (69, 200, 5000)))

    def fn(hdul: fits.HDUList) -> None:
        hdul[0].header[key] = ("X" * (n - 10)) + "0123456789"  # written with CONTINUE cards

    _rewrite(path, fn)
    return f"{path.name}[0] {key} = {n}-character string"


def _asn_rows(t: Target) -> Table:
    return Table.read(t.asn, hdu=1)


def _write_asn(t: Target, names: list[str], types: list[str], present: list[bool]) -> None:
    with fits.open(t.asn) as hdul:
        primary = hdul[0].copy()
    width = max([14, *(len(n.encode("utf-8", errors="replace")) for n in names)])
    cols = fits.ColDefs([
        fits.Column("MEMNAME", f"{width}A", array=np.array([n.encode("utf-8", errors="replace") for n in names],
                                                            dtype=f"S{width}")),
        fits.Column("MEMTYPE", "14A", array=np.array(types, dtype="S14")),
        fits.Column("MEMPRSNT", "L", array=np.array(present, dtype=bool)),
    ])
    table = fits.BinTableHDU.from_columns(cols, name="ASN")
    buf = io.BytesIO()
    fits.HDUList([primary, table]).writeto(buf)
    t.asn.write_bytes(buf.getvalue())


ASN_KINDS = ("duplicate", "empty-name", "self", "product-only", "memtype", "blank-table", "case",
             "long-name", "non-ascii-name", "many", "no-product", "all-duplicates")


def m_asn(kind: str, rng, t: Target) -> str:
    """ASN tables with duplicate, empty, self-referencing, odd or too many members."""
    rows = _asn_rows(t)
    names = [str(n).strip() for n in rows["MEMNAME"]]
    types = [str(x).strip() for x in rows["MEMTYPE"]]
    present = [bool(x) for x in rows["MEMPRSNT"]]
    exp = [i for i, ty in enumerate(types) if ty.startswith("EXP")]
    if kind == "duplicate":
        i = _pick(rng, exp)
        names.append(names[i]); types.append(types[i]); present.append(True)
    elif kind == "empty-name":
        names[_pick(rng, exp)] = ""
    elif kind == "self":
        names[_pick(rng, exp)] = ASN_ID.lower()  # the association itself as one of its exposures
    elif kind == "product-only":
        keep = [i for i in range(len(names)) if i not in exp]
        names, types, present = [names[i] for i in keep], [types[i] for i in keep], [present[i] for i in keep]
    elif kind == "memtype":
        types[_pick(rng, exp)] = _pick(rng, ("", "EXP-???", "PROD-DTH", "exp-dth", "X" * 14))
    elif kind == "blank-table":
        names, types, present = [], [], []
    elif kind == "case":
        i = _pick(rng, exp)
        names[i] = names[i].upper() if rng.random() < 0.5 else names[i].swapcase()
    elif kind == "long-name":
        names[_pick(rng, exp)] = "ib6o23" + "q" * int(_pick(rng, (40, 300)))
    elif kind == "non-ascii-name":
        names[_pick(rng, exp)] = _pick(rng, ("ib6o23rΩq", "ib6o23r\x00q", "ib6o23 rtq", "ib6o23rtq\t"))
    elif kind == "many":
        names = names + [names[exp[0]]] * 300; types = types + ["EXP-DTH"] * 300; present = present + [True] * 300
    elif kind == "no-product":
        names, types, present = [names[i] for i in exp], [types[i] for i in exp], [present[i] for i in exp]
    else:
        names = [names[exp[0]]] * len(names)
    _write_asn(t, names, types, present)
    return f"{t.asn.name}: {kind}"


def m_hdrlet_distortion(rng, t: Target) -> str:
    """An embedded HDRLET whose distortion does not match the exposure (or whose own header is odd)."""
    path = t.exposures[0]
    hdrlets = [s for s in spans(path) if s.name == "HDRLET"]
    span = _pick(rng, hdrlets)
    raw = path.read_bytes()
    inner = _card_offsets(raw, span.data[0], span.data[0] + BLOCK * 2)
    candidates = {
        "DISTNAME": (b"'w3m18525i-NOMODEL-NONE'", b"'nonsense'", b"''"),
        "IDCTAB": (b"'iref$xxxxxxxxx_idc.fits'", b"'N/A'", b"'jref$0461802ej_idc.fits'"),
        "NPOLFILE": (b"'jref$02c1450rj_npl.fits'",),
        "D2IMFILE": (b"'jref$02c1450oj_d2i.fits'",),
        "DESTIM": (b"'ib4606c5q'", b"''"),
        "WCSNAME": (b"''", "'Ωmega'".encode()),
        "HDRNAME": (b"''",),
        "SIPNAME": (b"'other_sip'",),
    }
    present = [k for k in candidates if k in inner] or list(inner)
    key = _pick(rng, present)
    value = _pick(rng, candidates.get(key, (b"'x'",)))
    write_card(path, inner[key], valued_card(key, value))
    return f"{path.name}[{span.index},HDRLET] embedded primary {key} = {value!r}"


def m_hlet_store(rng, t: Target) -> str:
    """A real headerlet of another exposure (other distortion), offered in the headerlet store as this one's."""
    store = t.directory.parent / "hlets"
    return f"headerlet store {store.name}: ia1d23dmq's headerlet as {UVIS_ROOT}_hlet.fits"


@dataclass(frozen=True)
class Mutation:
    name: str
    apply: Callable[[np.random.Generator, Target], str]
    #: Which file set: "goodss" (ASN of 2 FLTs) or "single" (one FLT with embedded headerlets).
    targets: tuple[str, ...] = ("goodss", "single")
    #: Run in a child with an address-space limit.
    bomb: bool = False
    #: Only meaningful as a full run (a priori on, header WCS allowed).
    full_only: bool = False


MUTATIONS: tuple[Mutation, ...] = (
    Mutation("delete-key", m_delete_key),
    Mutation("wrong-type", m_wrong_type),
    Mutation("bad-number", functools.partial(m_bad_number, BAD_NUMBERS)),
    Mutation("bad-number-unparsable", functools.partial(m_bad_number, UNPARSABLE_NUMBERS)),
    Mutation("bad-exptime", functools.partial(m_bad_exptime, EXPTIME_VALUES)),
    Mutation("bad-exptime-unparsable", functools.partial(m_bad_exptime, UNPARSABLE_NUMBERS)),
    Mutation("truncate", m_truncate),
    Mutation("reorder", m_reorder),
    Mutation("shape-mismatch", m_shape_mismatch),
    Mutation("bitpix", m_bitpix),
    Mutation("naxis-count", functools.partial(m_naxis, True)),
    Mutation("naxis-size", functools.partial(m_naxis, False)),
    # With the header WCS allowed, so that nothing stops the run before the pixels are read.
    Mutation("memory-bomb", m_memory_bomb, bomb=True, full_only=True),
    Mutation("non-ascii", functools.partial(m_non_ascii, NON_ASCII)),
    Mutation("non-ascii-unparsable", functools.partial(m_non_ascii, UNPARSABLE_STRINGS)),
    Mutation("overlong", m_overlong),
    *(Mutation(f"asn-{kind}", functools.partial(m_asn, kind), targets=("goodss",)) for kind in ASN_KINDS),
    Mutation("hdrlet-distortion", m_hdrlet_distortion, targets=("single",), full_only=True),
    Mutation("hlet-store", m_hlet_store, targets=("single",), full_only=True),
)
BY_NAME = {m.name: m for m in MUTATIONS}


# ----------------------------------------------------------------------------------------------
# cases and their outcome


@dataclass(frozen=True)
class Case:
    seed: int
    index: int
    mutation: str
    target: str
    full: bool

    @property
    def id(self) -> str:
        return f"{self.seed}-{self.index}-{self.mutation}-{self.target}{'-full' if self.full else ''}"


def make_case(seed: int, index: int, *, mutations: tuple[str, ...] | None = None, full_fraction: float = 0.0) -> Case:
    """The case number ``index`` of ``seed``: reproducible from the two numbers alone."""
    rng = np.random.default_rng([seed, index, 0])
    pool = [BY_NAME[n] for n in (mutations or BY_NAME)]
    full = bool(rng.random() < full_fraction)
    if not full:
        pool = [m for m in pool if not m.full_only] or pool
    m = _pick(rng, pool)
    full = full or m.full_only
    target = "single" if full else _pick(rng, m.targets)
    return Case(seed, index, m.name, target, full)


@dataclass
class Outcome:
    case: Case
    description: str
    code: int
    verdict: str
    problems: list[str] = field(default_factory=list)
    traceback: bool = False
    changed_inputs: list[str] = field(default_factory=list)
    console: str = ""


def _digest(path: Path) -> str:
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if st.st_size < _DIGEST_WHOLE_BELOW:
            h.update(fh.read())
        else:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            h.update(fh.read(1 << 20))
            fh.seek(st.st_size - (1 << 20))
            h.update(fh.read())
    return h.hexdigest()


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): _digest(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def _target(case: Case, templates: Templates, work: Path) -> Target:
    data = work / "data"
    if case.target == "goodss":
        shutil.copytree(templates.goodss, data)
        return Target(data, data / ASN_NAME, tuple(sorted(data.glob("*_flt.fits"))), data / ASN_NAME)
    shutil.copytree(templates.single, data)
    flt = data / f"{UVIS_ROOT}_flt.fits"
    return Target(data, flt, (flt,), None)


def argv_for(case: Case, t: Target, work: Path, templates: Templates) -> list[str]:
    iref = work / "iref"
    iref.mkdir(exist_ok=True)
    argv = [str(t.input), "--iref", str(iref), "-o", str(work / "out"), "--cache-dir", str(work / "cache")]
    if case.full:
        store = work / "hlets"
        store.mkdir(exist_ok=True)
        if case.mutation == "hlet-store":
            shutil.copyfile(templates.hlet, store / f"{UVIS_ROOT}_hlet.fits")
        argv += ["--headerlet-store", str(store), *FULL]
    else:
        argv += FAST
    return argv


def _run_in_process(argv: list[str]) -> tuple[int, str, str, str]:
    from autodriz.cli import main

    out, err = io.StringIO(), io.StringIO()
    escaped = ""
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
        except Exception:  # noqa: BLE001 - an escaped exception is exactly what the fuzzer reports
            escaped = traceback.format_exc()
            code = int(ExitCode.INTERNAL_ERROR)
    return int(code), out.getvalue(), err.getvalue(), escaped


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (BOMB_ADDRESS_SPACE, BOMB_ADDRESS_SPACE))


def _run_in_child(argv: list[str], cwd: Path) -> tuple[int, str, str, str]:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    done = subprocess.run([sys.executable, "-m", "autodriz", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, errors="replace", timeout=900, preexec_fn=_limit_address_space, check=False)
    return done.returncode, done.stdout, done.stderr, ""


def run_case(case: Case, templates: Templates, work: Path) -> Outcome:
    """Make the case's files under ``work`` (empty), run autodriz on them and check the property."""
    t = _target(case, templates, work)
    rng = np.random.default_rng([case.seed, case.index, 1])
    description = BY_NAME[case.mutation].apply(rng, t)
    argv = argv_for(case, t, work, templates)
    before = digests(t.directory)
    if BY_NAME[case.mutation].bomb:
        code, out, err, escaped = _run_in_child(argv, work)
    else:
        code, out, err, escaped = _run_in_process(argv)
    console = out + err + escaped
    problems = []
    documented = {int(c) for c in ExitCode}
    if code not in documented:
        problems.append(f"undocumented exit code {code}")
    if code == ExitCode.INTERNAL_ERROR:
        problems.append("internal error (exit 1)")
    has_tb = "Traceback (most recent call last)" in console
    if has_tb:
        problems.append("traceback on the console")
    verdicts = [ln for ln in (out + err).splitlines()
                if re.match(r"autodriz: ", ln) and not ln.startswith("autodriz: trailer ")]
    if len(verdicts) != 1:
        problems.append(f"{len(verdicts)} verdict lines")
    elif code in documented and code != ExitCode.USAGE:
        name = ExitCode(code).name
        if not verdicts[0].startswith(f"autodriz: {name} (exit {code}): "):
            problems.append(f"verdict line does not match exit {code}: {verdicts[0]}")
    if BY_NAME[case.mutation].bomb and code != ExitCode.INPUT_ERROR:
        # An image far larger than any detector is refused while the input is resolved, before any
        # stage reads (allocates) its pixels.
        problems.append(f"memory bomb not refused at input resolution (exit {code}, expected 3)")
    changed = []
    succeeded = code in {int(c) for c in PRODUCT_CODES}
    if not succeeded:
        after = digests(t.directory)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        if changed:
            problems.append(f"inputs changed: {changed}")
    products = [p for p in work.rglob("*") if re.search(r"_dr[zcw]\.fits$", p.name)]
    if products and not succeeded:
        problems.append(f"products after exit {code}: {[p.name for p in products]}")
    leftovers = [p for p in work.rglob("*.autodriz-tmp")]
    if leftovers:
        problems.append(f"temporary files left: {leftovers}")
    return Outcome(case, description, code, verdicts[0] if len(verdicts) == 1 else "", problems, has_tb, changed,
                   console)
