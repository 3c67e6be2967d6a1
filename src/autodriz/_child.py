"""Entry point of the child processes that run stwcs/drizzlepac: ``python -m autodriz._child JOB``.

AstroDrizzle writes into its working directory and reads reference files through environment
variables (``jref``, ``iref``), and stwcs/drizzlepac configure logging globally. Running them in a
child whose working directory is the candidate's folder keeps the calling process free of all
that: no ``chdir``, no environment changes, no foreign log handlers. A child is either a fresh
interpreter (``python -m autodriz._child``) or forked from a server that has imported drizzlepac
already (:func:`forked_main`, :mod:`autodriz.childproc`); both run :func:`main`.

The job is a JSON file: ``{"task": "updatewcs" | "astrodrizzle" | "apply_headerlets", ...}``. The child prints
``AUTODRIZ-CHILD-RESULT <json>`` as its last line on success. A job may carry a second job under
``then``, run in the same process afterwards; its result or error is part of the first's.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import resource
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path
from types import MappingProxyType

import numpy as np
from astropy.io import fits

from autodriz import failpoints
from autodriz.allocator import tune_process


class _InMemoryHDUList(fits.HDUList):
    """HDUs edited in memory and written out once: stwcs's flushes are no-ops.

    stwcs edits an HDUList in place and flushes it after each step; it accepts one that no file
    backs (its ``fileinfo`` is None) as it accepts one opened in update mode.
    """

    def flush(self, output_verify: str = "fix", verbose: bool = False) -> None:  # noqa: ARG002
        return None


def _start_writeback(paths: list[str]) -> None:
    """Start writing ``paths`` to disk while this child goes on with CPU work (or exits).

    The parent fsyncs a product before it publishes it, and each prepared input before it
    renames it over the original; started here, as soon as the file is complete, that disk
    time overlaps the CPU work that follows in this child (a full-size DRZ is ~215 MB: ~1 s of
    the parent's products stage).
    A daemon thread, never waited for: the kernel finishes the writeback after this process
    exits, and the parent's fsync is what guarantees it.
    """
    def sync_all() -> None:
        for path in paths:
            # A failure is left for the parent, whose own fsync is the one that counts.
            with contextlib.suppress(OSError), open(path, "rb") as fh:
                os.fsync(fh.fileno())

    threading.Thread(target=sync_all, name="autodriz-writeback", daemon=True).start()


def _updatewcs(job: dict) -> dict:
    """updatewcs (distortion model, no astrometry database) on each file of ``job["files"]``.

    A working copy gets :func:`autodriz.hstio.as_working_copy`'s headers: no ``MDRIZSKY`` (the
    products of a run on delivered files are then those made from the calibrated files), blank
    cards at the end of its SCI headers.

    An entry is a file name (in the working directory, updated in place) or ``{"source",
    "dest"}``: the original is read, updated in memory and written once as ``dest``
    (:func:`_update_in_memory`) instead of being copied and then rewritten by updatewcs each time
    it grows the file (~1 s less per 170 MB file; the two give the same bytes,
    ``tests/test_default_inmemory.py``).
    """
    from stwcs import updatewcs

    from autodriz.hstio import as_working_copy

    names = {}
    # One file at a time (updatewcs loops over them the same way), each announced, so that a
    # failure names its exposure.
    for entry in job["files"]:
        source, dest = (None, str(entry)) if isinstance(entry, str) else (entry["source"], entry["dest"])
        print(f"AUTODRIZ-CHILD-FILE {dest}", flush=True)
        failpoints.hit("updatewcs")
        in_place = source is None or not _update_in_memory(source, dest)
        if in_place:
            if source is not None:
                shutil.copyfile(source, dest)
                os.chmod(dest, 0o644)
            updatewcs.updatewcs([dest], use_db=False, checkfiles=False)
            with fits.open(dest, mode="update") as hdul:
                as_working_copy(hdul)
        with fits.open(dest) as hdul:
            names[dest] = [h.header.get("WCSNAME", "") for h in hdul if h.name == "SCI"]
    return {"wcsnames": names}


def _update_in_memory(source: str, dest: str) -> bool:
    """updatewcs on ``source`` read into memory (pixels memory-mapped), written once as ``dest``.

    Returns False, having written nothing, for a file stwcs needs by name: it names files it
    makes after the input (WFPC2's D2IM file from DGEOFILE) and SIPNAME after the file when the
    header has no ROOTNAME. Those are copied and updated in place instead.
    """
    from stwcs import updatewcs

    primary = fits.getheader(source)
    if str(primary.get("INSTRUME", "")).strip().upper() == "WFPC2" or not str(primary.get("ROOTNAME", "")).strip():
        return False
    from autodriz.hstio import as_working_copy

    def change(hdul) -> None:
        updatewcs.updatewcs([hdul], use_db=False, checkfiles=False)
        as_working_copy(hdul)

    _write_changed(source, dest, change)
    return True


def _write_changed(source: str, dest: str, change) -> None:
    """Read ``source`` into memory (pixels memory-mapped), ``change`` it, write it once as ``dest``."""
    with fits.open(source, mode="readonly") as original:
        hdul = _InMemoryHDUList(list(original))
        change(hdul)
        # A leftover of an interrupted run is replaced, as a copy over it would be.
        hdul.writeto(dest, overwrite=True)
    os.chmod(dest, 0o644)


def _astrodrizzle(job: dict) -> dict:
    from drizzlepac import astrodrizzle

    params = dict(job.get("params", {}))
    failpoints.hit("astrodrizzle")
    astrodrizzle.AstroDrizzle(
        input=[str(f) for f in job["input"]],
        output=job["output"],
        runfile=job.get("runfile", "astrodrizzle.log"),
        **params,
    )
    made = sorted(str(p) for p in Path.cwd().glob(f"{job['output']}_dr?.fits"))
    sregion, sregion_seconds, weight_checks = {}, 0.0, {}
    if job.get("sregion"):
        # Here rather than in the parent: the product is rewritten once, before it goes to disk,
        # and its weight map, just read for the footprint, is checked while in memory (the
        # parent's products stage read it again, ~0.25 s per full-size product).
        from dataclasses import asdict

        from autodriz.delivery import add_sregion
        from autodriz.weightmap import weight_map_check

        t0 = time.perf_counter()
        sregion = {Path(p).name: add_sregion(Path(p)) for p in made}
        for p in made:
            with fits.open(p, mode="readonly") as hdul:
                weight_checks[Path(p).name] = asdict(weight_map_check(hdul["WHT"].data))
        sregion_seconds = time.perf_counter() - t0
    _start_writeback(made)
    # AstroDrizzle's own log (the parameters it actually used, step by step) into this child's
    # output, which the parent copies into the trailer.
    runfile = Path(job.get("runfile", "astrodrizzle.log"))
    if runfile.is_file():
        print(f"--- AstroDrizzle runfile {runfile.name} ---")
        print(runfile.read_text(encoding="utf-8", errors="replace"), flush=True)
    return {"products": made, "sregion": sregion, "sregion_seconds": sregion_seconds, "weight_checks": weight_checks}


def _apply_headerlets(job: dict) -> dict:
    """Copy each original to its temporary file and make the solved copy's WCS primary there.

    The WCS travels as an stwcs headerlet; the WCS it replaces is archived as a headerlet
    extension so the change can be reverted, and the other solutions the parent passes along
    are attached under WCSNAMEs no other headerlet in the file has. The parent fsyncs and
    renames the temporary files.

    An item with a ``start`` (the pipeline default's copy, updatewcs run) takes that file's
    headers and small extensions with the original's pixels (:func:`_delivery_base`): what
    runastrodriz's updatewcs in place leaves, so the WCS replaced and archived is the pipeline
    default's, as in the archive's files, not the calibration's header WCS.

    Each temporary file is written once: the original is opened read-only (memory-mapped,
    copy-on-write, so the cosmic-ray flags can be merged into its DQ in memory), the headerlets
    are applied to an in-memory HDUList of its HDUs (:class:`_InMemoryHDUList`) and that is
    written out. A copy opened in update mode instead is rewritten whole each time stwcs grows
    it (twice per file): ~1 s more per 170 MB file.

    With ``share`` (the FLT and FLC jobs of one visit, :func:`autodriz.products.pair_twins`), an
    item whose ``twin`` the other child claimed first is made from the twin's prepared file
    (:mod:`autodriz.twinprep`), or directly when that cannot be.
    """
    from autodriz import twinprep

    # Set when this job follows the final AstroDrizzle run (``then``): the files it drizzled,
    # whose DQ now holds the final cosmic-ray flags, and the bit it used.
    final = job.get("final_drizzle")
    drizzled = dict(final["inputs"]) if final else {}
    share = job.get("share")
    folder = Path(share["dir"]) if share else None
    items = list(job["items"])
    if share and share.get("order", 1) < 0:
        items.reverse()
    outcomes: dict[str, dict] = {}
    deferred = []
    for item in items:
        twin = item.get("twin") if folder is not None else None
        if twin is not None and not twinprep.claim(folder, twin["key"]):
            deferred.append(item)
            continue
        try:
            # What the twin's file must match: the solved copy is about to be written over.
            digest = _solved_digest(item, twin) if twin is not None else None
            outcome = _prepare_item(item, job, final, drizzled)
        except BaseException:
            if twin is not None:
                twinprep.publish_failure(folder, twin["key"])
            raise
        if twin is not None:
            twinprep.publish(folder, twin["key"], {"solved_digest": digest,
                                                   **{k: outcome[k] for k in ("attached", "skipped", "attach_winner")}})
        outcomes[item["original"]] = outcome
    for item in deferred:
        published = twinprep.await_twin(folder, item["twin"]["key"], timeout=float(share.get("timeout", 120.0)))
        outcome = _prepare_from_twin(item, published, job, final, drizzled) if isinstance(published, dict) else published
        if isinstance(outcome, str):
            why = outcome
            print(f"{Path(item['original']).name}: prepared itself, not from its twin ({why})", flush=True)
            outcome = _prepare_item(item, job, final, drizzled)
        outcomes[item["original"]] = outcome
    ordered = [outcomes[item["original"]] for item in job["items"]]
    return {
        "prepared": [o["tmp"] for o in ordered],
        "cr_pixels": {o["original"]: o["cr_pixels"] for o in ordered if o["cr_pixels"] is not None},
        "attached": {o["original"]: o["attached"] for o in ordered},
        "not_attached": {o["original"]: o["skipped"] for o in ordered},
        "duplicate_wcsnames": {o["original"]: o["duplicates"] for o in ordered if o["duplicates"]},
        "written_over_drizzled": [o["original"] for o in ordered if o["in_place"]],
        "from_twin": [o["original"] for o in ordered if o.get("from_twin")],
    }


def _solved_digest(item: dict, twin: dict | None) -> str:
    """:func:`autodriz.twinprep.file_digest` of the item's solved copy, names as the twin's."""
    from autodriz import twinprep

    mapper = twinprep.name_mapper(item["original"], twin["original"]) if twin is not None else None
    return twinprep.file_digest(item["solved"], mapper)


def _prepare_item(item: dict, job: dict, final: dict | None, drizzled: dict) -> dict:
    """One exposure's temporary file, made with stwcs (see :func:`_apply_headerlets`)."""
    from stwcs.wcsutil import headerlet

    from autodriz.fitspatch import drop_trailing_blanks
    from autodriz.headerlets import drizzlepac_hdrname, unique_wcsnames

    print(f"AUTODRIZ-CHILD-FILE {item['original']}", flush=True)
    # An item may name its own WCS (an exposure left out of the fit keeps its start WCS).
    wcsname = item.get("wcsname", job["wcsname"])
    hdrlet = headerlet.create_headerlet(
        item["solved"],
        hdrname=item["hdrname"],
        wcsname=wcsname,
        descrip=job["descrip"],
        author="autodriz",
        logging=False,  # else stwcs adds a file handler writing headerlet.log into the cwd
    )
    _set_primary_keywords(hdrlet, item.get("primary_keywords", job.get("primary_keywords")) or {})
    failpoints.hit("update.prepare")
    drizzled_copy = Path(drizzled.get(item["solved"], item["solved"])) if final else None
    cr_pixels, attached, skipped, in_place = None, [], [], False
    with _delivery_base(item, drizzled_copy) as (hdul, layout):
        drop_trailing_blanks(hdul)
        others = list(item.get("others", ()))
        # Names the file carries anyway: its headerlets, its WCSs (the primary is archived
        # under its WCSNAME) and the winner's.
        embedded = {str(n).strip().upper() for n in headerlet.get_headerlet_kw_names(hdul, kw="WCSNAME")}
        # An a priori winner usually came from a headerlet the file already carries: made
        # primary, it is not attached a second time.
        attach_winner = wcsname.strip().upper() not in embedded
        taken = set(embedded)
        taken |= {str(v) for h in hdul if h.name == "SCI" for k, v in h.header.items() if k.startswith("WCSNAME")}
        taken.add(wcsname)
        # The WCS being replaced is archived by stwcs (a headerlet named after it, and an
        # alternate WCS when the distortion models agree): a candidate of that name (the
        # pipeline default, once the base went through updatewcs) travels that way.
        replaced = {str(h.header.get("WCSNAME", "")).strip().upper() for h in hdul if h.name == "SCI"}
        others = [o for o in others if str(o["wcsname"]).strip().upper() not in replaced]
        names = unique_wcsnames(taken, [(o["wcsname"], o.get("geometry") or None) for o in others])
        for other, name in zip(others, names, strict=True):
            if name is None:
                skipped.append(other["wcsname"])
                continue
            hdrname = drizzlepac_hdrname(item["original"], name)[:68]
            with _solved(other) as solved:
                hlet = headerlet.create_headerlet(
                    solved, hdrname=hdrname, wcsname=other["wcsname"],
                    descrip=other["descrip"], author="autodriz", logging=False,
                )
            if name != other["wcsname"]:
                for hdu in hlet:
                    if hdu.name in ("PRIMARY", "SIPWCS") and "WCSNAME" in hdu.header:
                        hdu.header["WCSNAME"] = name
            _set_primary_keywords(hlet, other.get("primary_keywords") or {})
            hlet.attach_to_file(hdul)
            attached.append(hdrname)
        hdrlet.apply_as_primary(hdul, attach=attach_winner, archive=True, force=True)
        _copy_fit_keywords(hdul, item["solved"], item.get("fit_keywords", job.get("fit_keywords")) or ())
        if final:
            cr_pixels = _deliver_final_drizzle(hdul, drizzled_copy, int(final["crbit"]), merge=layout is None)
        _set_wcstypes(hdul)
        in_place = _write_prepared(hdul, layout, drizzled_copy, Path(item["tmp"]), Path(item["original"]).name)
    return _finish_prepared(item, wcsname, final, {
        "original": item["original"], "tmp": item["tmp"], "cr_pixels": cr_pixels, "attached": attached,
        "skipped": skipped, "in_place": in_place, "attach_winner": attach_winner,
    })


def _write_prepared(hdul, layout: dict | None, drizzled_copy: Path | None, tmp: Path, name: str) -> bool:
    """Write the prepared file: over its drizzled copy when it can (True), else whole."""
    why = _write_over_drizzled(hdul, layout, drizzled_copy, tmp) if layout else None
    if layout is None or why is not None:
        if why is not None:
            print(f"{name}: written whole ({why})", flush=True)
        # A leftover of an interrupted run is replaced, as a copy over it would be.
        hdul.writeto(tmp, output_verify="exception", overwrite=True)
        return False
    return True


def _finish_prepared(item: dict, wcsname: str, final: dict | None, outcome: dict) -> dict:
    """Check the written temporary file, start its writeback; ``outcome`` with ``duplicates`` added."""
    shutil.copymode(item["original"], item["tmp"])
    # On its way to disk while the next file is prepared: the parent's fsync before the
    # renames then finds it written (~0.8 s of an idle wait less for a full-size visit).
    _start_writeback([item["tmp"]])
    with fits.open(item["tmp"]) as hdul:
        names_now = {str(h.header.get("WCSNAME", "")) for h in hdul if h.name == "SCI"}
        hdrnames = {str(h.header.get("HDRNAME", "")) for h in hdul if h.name == "HDRLET"}
        hlet_wcsnames = [str(h.header.get("WCSNAME", "")).upper() for h in hdul if h.name == "HDRLET"]
        if final and hdul[0].header.get("DRIZCORR") != "COMPLETE":
            raise RuntimeError(f"{item['tmp']}: DRIZCORR not set to COMPLETE")
    if names_now != {wcsname}:
        raise RuntimeError(f"{item['tmp']}: WCSNAME {sorted(names_now)} after applying {wcsname}")
    # stwcs only logs when it cannot attach a headerlet; a missing one is an error here.
    missing = {*([item["hdrname"]] if outcome["attach_winner"] else []), *outcome["attached"]} - hdrnames
    if missing:
        raise RuntimeError(f"{item['tmp']}: headerlets not attached: {sorted(missing)}")
    # Repeated names the file came with (e.g. a rerun archiving the WCS it applied before).
    outcome["duplicates"] = sorted({n for n in hlet_wcsnames if hlet_wcsnames.count(n) > 1})
    return outcome


def _prepare_from_twin(item: dict, published: dict, job: dict, final: dict | None, drizzled: dict) -> dict | str:
    """One exposure's temporary file made from its twin's (:mod:`autodriz.twinprep`), or why not.

    The twin's prepared headers and extensions with the twin's file names made this file's,
    and this file's own values where the two starts differ (:func:`twinprep.twin_refusal`
    allows only :data:`~autodriz.wcstransfer.IGNORED_DIFFERENCES` there), over this file's
    drizzled copy, whose pixels and DQ stay in place; its ``MDRIZSKY`` and cosmic-ray count are
    its own final drizzle's. Written whole when the headers outgrew their room, as
    :func:`_prepare_item` does. Nothing is written when it returns why not.
    """
    from autodriz import twinprep

    # Names the file in the parent's message should anything below fail.
    print(f"AUTODRIZ-CHILD-FILE {item['original']}", flush=True)
    twin = item["twin"]
    mapper = twinprep.name_mapper(twin["original"], item["original"])
    if mapper is None or not final or not item.get("start") or not twin.get("start"):
        return "not a twin this way"
    wcsname = item.get("wcsname", job["wcsname"])
    drizzled_copy = Path(drizzled.get(item["solved"], item["solved"]))
    others = [o["solved"] for o in item.get("others", ())]
    if len(twin.get("others_solved", ())) != len(others):
        return "the two carry different solutions"
    # The twin's solved copy may be its prepared file by now: it said what it was before.
    if published.get("solved_digest") != _solved_digest(item, None):
        return "the two solved copies differ"
    # Often one pair: the other solutions' headerlets are made from the default's copies too.
    pairs = list(dict.fromkeys([(twin["start"], item["start"]), *zip(twin["others_solved"], others)]))
    with contextlib.ExitStack() as stack:
        for a, b in pairs:
            if twinprep.file_digest(a, mapper) != twinprep.file_digest(b):
                with fits.open(a, mode="readonly") as ta, fits.open(b, mode="readonly") as tb:
                    why = twinprep.twin_refusal(ta, tb, mapper) or "their digests differ"
                return f"{Path(b).name} and {Path(a).name}: {why}"
        twin_start = stack.enter_context(fits.open(twin["start"], mode="readonly"))
        own_start = stack.enter_context(fits.open(item["start"], mode="readonly"))
        prepared = stack.enter_context(fits.open(twin["tmp"], mode="readonly"))
        hdul, layout = stack.enter_context(_delivery_base(item, drizzled_copy))
        if layout is None:
            return "this file is not written over its drizzled copy"
        prefix = layout["prefix"]
        if [(h.name, h.ver) for h in prepared[:prefix]] != [(h.name, h.ver) for h in hdul[:prefix]]:
            return "the twin's file begins with other extensions"
        starts = {(h.name, h.ver): (h, own_start[i]) for i, h in enumerate(twin_start)}
        hdus = []
        twin_stem = twinprep.file_stem(twin["original"]).encode("ascii")
        for index, hdu in enumerate(prepared):
            if index >= prefix:
                raw = twinprep.hdu_bytes(hdu)
                base = starts.get((hdu.name, hdu.ver))
                if base is not None and twinprep.hdu_bytes(base[0]) == raw:
                    # Left as the start had it: this file's own (its headerlets' DATEs).
                    hdus.append(fits.hdu.base._BaseHDU.fromstring(twinprep.hdu_bytes(base[1])))  # noqa: SLF001
                    continue
                raw = twinprep.map_hdu_bytes(raw, mapper)
                if twin_stem in raw:
                    return f"{hdu.name},{hdu.ver} names the twin where no HDRNAME does"
                hdus.append(fits.hdu.base._BaseHDU.fromstring(raw))  # noqa: SLF001
                continue
            header = hdu.header.copy()
            if "HDRNAME" in header and isinstance(header["HDRNAME"], str):
                header["HDRNAME"] = mapper(header["HDRNAME"])
            base = starts.get((hdu.name, hdu.ver))
            if base is not None:
                for key in twinprep.start_differences(base[0].header, base[1].header):
                    # The preparation sets MDRIZSKY again from this file's own final drizzle.
                    if key not in hdu.header:
                        return f"the preparation removed {key}, in which the two files differ"
                    if key != "MDRIZSKY" and hdu.header.cards[key].image != base[0].header.cards[key].image:
                        return f"the preparation changed {key}, in which the two files differ"
                    header[key] = (base[1].header[key], base[1].header.comments[key])
            if twin_stem in header.tostring().encode("ascii"):
                return f"{hdu.name},{hdu.ver} names the twin where no HDRNAME does"
            hdul[index].header = header
            hdus.append(hdul[index])
        out = _InMemoryHDUList(hdus)
        # Each file's sky is its own final drizzle's (set below); without one the delivered
        # value would be the start's, which the twin's headers no longer hold.
        with fits.open(drizzled_copy, mode="readonly") as own:
            if any(h.name == "SCI" and "MDRIZSKY" not in h.header for h in own):
                return "its final drizzle left a SCI header without MDRIZSKY"
        # S_REGION comes with the twin's headers: the same WCS gives the same footprint.
        cr_pixels = _deliver_final_drizzle(out, drizzled_copy, int(final["crbit"]), merge=False, sregion=False)
        in_place = _write_prepared(out, layout, drizzled_copy, Path(item["tmp"]), Path(item["original"]).name)
    return _finish_prepared(item, wcsname, final, {
        "original": item["original"], "tmp": item["tmp"], "cr_pixels": cr_pixels,
        "attached": [mapper(n) for n in published["attached"]], "skipped": list(published["skipped"]),
        "in_place": in_place, "attach_winner": bool(published["attach_winner"]), "from_twin": True,
    })


def _pixel_hdus(hdul) -> dict:
    from autodriz.hstio import PIXEL_EXTNAMES

    return {(h.name, int(h.header.get("EXTVER", 1))): h for h in hdul
            if h.name in PIXEL_EXTNAMES and h.header.get("NAXIS", 0) > 0}


def _same_pixels(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].header.get(f"NAXIS{n}") == b[k].header.get(f"NAXIS{n}") for k in a for n in (1, 2)
    )


@contextlib.contextmanager
def _delivery_base(item: dict, drizzled: Path | None):
    """The HDUs the delivered file starts from, in memory, and the data parts it may keep.

    Yields ``(hdul, layout)``. With ``item["start"]`` (the pipeline default's copy, or its header
    shadow): its headers and small extensions, which updatewcs made as runastrodriz's updatewcs
    in place would, with the pixels of the exposure. The pixels are the final drizzle's copy's
    (``drizzled``), the file the delivered one can be written over (``layout``: its SCI, ERR and
    DQ data spans and the sizes of the headers before them, see :func:`_write_over_drizzled`),
    when its pixel extensions come first and match the default's; else the original's
    (``layout`` None). Without ``start``, or when the default's copy does not hold the
    original's pixel extensions, the original's own HDUs.

    The drizzled copy's DQ is delivered as it is: AstroDrizzle cleared and set only the
    cosmic-ray bit in it, the exposure's other bits are the original's
    (``tests/test_fitspatch.py`` checks both against the given files).
    """
    from autodriz.hstio import PIXEL_EXTNAMES

    with contextlib.ExitStack() as stack:
        original = stack.enter_context(fits.open(item["original"], mode="readonly"))
        start = item.get("start")
        if not start:
            yield _InMemoryHDUList(list(original)), None
            return
        copy = stack.enter_context(fits.open(start, mode="readonly"))
        hdus = list(copy)
        ours, theirs = _pixel_hdus(hdus), _pixel_hdus(original)
        if not _same_pixels(ours, theirs):
            yield _InMemoryHDUList(list(original)), None
            return
        # Not when the default is the winner: its copy is the drizzled file, which the
        # extensions after the pixels would be read from while they are written over.
        if drizzled is not None and drizzled.is_file() and not os.path.samefile(start, drizzled):
            driz = stack.enter_context(fits.open(drizzled, mode="readonly"))
            copies = list(driz)
            pixels = _pixel_hdus(copies)
            with_data = {id(h) for h in pixels.values()}
            prefix = max((i for i, h in enumerate(copies) if h.name in PIXEL_EXTNAMES), default=-1) + 1
            lead = [(h.name, h.ver) for h in copies[:prefix]]
            if prefix and lead == [(h.name, h.ver) for h in hdus[:prefix]] and _same_pixels(pixels, ours):
                data, headers = {}, []
                for index, hdu in enumerate(copies[:prefix]):
                    # The copy's HDU (its data unread, in place in its file) under the default's header.
                    hdu.header = hdus[index].header.copy()
                    hdus[index] = hdu
                    # The HDU's own (HDUList.fileinfo would serialise every header of the
                    # file on each call to see whether one was resized).
                    info = hdu.fileinfo()
                    headers.append(info["datLoc"] - info["hdrLoc"])
                    if id(hdu) in with_data:
                        data[info["datLoc"]] = info["datSpan"]
                yield _InMemoryHDUList(hdus), {"data": data, "headers": headers, "prefix": prefix}
                return
        hdul = _InMemoryHDUList(hdus)
        for key, hdu in ours.items():
            hdu.data = theirs[key].data
        yield hdul, None


def _write_over_drizzled(hdul, layout: dict, drizzled: Path, tmp: Path) -> str | None:
    """Make ``tmp`` a link of ``drizzled`` and write ``hdul`` over it, its pixels left in place.

    The final drizzle's copy holds the exposure's pixels, its DQ with the final cosmic-ray
    flags included, at the offsets the delivered file needs them (its headers keep their size:
    :func:`autodriz.fitspatch.reserve_header_cards`): only the headers and the extensions after
    the pixels are written, not ~170 MB per full-size ACS/WFC file. ``layout``: the data
    spans to keep (offset → length) and the size on disk of each header before the last of
    them, which the new headers are padded to with blank cards. Returns why not, with nothing
    written (another file system, a header that outgrew its room): the caller writes ``tmp``
    whole.
    """
    from autodriz.fitspatch import LayoutChanged, pad_header_to, write_over

    for index, size in enumerate(layout["headers"]):
        if not pad_header_to(hdul[index].header, size):
            return f"the header of {hdul[index].name},{hdul[index].ver} outgrew its {size} bytes"
    tmp.unlink(missing_ok=True)  # a leftover of an interrupted run
    try:
        os.link(drizzled, tmp)
    except OSError as exc:
        return f"no link beside the original: {exc.strerror or exc}"
    try:
        write_over(hdul, tmp, layout["data"], layout["prefix"])
    except LayoutChanged as exc:
        # Its pixels were never written: the whole write reads them from the drizzled copy.
        tmp.unlink()
        return f"layout changed: {exc}"
    return None


@contextlib.contextmanager
def _solved(other: dict):
    """The file a solution's headerlet is made from: its working copy, or, for a fit whose copies
    were never written (``sci_cards``), its starting copy with the fit applied in memory."""
    cards = other.get("sci_cards")
    if not cards:
        yield other["solved"]
        return
    from autodriz.hstio import apply_sci_cards

    with fits.open(other["solved"], mode="readonly") as hdul:
        edited = _InMemoryHDUList(list(hdul))
        apply_sci_cards(edited, {int(k): v for k, v in cards.items()})
        yield edited


def _set_primary_keywords(hlet, keywords: dict) -> None:
    """Fit keywords drizzlepac writes into a headerlet's primary header (CATALOG, FIT_RMS …)."""
    for key, (value, comment) in keywords.items():
        hlet[0].header[key] = (value, comment)


def _copy_fit_keywords(hdul, solved: str, keywords) -> None:
    """The winner's fit keywords from its working copy's SCI headers into the original's."""

    if not keywords:
        return
    with fits.open(solved) as copy:
        for hdu in hdul:
            if hdu.name != "SCI":
                continue
            source = copy[("SCI", int(hdu.header.get("EXTVER", 1)))].header
            for key in keywords:
                if key in source:
                    hdu.header[key] = (source[key], source.comments[key])


def _deliver_final_drizzle(hdul, drizzled: Path, crbit: int, merge: bool = True, sregion: bool = True) -> int:
    """Give an original being updated what the final AstroDrizzle run in place would leave.

    The ``crbit`` flags of the drizzled copy's DQ (cleared by ``resetbits``, set by the
    cosmic-ray step), the sky it subtracted (``MDRIZSKY`` of each SCI header),
    ``DRIZCORR = 'COMPLETE'`` as runastrodriz sets it, and ``S_REGION`` of
    each chip from its new primary WCS (as drizzlepac's ``compute_sregion`` writes it). Returns
    the number of flagged pixels. With ``merge`` False the DQ of ``hdul`` is the drizzled
    copy's own, which has them already, and is left unread.
    """
    from autodriz.delivery import exposure_sregion, merge_cr_flags

    flagged = 0
    with fits.open(drizzled) as copy:
        drizzled_hdus = {(h.name, int(h.header.get("EXTVER", 1))): h for h in copy}
        for hdu in hdul:
            key = (hdu.name, int(hdu.header.get("EXTVER", 1)))
            header = drizzled_hdus[key].header if key in drizzled_hdus else {}
            if hdu.name == "SCI" and "MDRIZSKY" in header:
                # The sky AstroDrizzle subtracted, which it writes into the files it drizzles.
                hdu.header["MDRIZSKY"] = (header["MDRIZSKY"], header.comments["MDRIZSKY"])
            if hdu.name != "DQ" or hdu.header.get("NAXIS", 0) == 0:
                continue
            if merge:
                hdu.data = merge_cr_flags(hdu.data, drizzled_hdus[key].data, crbit)
                flagged += int(np.count_nonzero(hdu.data & crbit))
            else:
                flagged += int(np.count_nonzero(drizzled_hdus[key].data & crbit))
    hdul[0].header["DRIZCORR"] = "COMPLETE"
    for hdu in hdul if sregion else ():
        if hdu.name == "SCI":
            hdu.header["S_REGION"] = exposure_sregion(hdul, int(hdu.header.get("EXTVER", 1)))
    return flagged


def _set_wcstypes(hdul) -> None:
    """WCSTYPE<key> for every WCS of every SCI header, from its WCSNAME, as runastrodriz does.

    A WCS without a name is OPUS's, which runastrodriz names so; a name drizzlepac cannot
    interpret (a fit term it does not know) is ``user-defined``, its own fallback.
    """
    from drizzlepac.updatehdr import interpret_wcsname_type
    from stwcs.wcsutil import altwcs

    for index, hdu in enumerate(hdul):
        if hdu.name != "SCI":
            continue
        header = hdu.header
        for key in altwcs.wcskeys(hdul, index):
            key = key.strip()
            wcsname = header.get(f"WCSNAME{key}")
            if wcsname is None:
                wcsname = header[f"WCSNAME{key}"] = "OPUS"
            try:
                header[f"WCSTYPE{key}"] = interpret_wcsname_type(str(wcsname))
            except (KeyError, IndexError):
                header[f"WCSTYPE{key}"] = "user-defined"


def _apply_apriori(job: dict) -> dict:
    """Make each headerlet file the primary WCS of its working copy (a priori candidates).

    The WCS that was primary is archived (alternate WCS and headerlet extension), as stwcs
    does; the headerlet itself is attached unless the copy already carries one of that HDRNAME
    (the embedded case). ``force``: the headerlet's own NPOL/D2IM tables come with it, so a
    DISTNAME that differs only in those files still gives a self-consistent WCS; the parent has
    already required the same IDCTAB.

    An item with a ``source`` (the default candidate's copy) is read from it, changed in memory
    and written once as ``copy``: a copy opened in update mode is rewritten whole when the
    archived WCS and the headerlet grow its headers, so each 170 MB copy was written twice.
    The two give the same bytes (``tests/test_apriori.py``). Without ``source``, ``copy`` is
    updated in place.
    """
    from stwcs.wcsutil import headerlet

    def apply(hlet, hdul) -> None:
        attached = {n.upper() for n in headerlet.get_headerlet_kw_names(hdul, kw="HDRNAME")}
        hlet.apply_as_primary(hdul, attach=hlet.hdrname.upper() not in attached, archive=True, force=True)

    done, errors = {}, {}
    for item in job["items"]:
        # One bad headerlet must not cost the other solutions: report it, the parent drops
        # that solution only.
        try:
            failpoints.hit("apriori.apply")
            hlet = headerlet.Headerlet.fromfile(item["headerlet"])
            if item.get("source"):
                _write_changed(item["source"], item["copy"], lambda hdul, hlet=hlet: apply(hlet, hdul))
            else:
                with fits.open(item["copy"], mode="update") as hdul:
                    apply(hlet, hdul)
            with fits.open(item["copy"]) as hdul:
                done[item["copy"]] = sorted({str(h.header.get("WCSNAME", "")) for h in hdul if h.name == "SCI"})
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which decides
            errors[item["copy"]] = f"{type(exc).__name__}: {exc}"
    return {"wcsnames": done, "errors": errors}


TASKS = MappingProxyType({"updatewcs": _updatewcs, "astrodrizzle": _astrodrizzle, "apply_headerlets": _apply_headerlets,
                         "apply_apriori": _apply_apriori})


def _print_usage(done: str) -> None:
    """This process's CPU and page faults so far (and its finished children's), for the log.

    A run's CPU seconds beyond its drizzles are what the benchmark weighs
    (``scripts/bench_vs_runastrodriz.py``); these lines say how a child's split between its work
    and the kernel's (page faults of new memory are the dearest part of it on some VMs).
    """
    for who, usage in (("", resource.getrusage(resource.RUSAGE_SELF)),
                       (" (its finished children)", resource.getrusage(resource.RUSAGE_CHILDREN))):
        if who and usage.ru_utime + usage.ru_stime < 0.05:
            continue
        print(f"resources after {done}{who}: user {usage.ru_utime:.2f} s, system {usage.ru_stime:.2f} s, "
              f"minor page faults {usage.ru_minflt}, major {usage.ru_majflt}, peak RSS {usage.ru_maxrss // 1024} MB",
              flush=True)


def main(argv: list[str]) -> int:
    # A fresh interpreter's allocator as the warm server's children have it (autodriz.allocator).
    tuning = tune_process()
    # Frozen: the objects a warm server's imports made (autodriz._warm), which the collector skips.
    print(f"allocator: numpy huge pages {'off' if tuning.hugepages_off else 'as they were'}, glibc thresholds "
          f"{'raised' if tuning.malloc else 'as they were'}{'; ' + '; '.join(tuning.notes) if tuning.notes else ''}"
          f"; {gc.get_freeze_count()} objects frozen", flush=True)
    job = json.loads(Path(argv[1]).read_text())
    failpoints.hit(f"child-start.{job['task']}")
    result = TASKS[job["task"]](job)
    _print_usage(job["task"])
    then = job.get("then")
    if then:
        # A second task in the same process (it has drizzlepac/stwcs imported already). Its
        # failure is reported, not raised: the parent maps it to its own exit code (e.g. the
        # WCS update after a final drizzle that succeeded is an update failure, not a drizzle one).
        t0 = time.perf_counter()
        try:
            result["then"] = TASKS[then["task"]](then)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which decides
            traceback.print_exc()
            result["then_error"] = f"{type(exc).__name__}: {exc}"
        result["then_seconds"] = time.perf_counter() - t0
        _print_usage(f"{job['task']} and {then['task']}")
    sys.stdout.flush()
    print("AUTODRIZ-CHILD-RESULT " + json.dumps(result), flush=True)
    return 0


def forked_main(job_path: str, cwd: str, env: dict[str, str], log_path: str, *,
                forked_from_caller: bool = False) -> None:
    """:func:`main` in a forked child: made what a fresh child would be.

    The forking process's working directory, environment and standard streams are the calling
    process's (the warm server's are those of when it started); the job's are set here, in the
    child, before it runs. A child forked from the calling process itself
    (``forked_from_caller``, :func:`autodriz.childproc.run_child` ``how="here"``) also drops the
    caller's logging handlers (the console, the trailer) and its Python-level standard streams
    (which a test harness may have pointed elsewhere): the child's output is its own log.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    if forked_from_caller:
        _forget_caller_output()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    code = main(["autodriz._child", job_path])
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


def _forget_caller_output() -> None:
    """Leave the calling process's logging set-up and streams behind, as a fresh interpreter would."""
    import logging

    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    for lg in loggers:
        # Not closed: the files (the trailer) are the caller's, which goes on writing them.
        lg.handlers.clear()
        lg.propagate = True
        lg.disabled = False
        lg.setLevel(logging.NOTSET)
    logging.getLogger().setLevel(logging.WARNING)
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)  # noqa: SIM115


if __name__ == "__main__":
    sys.exit(main(sys.argv))
