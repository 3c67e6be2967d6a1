"""Logging for a run: console and trailer handlers, and greppable waypoint lines.

Library modules only ever call ``logging.getLogger(__name__)``. The CLI opens a
:func:`run_logging` context for each dataset; it attaches a console handler and a trailer-file
handler to the ``autodriz`` logger (and to the in-process loggers of stwcs/drizzlepac so their
messages reach the trailer too) and removes them on exit, so running many datasets in one process
never leaks handlers.

Waypoints
---------
Operations grep the trailer for lines that begin with a fixed prefix after the timestamp:

``AUTODRIZ-START <root> input=<path>``
    processing of a dataset starts.
``AUTODRIZ-STAGE start <stage>`` / ``AUTODRIZ-STAGE end <stage> <status> <seconds>s``
    a stage starts / ends; status is ``ok``, ``skipped`` or ``failed``.
``AUTODRIZ-VERDICT <EXITCODE_NAME> exit=<n> ...``
    the final verdict of the run, always the last waypoint of a run.

Console and trailer
-------------------
The trailer receives every record (DEBUG and up). The console at its default level (INFO) is a
summary: warnings and errors, and the few INFO records logged with ``extra=CONSOLE`` — one per
stage outcome (the dataset, the default WCS, the a priori and a posteriori results, the chosen
WCS, the drizzle, the update, the products). The other INFO records (the details behind each
decision) are decisions all the same and stay at INFO in the trailer; ``--log-level DEBUG`` or
``--debug`` shows them on the console too.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
import types
import warnings
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

WAYPOINT_PREFIX = "AUTODRIZ-"

#: Packages whose versions head every trailer.
VERSIONED_PACKAGES = (
    "autodriz",
    "drizzlepac",
    "stwcs",
    "tweakwcs",
    "photutils",
    "astropy",
    "numpy",
    "scipy",
)

#: Loggers of the libraries we call in-process; their records go to the trailer as well.
LIBRARY_LOGGERS = ("stwcs", "drizzlepac")

#: Records of child-process output are logged under this name: trailer only, not console.
CHILD_LOGGER = "autodriz.child"
#: The trailer's run header (versions, settings): trailer only, not console.
HEADER_LOGGER = "autodriz.trailer"
_TRAILER_ONLY = (CHILD_LOGGER, HEADER_LOGGER)

#: ``extra=`` of the INFO records the default console shows (see the module notes).
CONSOLE: Mapping[str, Any] = types.MappingProxyType({"console": True})

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def package_versions() -> dict[str, str]:
    """Return the installed version of every package in :data:`VERSIONED_PACKAGES`."""
    found = {}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


class _TrailerOnly(logging.Filter):
    """Keep the run header and the (long) verbatim child-process logs off the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(_TRAILER_ONLY)


class _ConsoleSummary(logging.Filter):
    """At the console's INFO level, only stage outcomes (``extra=CONSOLE``) and warnings.

    A filter on the console handler only: the trailer's handler still gets every INFO record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or bool(getattr(record, "console", False))


class _ConsoleFormatter(logging.Formatter):
    """One line per record on the console; tracebacks only at DEBUG (they are in the trailer)."""

    def __init__(self, tracebacks: bool) -> None:
        super().__init__("%(levelname)-7s %(message)s")
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        if self.tracebacks or not (record.exc_info or record.stack_info):
            return super().format(record)
        # Format a copy without the traceback, so the trailer's handler still gets it.
        plain = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None, "stack_info": None})
        return super().format(plain) + " (traceback in the trailer; --debug shows it here)"


@contextlib.contextmanager
def run_logging(
    trailer: Path | None,
    *,
    console_level: int | str = logging.INFO,
    stream=None,
) -> Iterator[logging.Logger]:
    """Attach console and trailer handlers for the duration of one run.

    Parameters
    ----------
    trailer : Path or None
        Trailer file, opened in append mode as the pipeline does; None for console only.
    console_level : int or str
        Level of the console handler (the trailer always receives DEBUG and above). At INFO
        the console shows the summary lines only (see the module notes); DEBUG shows all.
    stream : file-like, optional
        Console stream; ``sys.stderr`` by default.

    Yields
    ------
    logging.Logger
        The ``autodriz`` logger.
    """
    root = logging.getLogger("autodriz")
    handlers: list[logging.Handler] = []
    console = logging.StreamHandler(stream or sys.stderr)
    console.setLevel(console_level)
    level_no = logging.getLevelName(console_level) if isinstance(console_level, str) else console_level
    console.setFormatter(_ConsoleFormatter(tracebacks=level_no <= logging.DEBUG))
    console.addFilter(_TrailerOnly())
    if level_no == logging.INFO:
        console.addFilter(_ConsoleSummary())
    handlers.append(console)
    if trailer is not None:
        trailer.parent.mkdir(parents=True, exist_ok=True)
        tra = logging.FileHandler(trailer, mode="a", encoding="utf-8")
        tra.setLevel(logging.DEBUG)
        tra.setFormatter(logging.Formatter(_FORMAT))
        handlers.append(tra)

    touched = [root] + [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    saved = [(lg, lg.level, lg.propagate) for lg in touched]
    try:
        for lg in touched:
            lg.setLevel(logging.DEBUG)
            # Our handlers are the only ones that should see these records during a run.
            lg.propagate = False
            for h in handlers:
                if lg is root or h is not console:
                    lg.addHandler(h)
        yield root
    finally:
        for lg, level, propagate in saved:
            for h in handlers:
                lg.removeHandler(h)
            lg.setLevel(level)
            lg.propagate = propagate
        for h in handlers:
            h.close()


def write_trailer_header(settings: Mapping[str, Any], argv: list[str]) -> None:
    """Log the run header to the trailer: time, command line, package versions, effective settings.

    ``settings`` is :meth:`Settings.as_dict`; its ``provenance`` entry, if any, says where each
    value came from and is shown beside it.
    """
    logger = logging.getLogger(HEADER_LOGGER)
    settings = dict(settings)
    provenance = settings.pop("provenance", {}) or {}
    logger.info("=" * 78)
    logger.info("autodriz run started %s", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    logger.info("command: %s", " ".join(argv))
    for name, ver in package_versions().items():
        logger.info("version %-10s %s", name, ver)
    for key, value in settings.items():
        logger.info("setting %-20s %s [%s]", key, value, provenance.get(key, "default"))


def waypoint(logger: logging.Logger, kind: str, *words: object) -> None:
    """Log one waypoint line, ``AUTODRIZ-<KIND> word word …``, at INFO."""
    logger.info("%s%s %s", WAYPOINT_PREFIX, kind.upper(), " ".join(str(w) for w in words))


def stage_ends(trailer_text: str) -> list[tuple[str, str, float]]:
    """(stage, status, seconds) of every ``AUTODRIZ-STAGE end`` waypoint of a trailer, in order.

    The reader of what :func:`stage` writes (for benchmarks and operations scripts).
    """
    return [(m[1], m[2], float(m[3])) for m in re.finditer(r"AUTODRIZ-STAGE end (\S+) (\S+) ([0-9.]+)s", trailer_text)]


@contextlib.contextmanager
def stage(
    logger: logging.Logger, name: str, timings: dict[str, float] | None = None
) -> Iterator[dict[str, str]]:
    """Bracket a stage with start/end waypoints; the body may set ``status`` in the yielded dict.

    An exception marks the stage ``failed`` and propagates. When ``timings`` is given, the
    stage's wall time in seconds is stored there under ``name``.
    """
    state = {"status": "ok"}
    waypoint(logger, "STAGE", "start", name)
    t0 = time.perf_counter()
    try:
        yield state
    except BaseException:
        state["status"] = "failed"
        raise
    finally:
        seconds = time.perf_counter() - t0
        if timings is not None:
            timings[name] = round(seconds, 3)
        waypoint(logger, "STAGE", "end", name, state["status"], f"{seconds:.1f}s")


#: Libraries whose loggers :func:`quiet_libraries` quietens by default (tweakwcs logs every
#: match at INFO; stwcs and astroquery chatter during fits and catalog queries).
QUIET_LIBRARIES = ("tweakwcs", "stwcs", "astroquery")


class _Collector(logging.Handler):
    """Keeps the messages of the libraries' loggers for our own log and the report."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


@contextlib.contextmanager
def quiet_libraries(
    relog: logging.Logger, names: tuple[str, ...] = QUIET_LIBRARIES, level: int = logging.WARNING
) -> Iterator[list[str]]:
    """Keep the named libraries' log records (and all warnings) off the console for the duration.

    tweakwcs sets its module loggers to DEBUG at import and logs every match at INFO. Inside
    the context their levels are raised to ``level`` and their WARNING+ records are collected
    into the list yielded (and re-logged at DEBUG on ``relog``) instead of propagating; levels,
    handlers and propagation are restored exactly afterwards, so logging is left unchanged.
    """
    manager = logging.root.manager
    collector = _Collector()
    # Only loggers that exist (never create one: a plain "astroquery" Logger made here would
    # break astroquery's astropy-class logger when astroquery is imported later). Each gets the
    # collector and stops propagating, so a record is collected once, where it was made.
    saved: list[tuple[logging.Logger, int, bool]] = []
    for name, lg in list(manager.loggerDict.items()):
        if name.split(".", 1)[0] in names and isinstance(lg, logging.Logger):
            saved.append((lg, lg.level, lg.propagate))
            lg.setLevel(max(lg.level, level))
            lg.addHandler(collector)
            lg.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield collector.messages
    finally:
        for lg, lvl, prop in saved:
            lg.removeHandler(collector)
            lg.setLevel(lvl)
            lg.propagate = prop
        for message in collector.messages:
            relog.debug("%s", message)

