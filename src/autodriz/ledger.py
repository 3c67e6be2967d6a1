"""The batch ledger: one SQLite row per dataset, so that a campaign can stop and resume.

Only the process that drives a campaign (``autodriz batch``) writes the ledger; the Dask workers
never touch it, so it may live on a local disk of the submitting host while the workers run
anywhere. Every write is one transaction (``BEGIN IMMEDIATE`` … ``COMMIT``), so a campaign killed
with ``kill -9`` leaves the ledger as it was after its last completed write. SQLite's default
rollback journal is used rather than WAL because WAL needs shared memory, which network file
systems do not provide; the ledger is small and written a few times per dataset.

Statuses
--------
``pending``
    to be run (new, or left ``running`` by a campaign that was killed, or interrupted).
``running``
    submitted to the cluster by the campaign that holds the ledger's lock. A ``running`` row
    seen by a campaign that has just taken the lock is stale: its campaign died.
``done``
    the single-dataset run wrote products (``OK`` or ``DEFAULT_ONLY``). Run again only when what
    it was made from changed (its ``provenance``: inputs, settings, catalog, versions on request).
``failed``
    the run returned any other code, crashed, or timed out. Run again on request
    (``--retry-failed``) or when its provenance changed (e.g. a repaired input).
``skipped``
    nothing to do by request (``DRIZCORR = OMIT``, exit code 5). Run again only when its
    provenance changed.

Schema 2 added ``provenance`` and ``reason`` (why the latest attempt ran); a schema-1 ledger is
migrated in place by the first campaign that opens it (readers accept it as it is).

Every attempt is also kept in the ``attempts`` table, so the history of a dataset (which campaign
ran it, when, how it ended) survives later attempts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Self

from autodriz import failpoints

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2

#: Columns added by each schema version, applied in order to an older ledger when a campaign
#: opens it (``ALTER TABLE … ADD COLUMN`` keeps every row; new columns start NULL).
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        # What the latest attempt's products were made from (JSON of autodriz.provenance.Provenance),
        # taken after the attempt, i.e. of the inputs as autodriz left them.
        "ALTER TABLE datasets ADD COLUMN provenance TEXT",
        # Why the latest attempt was run ("new dataset", "input changed: …").
        "ALTER TABLE datasets ADD COLUMN reason TEXT",
        "ALTER TABLE attempts ADD COLUMN reason TEXT",
    ),
}

PENDING = "pending"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
SKIPPED = "skipped"
STATUSES: tuple[str, ...] = (PENDING, RUNNING, DONE, FAILED, SKIPPED)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS datasets (
    input          TEXT PRIMARY KEY,          -- absolute path of the ASN/RAW/FLT input
    root           TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ({", ".join(repr(s) for s in STATUSES)})),
    attempts       INTEGER NOT NULL DEFAULT 0,
    started_at     TEXT,                      -- ISO 8601 UTC of the latest attempt
    ended_at       TEXT,
    seconds        REAL,
    exit_code      INTEGER,
    exit_name      TEXT,
    wcsname        TEXT,
    message        TEXT,
    report         TEXT,
    trailer        TEXT,
    trailer_offset INTEGER,                   -- trailer size when the latest attempt started
    worker         TEXT,
    peak_rss_mb    REAL,
    campaign       TEXT,                      -- campaign of the latest attempt
    added_at       TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    input      TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    campaign   TEXT,
    started_at TEXT,
    ended_at   TEXT,
    status     TEXT,                          -- running, done, failed, skipped, abandoned, interrupted
    exit_code  INTEGER,
    message    TEXT,
    worker     TEXT,
    PRIMARY KEY (input, attempt)
);
"""


class LedgerError(RuntimeError):
    """The ledger cannot be opened, is not an autodriz ledger, or is held by another campaign."""


class LedgerBusy(LedgerError):
    """Another campaign holds the ledger's lock."""


def utcnow() -> str:
    """Current UTC time as ISO 8601 with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Row:
    """One dataset's row of the ledger."""

    input: str
    root: str
    status: str
    attempts: int
    started_at: str | None
    ended_at: str | None
    seconds: float | None
    exit_code: int | None
    exit_name: str | None
    wcsname: str | None
    message: str | None
    report: str | None
    trailer: str | None
    trailer_offset: int | None
    worker: str | None
    peak_rss_mb: float | None
    campaign: str | None
    added_at: str
    updated_at: str
    #: JSON provenance (:class:`autodriz.provenance.Provenance`) after the latest attempt, or the
    #: baseline recorded for a row from a schema-1 ledger; None before any.
    provenance: str | None = None
    #: Why the latest attempt was run.
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-friendly data (the provenance parsed)."""
        out = dict(self.__dict__)
        if out["provenance"]:
            with contextlib.suppress(ValueError):
                out["provenance"] = json.loads(out["provenance"])
        return out


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended, as the ledger records it."""

    status: str
    exit_code: int | None
    exit_name: str | None
    message: str
    seconds: float | None = None
    wcsname: str | None = None
    report: str | None = None
    worker: str | None = None
    peak_rss_mb: float | None = None
    #: JSON provenance of what the attempt was made from (inputs as it left them).
    provenance: str | None = None


class Ledger:
    """A campaign's SQLite ledger.

    Parameters
    ----------
    path : Path
        The SQLite file; created (with its folder) if missing.
    readonly : bool
        Open for reading only (``--status``); never creates or changes the file.

    Raises
    ------
    LedgerError
        If the file cannot be opened or is not an autodriz ledger.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self._lock_file: IO[str] | None = None
        try:
            if readonly:
                if not self.path.is_file():
                    raise LedgerError(f"no ledger at {self.path}")
                self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # isolation_level=None: we issue BEGIN/COMMIT ourselves, so each write is exactly
                # the transaction we mean and nothing is left open between writes.
                self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
                self._conn.execute("PRAGMA synchronous=FULL")
                with self._transaction() as cur:
                    # executescript() would COMMIT on its own; one statement at a time keeps
                    # the schema creation inside this transaction.
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            cur.execute(statement)
                    cur.execute(
                        "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '1'), ('created', ?)",
                        (utcnow(),),
                    )
                    self._migrate(cur)
            self._conn.row_factory = sqlite3.Row
            version = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot use {self.path} as a ledger: {exc}") from exc
        # A reader (--status, --dry-run) accepts an older ledger as it is: Row's newer fields
        # default to None, and only a campaign, which holds the write lock, migrates it.
        readable = version is not None and (int(version[0]) == SCHEMA_VERSION or (readonly and 1 <= int(version[0]) < SCHEMA_VERSION))
        if not readable:
            raise LedgerError(f"{self.path}: ledger schema {version and version[0]!r}, expected {SCHEMA_VERSION}")

    def _migrate(self, cur: sqlite3.Cursor) -> None:
        """Bring an older ledger to :data:`SCHEMA_VERSION`, inside the opening transaction.

        A ledger created now has the old tables only (``CREATE TABLE`` above is the version-1
        schema), so new and old ledgers take the same path.
        """
        version = int(cur.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
        if version > SCHEMA_VERSION:
            return  # a newer autodriz's ledger: refused by the caller with its version
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[target]:
                cur.execute(statement)
            cur.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(target),))
        if version < SCHEMA_VERSION and cur.execute("SELECT COUNT(*) FROM datasets").fetchone()[0]:
            logger.info("ledger %s: schema %d → %d (provenance columns added)", self.path, version, SCHEMA_VERSION)

    # -- plumbing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        cur = self._conn.cursor()
        # IMMEDIATE takes the write lock at once, so a read-modify-write cannot interleave with
        # another writer (e.g. a --status reader is fine, a second campaign is not).
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            try:
                failpoints.hit("ledger.commit")
                cur.execute("COMMIT")
            except sqlite3.Error as exc:  # disk full, I/O error: the campaign stops with exit 23
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
                raise LedgerError(f"{self.path}: could not write to the ledger ({exc})") from exc
        finally:
            cur.close()

    def close(self) -> None:
        """Release the campaign lock (if held) and close the database."""
        self.release()
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the campaign lock ------------------------------------------------------------------

    @property
    def lock_path(self) -> Path:
        """The lock file beside the ledger (``<ledger>.lock``)."""
        return self.path.with_name(self.path.name + ".lock")

    def acquire(self, owner: str) -> None:
        """Take the campaign lock, so that two campaigns never run the same ledger at once.

        An ``flock`` is released by the kernel when its process dies, even by ``kill -9``, so a
        re-run after a crash takes it at once; that is why every ``running`` row found after
        taking it is known to be stale.

        Raises
        ------
        LedgerBusy
            If another live process holds it.
        """
        f = open(self.lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the campaign
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise LedgerBusy(f"ledger {self.path} is in use by {holder}") from exc
        f.seek(0)
        f.truncate()
        f.write(f"{owner}\n")
        f.flush()
        self._lock_file = f

    def release(self) -> None:
        """Release the campaign lock if this object holds it."""
        if self._lock_file is not None:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    # -- reading ----------------------------------------------------------------------------

    def rows(self, inputs: Iterable[str] | None = None) -> list[Row]:
        """Rows in insertion order; only those of ``inputs`` when given."""
        rows = [Row(**dict(r)) for r in self._conn.execute("SELECT * FROM datasets ORDER BY rowid")]
        if inputs is None:
            return rows
        wanted = set(inputs)
        return [r for r in rows if r.input in wanted]

    def get(self, input_key: str) -> Row | None:
        """The row of one dataset, or None."""
        r = self._conn.execute("SELECT * FROM datasets WHERE input = ?", (input_key,)).fetchone()
        return Row(**dict(r)) if r else None

    def counts(self, inputs: Iterable[str] | None = None) -> dict[str, int]:
        """Number of rows per status (every status present, zeros included)."""
        out = dict.fromkeys(STATUSES, 0)
        for r in self.rows(inputs):
            out[r.status] += 1
        return out

    def attempts_of(self, input_key: str) -> list[dict[str, Any]]:
        """The attempt history of one dataset, oldest first."""
        cur = self._conn.execute("SELECT * FROM attempts WHERE input = ? ORDER BY attempt", (input_key,))
        return [dict(r) for r in cur]

    def meta(self) -> dict[str, str]:
        """The ledger's metadata (schema version, creation time, last campaign …)."""
        return {r["key"]: r["value"] for r in self._conn.execute("SELECT key, value FROM meta")}

    # -- writing ----------------------------------------------------------------------------

    def set_meta(self, **values: str) -> None:
        """Record metadata (e.g. the last campaign's command line)."""
        with self._transaction() as cur:
            for k, v in values.items():
                cur.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (k, str(v)))

    def add(self, items: Sequence[tuple[str, str, str | None]]) -> int:
        """Add datasets as ``pending``; rows that exist are left as they are.

        Parameters
        ----------
        items : sequence of (input, root, trailer)
            Absolute input path, product root and trailer path.

        Returns
        -------
        int
            How many rows were new.
        """
        now = utcnow()
        with self._transaction() as cur:
            before = cur.execute("SELECT COUNT(*) FROM datasets").fetchone()[0]
            cur.executemany(
                "INSERT OR IGNORE INTO datasets(input, root, status, trailer, added_at, updated_at) "
                "VALUES (?, ?, 'pending', ?, ?, ?)",
                [(i, r, t, now, now) for i, r, t in items],
            )
            after = cur.execute("SELECT COUNT(*) FROM datasets").fetchone()[0]
        return after - before

    def recover_stale(self, adopt: Any = None) -> list[tuple[str, str]]:
        """Deal with ``running`` rows left by a campaign that died; call with the lock held.

        Parameters
        ----------
        adopt : callable, optional
            ``adopt(row) -> Outcome | None``: the outcome of the interrupted attempt if it can be
            proven from what that attempt left behind (its trailer's verdict), else None. An
            attempt that did finish before its campaign died is recorded as such and not run
            again; the others go back to ``pending``.

        Returns
        -------
        list of (input, new status)
        """
        changed = []
        for row in [r for r in self.rows() if r.status == RUNNING]:
            outcome = adopt(row) if adopt is not None else None
            if outcome is not None:
                self.finish(row.input, outcome, campaign=row.campaign)
                changed.append((row.input, outcome.status))
                logger.info(
                    "%s: left 'running' by an earlier campaign, but its trailer shows attempt %d ended %s; "
                    "recorded as %s, not run again", row.root, row.attempts, outcome.exit_name, outcome.status,
                )
                continue
            with self._transaction() as cur:
                cur.execute(
                    "UPDATE datasets SET status = 'pending', message = ?, updated_at = ? WHERE input = ? AND status = 'running'",
                    (f"attempt {row.attempts} was cut short (its campaign stopped); to be run again", utcnow(), row.input),
                )
                cur.execute(
                    "UPDATE attempts SET status = 'abandoned', ended_at = ? WHERE input = ? AND attempt = ? AND status = 'running'",
                    (utcnow(), row.input, row.attempts),
                )
            changed.append((row.input, PENDING))
            logger.info(
                "%s: left 'running' by an earlier campaign that stopped (attempt %d unfinished); treated as pending",
                row.root, row.attempts,
            )
        return changed

    def mark_running(
        self, input_key: str, *, campaign: str, trailer_offset: int | None, reason: str | None = None
    ) -> int:
        """Record that an attempt starts (submitted to the cluster), and why; return its number."""
        now = utcnow()
        with self._transaction() as cur:
            row = cur.execute("SELECT attempts FROM datasets WHERE input = ?", (input_key,)).fetchone()
            if row is None:
                raise LedgerError(f"{input_key} is not in the ledger")
            attempt = int(row[0]) + 1
            cur.execute(
                "UPDATE datasets SET status = 'running', attempts = ?, started_at = ?, ended_at = NULL, "
                "seconds = NULL, exit_code = NULL, exit_name = NULL, wcsname = NULL, message = NULL, "
                "report = NULL, worker = NULL, peak_rss_mb = NULL, trailer_offset = ?, campaign = ?, "
                "reason = ?, updated_at = ? WHERE input = ?",
                (attempt, now, trailer_offset, campaign, reason, now, input_key),
            )
            cur.execute(
                "INSERT OR REPLACE INTO attempts(input, attempt, campaign, started_at, status, reason) "
                "VALUES (?, ?, ?, ?, 'running', ?)",
                (input_key, attempt, campaign, now, reason),
            )
        return attempt

    def finish(self, input_key: str, outcome: Outcome, *, campaign: str | None = None) -> None:
        """Record how the latest attempt ended."""
        if outcome.status not in (DONE, FAILED, SKIPPED):
            raise ValueError(f"an attempt ends done, failed or skipped, not {outcome.status!r}")
        now = utcnow()
        with self._transaction() as cur:
            row = cur.execute("SELECT attempts FROM datasets WHERE input = ?", (input_key,)).fetchone()
            if row is None:
                raise LedgerError(f"{input_key} is not in the ledger")
            cur.execute(
                "UPDATE datasets SET status = ?, ended_at = ?, seconds = ?, exit_code = ?, exit_name = ?, "
                "wcsname = ?, message = ?, report = ?, worker = ?, peak_rss_mb = ?, "
                "provenance = COALESCE(?, provenance), updated_at = ? WHERE input = ?",
                (
                    outcome.status, now, outcome.seconds, outcome.exit_code, outcome.exit_name, outcome.wcsname,
                    outcome.message, outcome.report, outcome.worker, outcome.peak_rss_mb, outcome.provenance,
                    now, input_key,
                ),
            )
            cur.execute(
                "UPDATE attempts SET ended_at = ?, status = ?, exit_code = ?, message = ?, worker = ?, "
                "campaign = COALESCE(campaign, ?) WHERE input = ? AND attempt = ?",
                (now, outcome.status, outcome.exit_code, outcome.message, outcome.worker, campaign, input_key, row[0]),
            )

    def set_provenance(self, input_key: str, provenance: str) -> None:
        """Record a provenance without running (the baseline of a row from a schema-1 ledger)."""
        with self._transaction() as cur:
            cur.execute("UPDATE datasets SET provenance = ?, updated_at = ? WHERE input = ?",
                        (provenance, utcnow(), input_key))

    def requeue(self, input_key: str, reason: str) -> None:
        """Put a ``running`` row back to ``pending`` (the campaign was interrupted)."""
        now = utcnow()
        with self._transaction() as cur:
            row = cur.execute("SELECT attempts FROM datasets WHERE input = ?", (input_key,)).fetchone()
            cur.execute(
                "UPDATE datasets SET status = 'pending', message = ?, updated_at = ? WHERE input = ? AND status = 'running'",
                (reason, now, input_key),
            )
            if row is not None:
                cur.execute(
                    "UPDATE attempts SET status = 'interrupted', ended_at = ?, message = ? WHERE input = ? AND attempt = ?",
                    (now, reason, input_key, row[0]),
                )


def describe_owner() -> str:
    """``pid <n> on <host>``: who holds a lock, for the message a second campaign gets."""
    return f"pid {os.getpid()} on {os.uname().nodename}"
