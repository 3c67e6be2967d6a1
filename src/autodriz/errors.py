"""Exceptions that end a run, each carrying the exit code it maps to."""

from __future__ import annotations

from pathlib import Path

from autodriz.exitcodes import ExitCode


class AutodrizError(Exception):
    """Base class: an expected failure with a clear message and a named exit code.

    Parameters
    ----------
    message : str
        One line: what failed, on which file(s), and why.
    child_log : Path, optional
        Log of the child process that failed; the run says where to find it (the file, if its
        folder is kept, else the copy in the trailer).
    """

    exit_code: ExitCode = ExitCode.INTERNAL_ERROR

    def __init__(self, message: str = "", *, child_log: Path | None = None) -> None:
        super().__init__(message)
        self.child_log = child_log


class ConfigError(AutodrizError):
    """A setting (file, environment variable or flag) has a value we cannot accept."""

    exit_code = ExitCode.USAGE


class InputError(AutodrizError):
    """The input dataset cannot be resolved into calibrated exposures."""

    exit_code = ExitCode.INPUT_ERROR


class WFPC2UnsupportedError(InputError):
    """The input is WFPC2 data, which autodriz refuses rather than half-supports."""

    exit_code = ExitCode.WFPC2_UNSUPPORTED


class ReferenceFileError(AutodrizError):
    """A distortion reference file the headers name is not available."""

    exit_code = ExitCode.REFERENCE_FILES_MISSING


class WCSStageError(AutodrizError):
    """A WCS stage failed and left no usable WCS."""

    exit_code = ExitCode.WCS_FAILED


class DrizzleError(AutodrizError):
    """AstroDrizzle failed or produced no output."""

    exit_code = ExitCode.DRIZZLE_FAILED


class UpdateError(AutodrizError):
    """The chosen WCS could not be written back to the input exposures."""

    exit_code = ExitCode.UPDATE_FAILED
