"""Child processes: a failure says, in one line, what went wrong, on which file, and where the log is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from autodriz.childproc import ChildError, run_child


def test_failure_names_the_file_the_child_was_working_on(tmp_path: Path) -> None:
    (tmp_path / "a_flt.fits").write_bytes(b"not FITS at all")
    with pytest.raises(ChildError) as failure:
        run_child({"task": "updatewcs", "files": ["a_flt.fits", "b_flt.fits"]}, cwd=tmp_path, timeout=120)
    exc = failure.value
    assert exc.label == "updatewcs" and exc.log_path == tmp_path / "updatewcs.log"
    assert exc.log_path.is_file()
    # The first file broke it; the second was never reached.
    assert exc.current_file == "a_flt.fits"
    assert "\n" not in exc.error_line and exc.error_line in exc.log_path.read_text()
    # The full message keeps the tail of the log for the trailer.
    assert "last lines:" in str(exc)


def test_unknown_task_gives_its_exception_line(tmp_path: Path) -> None:
    with pytest.raises(ChildError) as failure:
        run_child({"task": "no_such_task"}, cwd=tmp_path, timeout=60)
    assert failure.value.error_line == "KeyError: 'no_such_task'"
    assert failure.value.current_file is None


@pytest.mark.parametrize("warm", [True, False])
def test_timeout_is_said_in_one_line(tmp_path: Path, warm: bool) -> None:
    # A child forked from the warm server can finish a trivial job within milliseconds: this
    # one hangs (opening a FIFO blocks until a writer comes) until the timeout kills it.
    import os

    os.mkfifo(tmp_path / "x_flt.fits")
    with pytest.raises(ChildError) as failure:
        run_child({"task": "updatewcs", "files": ["x_flt.fits"]}, cwd=tmp_path, timeout=2, warm=warm)
    assert failure.value.error_line == "timed out after 2 s"


def test_a_warm_child_gets_the_folder_and_environment_of_its_call(tmp_path: Path) -> None:
    # The server is started before the reference folder is known, as in a run: a child forked
    # from it must still find jref$ files (environment of the call) and its job's files by
    # their bare names (working directory of the call), and do what a fresh interpreter does.
    from astropy.io import fits

    from autodriz.childproc import reference_env, start_warm_server
    from autodriz.simulate import EXACT_WORLD, SimulationConfig, simulate_visit

    start_warm_server()
    visit = simulate_visit(tmp_path / "v", SimulationConfig(n_exposures=1, chip_shape=(64, 128), n_stars=10,
                                                            write_flc=False, seed=5, **EXACT_WORLD))
    headers = {}
    for warm in (True, False):
        folder = tmp_path / f"warm{warm}"
        folder.mkdir()
        copy = folder / visit.flt_paths[0].name
        copy.write_bytes(visit.flt_paths[0].read_bytes())
        result = run_child({"task": "updatewcs", "files": [copy.name]}, cwd=folder,
                           env=reference_env({"jref": visit.jref_dir}), timeout=300, warm=warm)
        assert result.log_path == folder / "updatewcs.log"
        # Its CPU, split between its work and the kernel's, for the trailer.
        assert re.search(r"resources after updatewcs: user [0-9.]+ s, system [0-9.]+ s, minor page faults \d+",
                         result.log_path.read_text())
        headers[warm] = fits.getheader(copy, ("SCI", 1))
    assert headers[True]["WCSNAME"] == headers[False]["WCSNAME"] != fits.getheader(visit.flt_paths[0], ("SCI", 1)).get("WCSNAME")
    for key in ("CRVAL1", "CRVAL2", "CD1_1", "CD2_2", "A_2_0", "B_0_2", "IDCSCALE"):
        assert headers[True][key] == headers[False][key], key


def test_a_daemonic_process_or_a_fork_of_the_server_owner_runs_fresh_children(tmp_path: Path) -> None:
    # A test harness runs the pipeline in a forked daemonic worker after other tests started the
    # server in the harness process: neither may fork from it (multiprocessing would refuse or
    # fail to reach it); both must still run the child, in a fresh interpreter.
    import multiprocessing

    from autodriz.childproc import start_warm_server, warm_server_usable

    start_warm_server()
    assert warm_server_usable()

    def job(folder: str, out: multiprocessing.queues.Queue) -> None:
        try:
            run_child({"task": "no_such_task"}, cwd=Path(folder), timeout=120)
        except ChildError as exc:
            out.put((warm_server_usable(), exc.error_line))

    for daemon in (True, False):
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        proc = ctx.Process(target=job, args=(str(tmp_path / str(daemon)), out), daemon=daemon)
        proc.start()
        usable, line = out.get(timeout=120)
        proc.join(60)
        assert (usable, line) == (False, "KeyError: 'no_such_task'")
        assert (tmp_path / str(daemon) / "no_such_task.log").is_file()


def test_an_interrupted_wait_kills_the_warm_child_and_stays_an_interrupt(tmp_path: Path, monkeypatch) -> None:
    # Ctrl-C while a run waits for its child: the pipeline must see the KeyboardInterrupt (exit
    # 130, "interrupted"), and the child must not go on writing into the candidate's folder.
    import os
    from multiprocessing.process import BaseProcess

    import psutil

    os.mkfifo(tmp_path / "x_flt.fits")  # opening it blocks: the child hangs until killed
    real_join = BaseProcess.join
    waited: list[int] = []

    def interrupted_join(self, timeout=None):
        if not waited:
            waited.append(self.pid)
            real_join(self, 5)  # the child is inside updatewcs by now
            raise KeyboardInterrupt
        return real_join(self, timeout)

    monkeypatch.setattr(BaseProcess, "join", interrupted_join)
    with pytest.raises(KeyboardInterrupt):
        run_child({"task": "updatewcs", "files": ["x_flt.fits"]}, cwd=tmp_path, timeout=300)
    assert waited and not psutil.pid_exists(waited[0])
    assert "AUTODRIZ-CHILD-FILE x_flt.fits" in (tmp_path / "updatewcs.log").read_text()
