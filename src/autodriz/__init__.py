"""autodriz: drizzled HST images with astrometry that has been checked against the truth."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("autodriz")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
