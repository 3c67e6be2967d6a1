"""Disk full while a product is written: a file-size limit (RLIMIT_FSIZE) on the whole run.

Python ignores SIGXFSZ, so a write beyond the limit fails with EFBIG (as ENOSPC would on a full
disk) in whichever process writes: here AstroDrizzle's child, the first to write a file larger
than the exposures. The run must end deliberately (exit 7, one line naming the exposures),
inputs byte-identical, no file under a final product name and no temporary file left.
"""

from __future__ import annotations

import hashlib
import resource
import subprocess
import sys
from pathlib import Path

from autodriz.exitcodes import ExitCode
from autodriz.simulate import EXACT_WORLD, SimulationConfig, simulate_visit

LIMIT_BYTES = 3 * 1024 * 1024  # > each exposure (~0.7 MB) and its copies, < the DRZ (~7 MB)


def _sha(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*_fl?.fits"))}


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, LIMIT_BYTES))


def test_disk_full_while_drizzling_is_exit_7_with_inputs_untouched(tmp_path):
    visit = simulate_visit(tmp_path / "visit", SimulationConfig(**EXACT_WORLD, chip_shape=(128, 256), write_flc=False, n_stars=60))
    assert max(p.stat().st_size for p in visit.flt_paths) < LIMIT_BYTES
    before = _sha(visit.directory)
    done = subprocess.run(
        [sys.executable, "-m", "autodriz", str(visit.asn_path), "--jref", str(visit.jref_dir),
         "--no-aposteriori", "--no-apriori", "--no-verify", "--offline"],
        capture_output=True, text=True, timeout=600, preexec_fn=_limit_file_size, check=False,
    )
    assert done.returncode == ExitCode.DRIZZLE_FAILED, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("autodriz: DRIZZLE_FAILED")]
    assert len(lines) == 1 and "jsim01a1q_flt.fits" in lines[0], done.stderr
    assert "OSError" in lines[0] and "written" in lines[0]  # the short write, not another failure
    assert "Traceback" not in done.stderr
    assert _sha(visit.directory) == before
    assert not list(visit.directory.glob("*_dr?.fits"))
    assert not list(visit.directory.glob("*.autodriz-*"))
    assert not (visit.directory / "jsim01010_default").exists()
