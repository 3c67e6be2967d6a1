"""The campaign's inputs: paths, globs and manifests expanded into dataset entries."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from autodriz.batch.common import Entry, UsageError

_FITS_SUFFIXES = (".fits", ".fits.gz", ".fit")
_GLOB_CHARS = frozenset("*?[")


def _is_fits_name(path: str) -> bool:
    return path.lower().endswith(_FITS_SUFFIXES)


def read_manifest(path: Path) -> list[str]:
    """Entries of a manifest: one path or glob per line, ``#`` starts a comment.

    Relative entries are relative to the manifest's folder, so a manifest means the same from
    any working directory (cron runs in ``$HOME``).
    """
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #")[0].split("\t#")[0].strip()
        if not line or line.startswith("#"):
            continue
        entry = Path(os.path.expandvars(os.path.expanduser(line)))
        out.append(str(entry if entry.is_absolute() else path.parent / entry))
    return out


def expand_inputs(items: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """Expand paths, globs and manifests into dataset inputs, in order, without duplicates.

    Parameters
    ----------
    items : sequence of str
        Each is a FITS path (``*_asn.fits``, ``*_raw.fits``, ``*_flt.fits`` …), a glob of them, or a
        manifest file (any other existing file: one path or glob per line, ``#`` comments).

    Returns
    -------
    inputs : list of Path
        Absolute dataset paths. A FITS path that does not exist is kept (the campaign records it
        as failed, so one bad line never stops the others).
    manifests : list of Path
        The manifest files read.

    Raises
    ------
    UsageError
        For a glob that matches nothing, a missing manifest or a folder.
    """
    inputs: list[Path] = []
    manifests: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        p = p.absolute()
        if p not in seen:
            seen.add(p)
            inputs.append(p)

    def expand(item: str, where: str) -> None:
        if _GLOB_CHARS & set(item) and not Path(item).exists():
            matches = sorted(glob.glob(item))
            if not matches:
                raise UsageError(f"{where}: {item!r} matches no file")
            for m in matches:
                add(Path(m))
        elif _is_fits_name(item):
            add(Path(item))
        elif Path(item).is_dir():
            raise UsageError(f"{where}: {item} is a folder; give a glob such as '{item}/*_asn.fits'")
        elif where == "command line" and Path(item).is_file():
            manifest = Path(item).absolute()
            manifests.append(manifest)
            try:
                lines = read_manifest(manifest)
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"cannot read manifest {manifest}: {exc}") from exc
            for line in lines:
                expand(line, f"manifest {manifest.name}")
        else:
            raise UsageError(
                f"{where}: {item!r} is neither a FITS file name nor an existing manifest"
            )

    for item in items:
        expand(item, "command line")
    return inputs, manifests


def make_entries(inputs: Sequence[Path], output_dir: Path | None) -> list[Entry]:
    """Entries with their roots and trailers; two inputs that would share products are an error."""
    from autodriz.pipeline import guess_root

    entries = []
    by_trailer: dict[Path, Path] = {}
    for p in inputs:
        root = guess_root(p)
        trailer = (output_dir or p.parent) / f"{root}.tra"
        if trailer in by_trailer:
            raise UsageError(
                f"{by_trailer[trailer]} and {p} would write the same products and trailer ({trailer}); "
                "list only one of them"
            )
        by_trailer[trailer] = p
        entries.append(Entry(p, root, trailer))
    return entries


def default_ledger_path(manifests: Sequence[Path]) -> Path:
    """``<manifest>.ledger.sqlite`` beside the one manifest given.

    Raises
    ------
    UsageError
        Unless exactly one manifest was given (then ``--ledger`` is required: a ledger must not
        appear in whatever the working directory happens to be).
    """
    if len(manifests) != 1:
        raise UsageError(
            "give --ledger PATH: the ledger defaults to <manifest>.ledger.sqlite only when the inputs "
            "include exactly one manifest file"
        )
    m = manifests[0]
    return m.with_name(m.stem + ".ledger.sqlite")
