"""Child processes: a failure says, in one line, what went wrong, on which file, and where the log is."""

from __future__ import annotations

import re
import sys
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


@pytest.mark.parametrize("how", ["warm", "fresh", "here"])
def test_timeout_is_said_in_one_line(tmp_path: Path, how: str) -> None:
    # A child forked from the warm server can finish a trivial job within milliseconds: this
    # one hangs (opening a FIFO blocks until a writer comes) until the timeout kills it.
    import os

    os.mkfifo(tmp_path / "x_flt.fits")
    with pytest.raises(ChildError) as failure:
        run_child({"task": "updatewcs", "files": ["x_flt.fits"]}, cwd=tmp_path, timeout=2, how=how)
    assert failure.value.error_line == "timed out after 2 s"


def _returning(out, target, *args) -> None:
    try:
        out.put((True, target(*args)))
    except BaseException:  # noqa: BLE001 - handed to the test process, which raises it
        import traceback

        out.put((False, traceback.format_exc()))


def _in_a_fresh_process(target, *args):
    """``target(*args)`` in a spawned interpreter: a single thread, as the command's own process
    has when it forks, whatever threads earlier tests left in this worker. Its return value;
    its exception's traceback as an AssertionError."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_returning, args=(out, target, *args), daemon=False)
    proc.start()
    try:
        ok, value = out.get(timeout=300)
    finally:
        proc.join(60)
    if not ok:
        raise AssertionError(value)
    return value


_CHECKED_KEYS = ("WCSNAME", "CRVAL1", "CRVAL2", "CD1_1", "CD2_2", "A_2_0", "B_0_2", "IDCSCALE")


def _updatewcs_child(folder: str, name: str, jref: str, how: str) -> tuple[str, dict]:
    from astropy.io import fits

    from autodriz.childproc import reference_env

    result = run_child({"task": "updatewcs", "files": [name]}, cwd=Path(folder),
                       env=reference_env({"jref": Path(jref)}), timeout=300, how=how)
    assert result.log_path == Path(folder) / "updatewcs.log"
    header = fits.getheader(Path(folder) / name, ("SCI", 1))
    return result.started_as, {k: header[k] for k in _CHECKED_KEYS}


def test_a_forked_child_gets_the_folder_and_environment_of_its_call(tmp_path: Path) -> None:
    # The server is started before the reference folder is known, as in a run: a child forked
    # from it must still find jref$ files (environment of the call) and its job's files by
    # their bare names (working directory of the call), and do what a fresh interpreter does.
    # So must a child forked from the calling process (in a process of its own, single-threaded).
    from astropy.io import fits

    from autodriz.childproc import start_warm_server
    from autodriz.simulate import EXACT_WORLD, SimulationConfig, simulate_visit

    start_warm_server()
    visit = simulate_visit(tmp_path / "v", SimulationConfig(n_exposures=1, chip_shape=(64, 128), n_stars=10,
                                                            write_flc=False, seed=5, **EXACT_WORLD))
    headers = {}
    for how in ("warm", "fresh", "here"):
        folder = tmp_path / how
        folder.mkdir()
        copy = folder / visit.flt_paths[0].name
        copy.write_bytes(visit.flt_paths[0].read_bytes())
        args = (str(folder), copy.name, str(visit.jref_dir), how)
        started_as, headers[how] = _in_a_fresh_process(_updatewcs_child, *args) if how == "here" else _updatewcs_child(*args)
        assert started_as == how
        # Its CPU, split between its work and the kernel's, for the trailer.
        assert re.search(r"resources after updatewcs: user [0-9.]+ s, system [0-9.]+ s, minor page faults \d+",
                         (folder / "updatewcs.log").read_text())
    assert headers["warm"]["WCSNAME"] != fits.getheader(visit.flt_paths[0], ("SCI", 1)).get("WCSNAME")
    assert headers["warm"] == headers["fresh"] == headers["here"]


def _forked_child_beside_run_logging(folder: str) -> dict:
    import io
    import logging

    from autodriz.logs import run_logging

    trailer = Path(folder) / "run.tra"
    console = io.StringIO()
    sys.stdout = io.StringIO()
    with run_logging(trailer, console_level=logging.INFO, stream=console):
        logging.getLogger("autodriz.test").info("before the child")
        result = run_child({"task": "updatewcs", "files": []}, cwd=Path(folder), timeout=120, how="here")
        logging.getLogger("autodriz.test").info("after the child")
    return {"started_as": result.started_as, "log": result.log_path.read_text(), "trailer": trailer.read_text(),
            "console": console.getvalue(), "stdout": sys.stdout.getvalue()}


def test_a_child_forked_from_here_writes_its_own_log_not_the_callers(tmp_path: Path) -> None:
    # The calling process has its console and trailer handlers on autodriz's and stwcs's
    # loggers, and a test harness (or a caller) may have replaced sys.stdout: a fork of it must
    # write into its own log only, as a fresh interpreter does.
    seen = _in_a_fresh_process(_forked_child_beside_run_logging, str(tmp_path))
    assert seen["started_as"] == "here"
    assert seen["log"].splitlines()[0].startswith("allocator: ") and "AUTODRIZ-CHILD-RESULT" in seen["log"]
    text = seen["trailer"]
    # The trailer has the caller's records once each and the child's log lines as the caller
    # copied them (DEBUG, prefixed with the child's label), nothing written by the child itself.
    assert text.count("before the child") == 1 and text.count("after the child") == 1
    assert "[updatewcs] allocator: " in text
    assert all("[updatewcs]" in line for line in text.splitlines() if "allocator: " in line)
    assert "allocator" not in seen["console"] and seen["stdout"] == ""


def test_here_runs_a_fresh_interpreter_while_another_thread_runs(tmp_path: Path) -> None:
    # A fork would copy the other thread's locks as they are, held or not.
    import threading

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        with pytest.raises(ChildError) as failure:
            run_child({"task": "no_such_task"}, cwd=tmp_path, timeout=120, how="here")
    finally:
        stop.set()
        thread.join()
    # A fresh interpreter's first line: nothing frozen (the warm server's children say more).
    assert re.search(r"; 0 objects frozen$", failure.value.log_path.read_text().splitlines()[0])


@pytest.mark.parametrize("how", ["warm", "fresh", "here"])
def test_started_is_called_once_the_child_exists_and_a_failure_there_kills_it(tmp_path: Path, how: str) -> None:
    import os

    import psutil

    os.mkfifo(tmp_path / "x_flt.fits")  # opening it blocks: the child hangs until killed
    seen: list[list[int]] = []

    def started() -> None:
        seen.append([p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE])
        raise RuntimeError("the work beside the child failed")

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(RuntimeError, match="the work beside the child failed"):
        run_child({"task": "updatewcs", "files": ["x_flt.fits"]}, cwd=tmp_path, timeout=60, how=how, started=started)
    assert len(seen) == 1 and set(seen[0]) - before, "no child existed when started() ran"
    # Killed, not left hanging on the FIFO.
    alive = [p for p in psutil.Process().children(recursive=True)
             if p.pid in set(seen[0]) - before and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == []


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
