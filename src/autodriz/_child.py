"""Entry point of the child processes that run stwcs/drizzlepac: ``python -m autodriz._child JOB``.

AstroDrizzle writes into its working directory and reads reference files through environment
variables (``jref``, ``iref``), and stwcs/drizzlepac configure logging globally. Running them in a
child whose working directory is the candidate's folder keeps the calling process free of all
that: no ``chdir``, no environment changes, no foreign log handlers.

The job is a JSON file: ``{"task": "updatewcs" | "astrodrizzle", ...}``. The child prints
``AUTODRIZ-CHILD-RESULT <json>`` as its last line on success.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import MappingProxyType


def _updatewcs(job: dict) -> dict:
    from stwcs import updatewcs

    files = [str(f) for f in job["files"]]
    updatewcs.updatewcs(files, use_db=False, checkfiles=False)
    from astropy.io import fits

    names = {}
    for f in files:
        with fits.open(f) as hdul:
            names[f] = [h.header.get("WCSNAME", "") for h in hdul if h.name == "SCI"]
    return {"wcsnames": names}


def _astrodrizzle(job: dict) -> dict:
    from drizzlepac import astrodrizzle

    params = dict(job.get("params", {}))
    astrodrizzle.AstroDrizzle(
        input=[str(f) for f in job["input"]],
        output=job["output"],
        runfile=job.get("runfile", "astrodrizzle.log"),
        **params,
    )
    made = sorted(str(p) for p in Path.cwd().glob(f"{job['output']}_dr?.fits"))
    return {"products": made}


TASKS = MappingProxyType({"updatewcs": _updatewcs, "astrodrizzle": _astrodrizzle})


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[1]).read_text())
    result = TASKS[job["task"]](job)
    sys.stdout.flush()
    print("AUTODRIZ-CHILD-RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
