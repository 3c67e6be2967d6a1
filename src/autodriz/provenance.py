"""What a product was made from: input fingerprints, settings, reference catalog, versions.

Scheduled reprocessing (``autodriz batch`` run every night over an archive) must notice that a
dataset's inputs were recalibrated (a new FLT arrives under the same name), that the settings or
the reference catalog changed, or that a new autodriz was installed — and must not run a
dataset again when nothing changed. This module computes that record (:class:`Provenance`) and
compares two of them (:func:`changes`), in words.

Why the input fingerprint is a SHA-256 of the whole file (and not DATASUM/CHECKSUM)
-----------------------------------------------------------------------------------
Each input (the ASN table, every FLT/FLC) is fingerprinted by a SHA-256 of all its bytes,
computed in one pass that also hashes every HDU's header and data section apart and records
the primary header's calibration keywords (``CAL_VER``, the ``*CORR`` switches, the reference
files ``*FILE``/``*TAB``, ``EXPTIME`` …), so that a change can be *explained* ("pixel data of
SCI,1 changed", "PFLTFILE 'a' → 'b'"), not only detected.

- Everything in an FLT can change a product: pixels, DQ, calibration keywords, and the WCS and
  headerlets (a re-delivery with new a priori solutions). Hashing the whole file misses none of
  them; hashing only "calibration keywords + pixels" would have to guess which keywords matter.
- The FITS ``DATASUM``/``CHECKSUM`` cards are not a substitute: they are a 32-bit ones'-complement
  sum (blind to swapped 32-bit words and with 1 in 2**32 collisions), present only when the
  writer added them, and not kept current by tools that edit headers (stwcs, astropy without
  ``checksum=True``). Verifying them costs the same full read as hashing.
- Cost, measured on a real WFC3/IR FLT (ib6o23rsq, 1014 x 1014, SCI/ERR as float32, DQ int16,
  10.3 MB, warm page cache, one core): 35 ms per file, of which the plain SHA-256 of the bytes is
  14 ms and astropy's header parse 8 ms; see README "Scheduled reprocessing". That is small next
  to a run (tens of seconds), but a nightly scan of a large archive would still read every byte,
  so the fingerprint is cached (0.02 ms then): a file whose
  ``(size, mtime_ns, ctime_ns, inode)`` equal the recorded ones is not read again. ``ctime``
  cannot be set by a user (``touch -d`` and ``cp -p`` change it), and every write or rename into
  place changes it, so a rewritten file is always read; a ``chmod`` only causes a re-hash.

autodriz itself rewrites its inputs (the final atomic WCS update): the fingerprint kept for a
dataset is therefore the one taken *after* its run, so the next run sees the same files and does
nothing (see :func:`autodriz.batch.plan.plan_campaign`).

Reference files (IDCTAB, NPOLFILE …) are identified by the names in the inputs' headers: CRDS
reference files are immutable under their unique names, so a new file means a new name and
shows up as a changed calibration keyword.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tomllib
import zlib
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astropy.io import fits

logger = logging.getLogger(__name__)

#: Primary-header keywords recorded to explain a change (the fingerprint covers every byte).
CALIBRATION_KEYWORDS = re.compile(r"^(CAL_VER|OPUS_VER|EXPTIME|FILTER\d?|PHOT[A-Z]+|[A-Z0-9]+CORR|[A-Z0-9]+FILE|[A-Z0-9]+TAB)$")
#: Settings that do not change what a run produces (verbosity, parallelism, patience, scratch).
NON_PRODUCT_SETTINGS = frozenset({
    "keep_workdirs", "log_level", "num_cores", "service_timeout", "drizzle_timeout", "cache_dir",
    "strict_services",
})
#: Packages whose versions are recorded; ``--reprocess-if newer-autodriz`` / ``newer-dependencies``
#: compare them.
SCIENCE_PACKAGES = ("drizzlepac", "stwcs", "tweakwcs", "astropy", "photutils")
_CHUNK = 8 << 20
#: Prefix of the per-HDU data digest (CRC-32 of the data bytes); records without it (16 hex
#: digits of SHA-256, before 2026-12) are not compared part by part.
DATA_DIGEST = "crc32:"


# ------------------------------------------------------------------------------------------
# input files
# ------------------------------------------------------------------------------------------


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


@dataclass(frozen=True)
class FileFingerprint:
    """The fingerprint of one input file.

    Attributes
    ----------
    name : str
        File name (the dataset's folder is implied).
    sha256 : str
        SHA-256 of every byte of the file.
    stat : list of int
        ``[size, mtime_ns, ctime_ns, inode]`` when it was hashed: unchanged → not read again.
    hdus : list of [extension, header digest, data digest]
        Per HDU (``"SCI,1"``), the 16-hex-digit SHA-256 prefix of its header bytes and the
        CRC-32 of its data bytes (``crc32:`` and 8 hex digits; older records: a SHA-256 prefix).
    calibration : dict
        Primary-header calibration keywords (:data:`CALIBRATION_KEYWORDS`) and their values.
    """

    name: str
    sha256: str
    stat: list[int] = field(default_factory=list)
    hdus: list[list[str]] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly data."""
        return {"name": self.name, "sha256": self.sha256, "stat": list(self.stat), "hdus": [list(h) for h in self.hdus],
                "calibration": dict(self.calibration)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileFingerprint:
        """Inverse of :meth:`as_dict`."""
        return cls(str(data["name"]), str(data["sha256"]), list(data.get("stat") or []),
                   [list(h) for h in data.get("hdus") or []], dict(data.get("calibration") or {}))


def _json_value(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def fingerprint_file(path: Path, previous: FileFingerprint | None = None) -> FileFingerprint:
    """Fingerprint one file, or return ``previous`` if the file's stat shows it was not touched.

    Parameters
    ----------
    path : Path
        The file (FITS; any other file gets the whole-file hash only).
    previous : FileFingerprint, optional
        The fingerprint recorded last time; reused as it is when size, mtime, ctime and inode
        are all the same.

    Returns
    -------
    FileFingerprint

    Raises
    ------
    OSError
        The file cannot be read.
    """
    st = path.stat()
    key = _stat_key(st)
    if previous is not None and previous.name == path.name and previous.stat == key:
        return previous
    whole = hashlib.sha256()
    hdus: list[list[str]] = []
    calibration: dict[str, Any] = {}
    sections: list[tuple[str, int, int, int]] = []  # (extension, header start, data start, data end)
    try:
        with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
            for index, hdu in enumerate(hdul):
                info = hdu.fileinfo()
                if info is None:
                    continue
                ext = f"{hdu.name},{hdu.ver}" if index else "PRIMARY"
                sections.append((ext, info["hdrLoc"], info["datLoc"], info["datLoc"] + info["datSpan"]))
            calibration = {k: _json_value(v) for k, v in hdul[0].header.items() if CALIBRATION_KEYWORDS.match(k)}
    except (OSError, ValueError):  # not FITS (or damaged): the whole-file hash still tells a change
        sections = []
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        position = 0
        for ext, hdr_start, data_start, data_end in sections:
            if hdr_start > position:  # bytes astropy skipped (none in a valid file) still count
                whole.update(f.read(hdr_start - position))
            header = f.read(data_start - hdr_start)
            whole.update(header)
            # The whole file's SHA-256 decides; the per-HDU data digest only says which part
            # changed (describe_file_change), and CRC-32 is twice as fast here as a second SHA-256.
            crc = 0
            left = data_end - data_start
            while left > 0:
                n = f.readinto(view[:min(_CHUNK, left)])
                if not n:
                    break
                whole.update(view[:n])
                crc = zlib.crc32(view[:n], crc)
                left -= n
            position = data_end
            hdus.append([ext, hashlib.sha256(header).hexdigest()[:16], f"{DATA_DIGEST}{crc:08x}"])
        while n := f.readinto(view):
            whole.update(view[:n])
    # Stat again: a file rewritten while we read it must not be cached under the new stat.
    after = _stat_key(path.stat())
    return FileFingerprint(path.name, whole.hexdigest(), after if after == key else [], hdus, calibration)


def dataset_files(input_path: Path, dataset: Any = None) -> list[Path]:
    """The files a dataset is made from: the input itself (ASN) and every FLT/FLC processed.

    ``dataset``: the :class:`autodriz.inputs.Dataset` already resolved by the caller (a run has
    one; resolving again would log its warnings, e.g. a dropped member, a second time). An input
    that cannot be resolved (missing member, unreadable ASN) is fingerprinted as the input file
    alone, so that repairing it shows as a change.
    """
    from autodriz.errors import AutodrizError
    from autodriz.inputs import resolve_input

    input_path = Path(input_path)
    if dataset is None:
        try:
            dataset = resolve_input(input_path)
        except (AutodrizError, OSError, ValueError):
            return [input_path] if input_path.exists() else []
    files = [*dataset.flt_paths, *dataset.flc_paths]
    out = [input_path] if input_path.resolve() not in {p.resolve() for p in files} and input_path.exists() else []
    return out + list(files)


def fingerprint_inputs(
    files: Sequence[Path], previous: Iterable[FileFingerprint] = (), *, workers: int = 1
) -> tuple[FileFingerprint, ...]:
    """Fingerprints of ``files``, reusing ``previous`` ones (matched by name) whose stat is unchanged.

    ``workers`` > 1 hashes that many files at a time in threads: reading and SHA-256 release
    the GIL, so a run allowed two cores fingerprints its 170 MB exposures in about half the time.
    """
    known = {fp.name: fp for fp in previous}
    if workers <= 1 or len(files) < 2:
        return tuple(fingerprint_file(p, known.get(p.name)) for p in files)
    with ThreadPoolExecutor(max_workers=min(workers, len(files))) as pool:
        return tuple(pool.map(lambda p: fingerprint_file(p, known.get(p.name)), files))


# ------------------------------------------------------------------------------------------
# settings, catalog, versions
# ------------------------------------------------------------------------------------------


def _canonical_sha(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def settings_identity(settings: Any) -> dict[str, Any]:
    """The settings that change products, and a hash of them and of the packaged tuning tables.

    The packaged TOML files (AstroDrizzle parameters, detection, catalogs, verification) are
    hashed too: editing them changes products as surely as a flag does.
    """
    from autodriz.config import default_config_dir

    values = {k: v for k, v in settings.as_dict().items() if k not in NON_PRODUCT_SETTINGS and k != "provenance"}
    folder = default_config_dir()
    tables = {p.name: _sha_file(p) for p in sorted(folder.glob("*.toml"))}
    return {"sha256": _canonical_sha({"values": values, "tables": tables}), "values": values, "tables": tables}


def catalog_identity(settings: Any) -> dict[str, Any]:
    """Where reference catalogs come from: the user's file or folder (hashed), else the services.

    For services the identity is the service and the ordered catalog list: what a query returns
    for a footprint is not known before the run (the chosen catalog is in each report).
    """
    from autodriz.catalogs import CATALOG_EXTENSIONS
    from autodriz.config import default_config_dir

    out: dict[str, Any] = {}
    if not settings.compute_aposteriori:
        return {"source": "none (a posteriori fits off)", "sha256": _canonical_sha("none")}
    catalog = settings.catalog
    if catalog is not None and Path(catalog).is_file():
        out = {"source": "file", "path": str(catalog), "file_sha256": _sha_file(Path(catalog))}
    elif catalog is not None and Path(catalog).is_dir():
        files = {p.name: _sha_file(p) for p in sorted(Path(catalog).iterdir())
                 if p.is_file() and p.name.lower().endswith(CATALOG_EXTENSIONS)}
        out = {"source": "folder", "path": str(catalog), "files": files}
    if not settings.offline and out.get("source") != "file":
        try:
            with open(default_config_dir() / "aposteriori.toml", "rb") as f:
                table = tomllib.load(f).get("catalogs", {})
        except (OSError, tomllib.TOMLDecodeError):
            table = {}
        out["services"] = {"order": list(table.get("order", [])), "vizier_server": table.get("vizier_server")}
    if not out:
        out = {"source": "none (offline, no catalog given)"}
    out.setdefault("source", "services")
    out["sha256"] = _canonical_sha({k: v for k, v in out.items() if k != "sha256"})
    return out


def current_versions() -> dict[str, str]:
    """Installed versions of autodriz and its scientific dependencies."""
    from autodriz.logs import package_versions

    return package_versions()


# ------------------------------------------------------------------------------------------
# the record and its comparison
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provenance:
    """What a dataset's products were (or would be) made from."""

    inputs: tuple[FileFingerprint, ...]
    settings: Mapping[str, Any]
    catalog: Mapping[str, Any]
    versions: Mapping[str, str]

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly data (ledger column ``provenance``, report key ``provenance``)."""
        return {
            "inputs": [fp.as_dict() for fp in self.inputs],
            "settings": dict(self.settings),
            "catalog": dict(self.catalog),
            "versions": dict(self.versions),
        }

    def to_json(self) -> str:
        """Compact JSON for the ledger."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Provenance:
        """Inverse of :meth:`as_dict`."""
        return cls(
            tuple(FileFingerprint.from_dict(d) for d in data.get("inputs") or []),
            dict(data.get("settings") or {}),
            dict(data.get("catalog") or {}),
            dict(data.get("versions") or {}),
        )

    @classmethod
    def from_json(cls, text: str | None) -> Provenance | None:
        """Parse the ledger's column; None for an empty or unreadable one."""
        if not text:
            return None
        try:
            return cls.from_dict(json.loads(text))
        except (ValueError, KeyError, TypeError):
            return None


def dataset_provenance(
    input_path: Path, settings: Any, *, previous: Provenance | None = None,
    settings_id: Mapping[str, Any] | None = None, catalog_id: Mapping[str, Any] | None = None,
    versions: Mapping[str, str] | None = None, dataset: Any = None, workers: int = 1,
) -> Provenance:
    """The provenance of one dataset now; identities computed once per campaign may be passed in,
    and the dataset already resolved (see :func:`dataset_files`); ``workers``: files hashed at a
    time (:func:`fingerprint_inputs`)."""
    files = dataset_files(Path(input_path), dataset)
    return Provenance(
        fingerprint_inputs(files, previous.inputs if previous else (), workers=workers),
        settings_id if settings_id is not None else settings_identity(settings),
        catalog_id if catalog_id is not None else catalog_identity(settings),
        versions if versions is not None else current_versions(),
    )


def _version_tuple(text: str) -> tuple:
    from packaging.version import InvalidVersion, Version

    try:
        return (1, Version(text))
    except InvalidVersion:
        return (0, text)


def describe_file_change(old: FileFingerprint, new: FileFingerprint) -> str:
    """Why two fingerprints of one file differ, in words (``ib…_flt.fits: pixels of SCI,1 changed``)."""
    parts = []
    old_hdus = {h[0]: h for h in old.hdus}
    new_hdus = {h[0]: h for h in new.hdus}
    pixels = [e for e, h in new_hdus.items() if e in old_hdus and old_hdus[e][2] != h[2]
              and old_hdus[e][2].startswith(DATA_DIGEST) == h[2].startswith(DATA_DIGEST)]
    if pixels:
        parts.append("data of " + ", ".join(pixels) + " changed")
    keys = sorted(set(old.calibration) | set(new.calibration))
    keywords = [f"{k} {old.calibration.get(k)!r} → {new.calibration.get(k)!r}" for k in keys
                if old.calibration.get(k) != new.calibration.get(k)]
    if keywords:
        parts.append("calibration keywords " + ", ".join(keywords))
    added = [e for e in new_hdus if e not in old_hdus]
    removed = [e for e in old_hdus if e not in new_hdus]
    if added or removed:
        parts.append("extensions " + ", ".join([*(f"+{e}" for e in added), *(f"-{e}" for e in removed)]))
    headers = [e for e, h in new_hdus.items() if e in old_hdus and old_hdus[e][1] != h[1]]
    if headers and not keywords:
        parts.append("header of " + ", ".join(headers) + " changed")
    return f"{new.name}: " + ("; ".join(parts) if parts else "content changed")


#: ``--reprocess-if`` conditions beyond the default ones (inputs, settings, catalog).
REPROCESS_CONDITIONS = ("newer-autodriz", "newer-dependencies", "any-version")


def changes(old: Provenance, new: Provenance, reprocess_if: Iterable[str] = ()) -> list[str]:
    """Why a dataset made from ``old`` must run again with ``new``; [] when it need not.

    Parameters
    ----------
    old, new : Provenance
        The recorded provenance and the current one.
    reprocess_if : iterable of str
        Extra conditions (:data:`REPROCESS_CONDITIONS`): ``newer-autodriz`` (autodriz's version
        is newer than the one that made the products), ``newer-dependencies`` (autodriz or any of
        :data:`SCIENCE_PACKAGES` is newer), ``any-version`` (any recorded version differs).

    Returns
    -------
    list of str
        One reason per change, in words.
    """
    reasons: list[str] = []
    old_files = {fp.name: fp for fp in old.inputs}
    new_files = {fp.name: fp for fp in new.inputs}
    added = [n for n in new_files if n not in old_files]
    removed = [n for n in old_files if n not in new_files]
    if added or removed:
        reasons.append("input files changed: " + ", ".join([*(f"+{n}" for n in added), *(f"-{n}" for n in removed)]))
    for name, fp in new_files.items():
        if name in old_files and old_files[name].sha256 != fp.sha256:
            reasons.append("input changed: " + describe_file_change(old_files[name], fp))
    if old.settings.get("sha256") != new.settings.get("sha256"):
        ov, nv = old.settings.get("values") or {}, new.settings.get("values") or {}
        diff = [f"{k} {ov.get(k)!r} → {nv.get(k)!r}" for k in sorted(set(ov) | set(nv)) if ov.get(k) != nv.get(k)]
        ot, nt = old.settings.get("tables") or {}, new.settings.get("tables") or {}
        diff += [f"{k} edited" for k in sorted(set(ot) | set(nt)) if ot.get(k) != nt.get(k)]
        reasons.append("settings changed: " + (", ".join(diff) or "hash differs"))
    if old.catalog.get("sha256") != new.catalog.get("sha256"):
        reasons.append(f"reference catalog changed: {old.catalog.get('source')} → {new.catalog.get('source')}"
                       + (f" ({new.catalog['path']})" if new.catalog.get("path") else ""))
    conditions = set(reprocess_if)
    unknown = conditions - set(REPROCESS_CONDITIONS)
    if unknown:
        raise ValueError(f"unknown --reprocess-if condition(s): {', '.join(sorted(unknown))}")
    packages: tuple[str, ...] = ()
    if "newer-autodriz" in conditions:
        packages = ("autodriz",)
    if "newer-dependencies" in conditions:
        packages = ("autodriz", *SCIENCE_PACKAGES)
    for pkg in packages:
        was, now = old.versions.get(pkg), new.versions.get(pkg)
        if was and now and _version_tuple(now) > _version_tuple(was):
            reasons.append(f"newer {pkg}: {was} → {now}")
    if "any-version" in conditions:
        for pkg in sorted(set(old.versions) | set(new.versions)):
            if old.versions.get(pkg) != new.versions.get(pkg) and pkg not in packages:
                reasons.append(f"{pkg} version {old.versions.get(pkg)} → {new.versions.get(pkg)}")
    return reasons
