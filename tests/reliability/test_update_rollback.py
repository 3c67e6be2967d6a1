"""The final update of the inputs is all or nothing, even when a rename fails midway.

``apply_candidate_wcs`` prepares every updated file under a temporary name, then renames them
over the originals one by one. A failure at the Nth rename must put back the N-1 originals
already replaced, leave no temporary or backup file, and end the run with exit 8
(``UPDATE_FAILED``) and one line naming the file. A run killed among the renames leaves backups
that the next run puts back before anything else; a run killed after every rename, while it
removes the backups, leaves a commit marker, and the next run removes the backups instead.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from autodriz.cli import main
from autodriz.errors import UpdateError
from autodriz.exitcodes import ExitCode
from autodriz import failpoints
from autodriz.products import (
    BACKUP_SUFFIX,
    COMMIT_SUFFIX,
    TMP_SUFFIX,
    _replace_all,
    backup_path,
    commit_marker_path,
    recover_interrupted_update,
)
from autodriz.simulate import EXACT_WORLD, SimulationConfig, simulate_visit

NAMES = ("jx1_flt.fits", "jx1_flc.fits", "jx2_flt.fits", "jx2_flc.fits")


def _sha(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _fail_on_nth_input_replace(monkeypatch: pytest.MonkeyPatch, n: int) -> list[str]:
    """Make the Nth rename of a temporary file over an input raise; return the renames seen.

    Only renames of ``*.autodriz-tmp`` onto ``*_flt.fits``/``*_flc.fits`` count, so the
    products, the report and the roll-back itself (backup → original) go through untouched.
    """
    real_replace = os.replace
    seen: list[str] = []

    def replace(src: os.PathLike | str, dst: os.PathLike | str, **kwargs: object) -> None:
        if str(src).endswith(TMP_SUFFIX) and re.search(r"_fl[tc]\.fits$", str(dst)):
            seen.append(Path(dst).name)
            if len(seen) == n:
                raise OSError(28, "No space left on device (simulated)", str(dst))
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return seen


def _killed_after_renames(temps: dict[Path, Path], renamed: int) -> list[Path]:
    """Leave what a kill -9 after ``renamed`` renames leaves: backups of all (hard links), the
    first ``renamed`` originals replaced, the other temporary files not yet renamed."""
    originals = list(temps)
    for original in originals:
        os.link(original, backup_path(original))
    for original in originals[:renamed]:
        os.replace(temps[original], original)
    return originals


@pytest.fixture
def prepared(tmp_path: Path) -> tuple[Path, dict[Path, Path]]:
    """Four originals and their prepared temporary files, as ``apply_candidate_wcs`` leaves them."""
    folder = tmp_path / "visit"
    folder.mkdir()
    temps = {}
    for name in NAMES:
        original = folder / name
        original.write_bytes(b"original " + name.encode() * 100)
        tmp = original.with_name(original.name + TMP_SUFFIX)
        tmp.write_bytes(b"updated " + name.encode() * 100)
        temps[original] = tmp
    return folder, temps


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_failed_nth_rename_restores_every_original(prepared, monkeypatch, n: int) -> None:
    folder, temps = prepared
    before = {o.name: hashlib.sha256(o.read_bytes()).hexdigest() for o in temps}
    seen = _fail_on_nth_input_replace(monkeypatch, n)
    with pytest.raises(UpdateError) as failure:
        _replace_all(temps)
    assert len(seen) == n
    message = str(failure.value)
    assert "\n" not in message and NAMES[n - 1] in message and f"{n - 1} already updated were restored" in message
    assert failure.value.exit_code == ExitCode.UPDATE_FAILED
    # Every original byte-identical, and nothing else left in the folder.
    assert _sha(folder) == before


def test_successful_renames_leave_no_backup(prepared) -> None:
    folder, temps = prepared
    _replace_all(temps)
    assert sorted(p.name for p in folder.iterdir()) == sorted(NAMES)
    assert all(o.read_bytes().startswith(b"updated ") for o in temps)


def test_backup_is_a_copy_where_hard_links_fail(prepared, monkeypatch) -> None:
    folder, temps = prepared
    before = {o.name: hashlib.sha256(o.read_bytes()).hexdigest() for o in temps}

    def no_links(src: object, dst: object) -> None:
        raise OSError(1, "Operation not permitted (simulated file system without hard links)")

    monkeypatch.setattr(os, "link", no_links)
    _fail_on_nth_input_replace(monkeypatch, 3)
    with pytest.raises(UpdateError):
        _replace_all(temps)
    assert _sha(folder) == before


def test_next_run_puts_back_an_update_killed_among_the_renames(prepared) -> None:
    folder, temps = prepared
    before = {o.name: hashlib.sha256(o.read_bytes()).hexdigest() for o in temps}
    originals = _killed_after_renames(temps, 2)
    restored = recover_interrupted_update(originals)
    assert restored == originals  # every backup is put back (the unreplaced ones are no-ops)
    assert _sha(folder) == before
    assert not list(folder.glob(f"*{BACKUP_SUFFIX}")) and not list(folder.glob(f"*{TMP_SUFFIX}"))
    # Nothing to do the next time.
    assert recover_interrupted_update(originals) == []


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_an_update_stopped_while_removing_backups_stays_updated(prepared, monkeypatch, tmp_path, caplog, n: int) -> None:
    """The stop-36 CI failure: a kill among the backup removals must not let the next run mix WCSs.

    Removing the ``n``-th backup fails (as a kill there would leave it): the update has committed,
    so the call returns, the originals are all updated, and the remaining backups are stale.
    """
    folder, temps = prepared
    updated = {o.name: hashlib.sha256(t.read_bytes()).hexdigest() for o, t in temps.items()}
    monkeypatch.setenv(failpoints.LOG_ENV, str(tmp_path / "failpoints.log"))
    monkeypatch.setenv(failpoints.ENV, f"update.discard-backup:{n}")
    _replace_all(temps)  # committed: no error for the caller, a warning for the user
    assert "the next run on this dataset removes" in caplog.text
    originals = list(temps)
    left = sorted(p.name for p in folder.glob(f"*{BACKUP_SUFFIX}"))
    assert left == sorted(backup_path(o).name for o in originals[n - 1:])
    assert commit_marker_path(originals[0]).is_file()
    monkeypatch.delenv(failpoints.ENV)
    assert recover_interrupted_update(originals) == []  # nothing put back: it would mix old and new
    assert _sha(folder) == updated
    assert "removed the backups left of" in caplog.text


def test_the_next_run_still_restores_without_a_commit_marker(prepared) -> None:
    """The same leftovers without the marker mean a kill among the renames: every backup goes back."""
    folder, temps = prepared
    before = {o.name: hashlib.sha256(o.read_bytes()).hexdigest() for o in temps}
    originals = _killed_after_renames(temps, len(temps))
    assert recover_interrupted_update(originals) == originals
    assert _sha(folder) == before
    assert not list(folder.glob(f"*{COMMIT_SUFFIX}"))


def test_cli_exit_8_when_the_third_of_four_renames_fails(tmp_path, monkeypatch, capsys) -> None:
    visit = simulate_visit(tmp_path / "visit", SimulationConfig(**EXACT_WORLD, chip_shape=(128, 256), n_stars=60, seed=7))
    before = _sha(visit.directory)
    seen = _fail_on_nth_input_replace(monkeypatch, 3)
    code = main([str(visit.asn_path), "--jref", str(visit.jref_dir), "--no-apriori", "--no-aposteriori",
                 "--no-verify", "--offline", "--num-cores", "1"])
    err = capsys.readouterr().err
    assert code == ExitCode.UPDATE_FAILED == 8, err
    assert len(seen) == 3
    # One line naming the file whose rename failed.
    lines = [ln for ln in err.splitlines() if seen[2] in ln]
    assert lines and "could not write the WCS into" in lines[0] and "Traceback" not in err
    # Inputs byte-identical; no backup, temporary file or product left; only the trailer added.
    after = _sha(visit.directory)
    assert {k: v for k, v in after.items() if k != "jsim01010.tra"} == before
    leftovers = [p.name for p in visit.directory.rglob("*") if p.name.endswith((BACKUP_SUFFIX, TMP_SUFFIX))]
    assert not leftovers
    assert not list(visit.directory.glob("*_dr?.fits"))
    assert "AUTODRIZ-VERDICT UPDATE_FAILED exit=8" in (visit.directory / "jsim01010.tra").read_text()
