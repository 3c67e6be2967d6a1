"""What the fork server of autodriz's child processes imports once (:mod:`autodriz.childproc`).

A fresh interpreter spends ~5 CPU-s importing drizzlepac (its ``__init__`` pulls in
runastrodriz, scikit-learn, scipy.signal …) before an AstroDrizzle run can start; every child
forked from a server that has imported it already starts at once. Imported in that server only,
never in the calling process.
"""

from __future__ import annotations

import gc
import os

# matplotlib (imported by drizzlepac) settles its backend when it is imported: headless, as the
# children of subprocess get it from their environment (autodriz.childproc.run_child).
os.environ.setdefault("MPLBACKEND", "Agg")

# Before the imports, so that whatever they allocate is already under the tuned allocator;
# the children forked from this server inherit it.
from autodriz.allocator import tune_process  # noqa: E402

tune_process()

import autodriz._child  # noqa: E402,F401
import drizzlepac.astrodrizzle  # noqa: E402,F401
import drizzlepac.updatehdr  # noqa: E402,F401
import stwcs.updatewcs  # noqa: E402,F401
from stwcs.wcsutil import headerlet  # noqa: E402,F401

# What the imports made lives as long as the server and its children: frozen, the collector's
# full passes in every child skip it. A child of a full-size run spent ~0.45 s in three such
# passes over these objects, and touching them copied their pages from the server's memory
# (~30,000 minor page faults more per child).
gc.freeze()
