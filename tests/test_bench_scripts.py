"""Smoke tests of the benchmark scripts: each runs on its smallest size and prints its figures.

They measure nothing (tiny data on a shared machine); they exist so that a change to the
pipeline's interfaces that breaks a script fails CI instead of the next benchmark session.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _run(args: list[str], cwd: Path, shared_data: Path, timeout: float = 1800) -> str:
    # The timeout is for a hung script: on a loaded machine a smoke run takes minutes.
    env = {**os.environ, "AUTODRIZ_SHARED_DATA": str(shared_data)}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args[0]} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_bench_vs_runastrodriz_smoke(tmp_path, shared_data):
    out = _run([str(SCRIPTS / "bench_vs_runastrodriz.py"), "--dataset", "sim", "--smoke", "--skip-runastrodriz",
                "--num-cores", "2", "--workdir", str(tmp_path / "w"), "--json", str(tmp_path / "b.json"),
                "--repeat", "2"],
               tmp_path, shared_data)
    assert "autodriz: ok in" in out, out
    # The per-stage profile, from the trailer: every stage of a full run, then the rest.
    profile = re.findall(r"^\s+(\S+)\s+([0-9.]+) s\s+[0-9.]+ %", out, flags=re.M)
    assert [name for name, _ in profile] == [
        "resolve", "default", "apriori", "aposteriori", "select", "drizzle", "update-inputs", "products", "(outside)",
    ], out
    # The yardstick (final drizzles alone, same parallelism) and the accuracy column are printed.
    assert re.search(r"vs its final AstroDrizzle runs alone with the same parallelism \(num_cores=2\) [0-9.]+ s = [0-9.]+×", out)
    # … drizzling the files autodriz drizzled (its updated inputs put back as they were drizzled),
    # onto the same output frames, while autodriz removed its work folders itself, as for a user.
    assert "another output frame" not in out, out
    from astropy.io import fits

    for name in ("jsim01010_drz.fits", "jsim01010_drc.fits"):
        made = [tmp_path / "w" / "sim" / "autodriz" / name, *(tmp_path / "w" / "sim" / "alone-same_parallelism").rglob(name)]
        assert len(made) == 2, made
        frames = [fits.getheader(p, 1) for p in made]
        keys = ("NAXIS1", "NAXIS2", "ORIENTAT", "CRVAL1", "CRVAL2")
        assert [frames[0][k] for k in keys] == pytest.approx([frames[1][k] for k in keys], rel=1e-9), name
    assert not [p for p in (tmp_path / "w" / "sim" / "autodriz").iterdir() if p.is_dir() and p.name.startswith("jsim01010_")]
    header = next(line for line in out.splitlines() if line.startswith("| dataset | tool |")).split("|")
    row = next(line for line in out.splitlines() if line.startswith("| sim ACS/WFC 2×256×512 | autodriz | ok |"))
    column = next(i for i, h in enumerate(header) if h.strip().startswith("FLT err rms mas"))
    err_flt = float(row.split("|")[column])
    assert 0.0 < err_flt < 10.0, row  # realistic simulation: a non-zero error, small after alignment
    assert (tmp_path / "b.json").is_file()
    # Two repetitions, each autodriz then its yardstick, and the median of their ratios.
    assert len(re.findall(r"repetition [12]/2: autodriz ok in [0-9.]+ s, final drizzles alone [0-9.]+ s = [0-9.]+×", out)) == 2, out
    assert re.search(r"2 repetitions .*: ratios [0-9.]+×, [0-9.]+×; median [0-9.]+× \(min [0-9.]+×, max [0-9.]+×\)", out), out
    # CPU seconds by role, for autodriz's process tree and for its yardstick's: the run's main
    # process, its detection workers and its forked drizzle children are each seen.
    mine = re.search(r"CPU \(user \+ system, sampled every 0.25 s\): autodriz ([0-9.]+) CPU-s = (.*)", out)
    assert mine, out
    roles = {name: float(sec) for name, sec in (part.rsplit(" ", 1) for part in mine.group(2).strip().split(", "))}
    assert {"main", "detection workers", "forked children"} <= set(roles), mine.group(0)
    assert abs(sum(roles.values()) - float(mine.group(1))) < 0.3, mine.group(0)
    alone = re.search(r"CPU of its final drizzles alone \(same parallelism\): ([0-9.]+) CPU-s = .*forked children ([0-9.]+).*; "
                      r"ratio ([0-9.]+)×", out)
    assert alone and float(alone.group(2)) > 0, out
    # The yardstick forks from a server that has imported already: its own import is not counted.
    assert "warm server" not in alone.group(0), alone.group(0)
    assert float(alone.group(1)) < float(mine.group(1)), out
    assert re.search(r"CPU seconds vs its final drizzles alone, by repetition: [0-9.]+×, [0-9.]+×; median [0-9.]+×", out), out
    # The kernel's share of both, by role: never more than the whole.
    system = re.search(r"of which system \(kernel\) time: autodriz ([0-9.]+) CPU-s = .*; its final drizzles alone "
                       r"([0-9.]+) CPU-s = ", out)
    assert system, out
    assert 0.0 < float(system.group(1)) <= float(mine.group(1)), system.group(0)
    # (The yardstick's may round to 0.0 on the smallest visit: the sampler's own kernel time is
    # taken off it.)
    assert 0.0 <= float(system.group(2)) <= float(alone.group(1)), system.group(0)
    assert re.search(r"repetition 1/2: .*; CPU [0-9.]+× \(system [0-9.]+ vs [0-9.]+ CPU-s\)", out), out
    # The sampling thread's own CPU is said, and kept out of the yardstick's main process.
    assert re.search(r"the sampler's own CPU \(not counted in either\): [0-9.]+ CPU-s beside autodriz, [0-9.]+ CPU-s "
                     r"beside its final drizzles alone", out), out


def test_bench_verification_smallest(tmp_path, shared_data):
    out = _run([str(SCRIPTS / "bench_verification.py"), "--skip-full", "--workdir", str(tmp_path / "w")],
               tmp_path, shared_data)
    line = next(x for x in out.splitlines() if x.startswith("ACS/WFC sim 4 x (2 x 256x512)"))
    assert re.search(r"[0-9.]+s\s+[0-9.]+s/\s*[0-9.]+s\s+[0-9.]+%", line), line
    assert "[pass]" in line, line


def test_bench_batch_smallest(tmp_path, shared_data):
    out = _run([str(SCRIPTS / "bench_batch.py"), "-n", "1", "--chip-shape", "128", "256", "--repetitions", "1",
                "--keep", str(tmp_path / "w"), "--json", str(tmp_path / "b.json")], tmp_path, shared_data)
    assert re.search(r"1 worker:\s+median\s+[0-9.]+ s", out), out
    assert re.search(r"2 workers:\s+median\s+[0-9.]+ s", out), out
    assert "throughput ratio 2w/1w:" in out
    assert (tmp_path / "b.json").is_file()


def _load_script(name: str, monkeypatch: pytest.MonkeyPatch):
    """Import ``scripts/<name>.py`` in this process as module ``name`` (registered in
    ``sys.modules`` for the test only: a script's dataclasses look their module up there)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def test_bench_vs_runastrodriz_stops_before_a_run_the_disk_cannot_hold(tmp_path, monkeypatch, capsys):
    """A full disk used to fail a run midway (stop 35); the script now says so before it starts."""
    import shutil
    from collections import namedtuple

    bench = _load_script("bench_vs_runastrodriz", monkeypatch)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(100e9, 95e9, 5e9))
    assert bench.disk_problem(tmp_path, "smoke", True) is None
    assert "needs ~18 GB" in bench.disk_problem(tmp_path, "full", True)
    code = bench.main(["--dataset", "sim", "--full", "--skip-runastrodriz", "--workdir", str(tmp_path / "w")])
    assert code == 2
    err = capsys.readouterr().err
    assert "only 5.0 GB free" in err and "a full run needs ~12 GB" in err
    assert not (tmp_path / "w" / "sim").exists()  # nothing simulated


def test_bench_batch_reads_the_load_before_its_own_simulation(tmp_path, monkeypatch):
    """Read after simulating six full-size visits, the load average was the script's own and its
    "machine was busy" warning fired on every full run (stop 44)."""
    bench = _load_script("bench_batch", monkeypatch)
    order = []

    class Stop(Exception):
        pass

    def simulate(*args, **kwargs):
        order.append("simulate")
        raise Stop

    monkeypatch.setattr(bench.os, "getloadavg", lambda: order.append("load") or (0.0, 0.0, 0.0))
    monkeypatch.setattr(bench, "make_visits", simulate)
    with pytest.raises(Stop):
        bench.main(["-n", "1", "--keep", str(tmp_path / "w")])
    assert order == ["load", "simulate"]


def test_bench_vs_runastrodriz_flushes_its_copies_before_each_timed_run(tmp_path, monkeypatch):
    """The fresh copies of a run's inputs were written back by the kernel during the run that
    followed, slowing the tool that wrote first (seventeenth round): every timed run now starts
    after a sync, then the settling wait."""
    import subprocess

    bench = _load_script("bench_vs_runastrodriz", monkeypatch)
    order = []
    monkeypatch.setattr(bench.os, "sync", lambda: order.append("sync"))
    monkeypatch.setattr(bench.time, "sleep", lambda s: order.append(f"sleep {s:g}"))

    class Started(Exception):
        pass

    def popen(*args, **kwargs):
        order.append("run")
        raise Started

    monkeypatch.setattr(subprocess, "Popen", popen)
    with pytest.raises(Started):
        bench.run_measured(["true"], cwd=tmp_path, env={}, log=tmp_path / "log", timeout=10, pause=15)
    assert order == ["sync", "sleep 15", "run"]


def test_stage_cpu_splits_the_machine_time_at_the_trailer_stage_lines(monkeypatch):
    m = _load_script("stage_cpu", monkeypatch)
    # 2 cores at 100 ticks/s: ticks spread evenly over each sample interval.
    samples = [m.Sample(0.0, 0, 0), m.Sample(1.0, 0, 200), m.Sample(2.0, 200, 200), m.Sample(3.0, 300, 300)]
    marks = m.stage_marks(
        "2026-12-06 03:00:00,000 INFO    autodriz.pipeline: AUTODRIZ-STAGE start default\n"
        "2026-12-06 03:00:01,000 INFO    autodriz.pipeline: AUTODRIZ-STAGE end default ok 1.0s\n"
        "2026-12-06 03:00:01,500 INFO    autodriz: AUTODRIZ-VERDICT OK exit=0\n"
    )
    t0 = marks[0][0]
    assert [label for _, label in marks] == ["start default", "end default", "verdict"]
    assert marks[1][0] - t0 == pytest.approx(1.0) and marks[2][0] - t0 == pytest.approx(1.5)
    samples = [m.Sample(s.t + t0 - 0.5, s.idle, s.busy) for s in samples]  # the command started 0.5 s earlier
    rows = m.split(samples, marks, ticks=100)
    assert [r[0] for r in rows] == ["exec → start default", "default", "end default → verdict", "verdict → exit"]
    assert [r[1] for r in rows] == pytest.approx([0.5, 1.0, 0.5, 1.0])
    # idle, busy core-s: the first second all busy, the second all idle, the third half and half.
    assert [(r[2], r[3]) for r in rows] == [pytest.approx(v) for v in [(0, 1), (1, 1), (1, 0), (1, 1)]]


def test_stage_cpu_runs_a_command_and_prints_its_stages(tmp_path):
    work = (
        "import time, logging\n"
        "logging.basicConfig(filename='run.tra', format='%(asctime)s %(levelname)-7s %(name)s: %(message)s', level=logging.INFO)\n"
        "log = logging.getLogger('autodriz.pipeline')\n"
        "log.info('AUTODRIZ-STAGE start busy'); t = time.time()\n"
        "while time.time() - t < 0.3: pass\n"
        "log.info('AUTODRIZ-STAGE end busy ok 0.3s'); log.info('AUTODRIZ-STAGE start wait'); time.sleep(0.3)\n"
        "log.info('AUTODRIZ-STAGE end wait ok 0.3s')\n"
    )
    proc = subprocess.run([sys.executable, str(SCRIPTS / "stage_cpu.py"), "--trailer", "run.tra", "--cwd", str(tmp_path),
                           "--", sys.executable, "-c", work], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: [float(v) for v in line.split()[-3:]] for line in proc.stdout.splitlines()
            if line.strip().split()[:1] in (["busy"], ["wait"])}
    assert set(rows) == {"busy", "wait"}, proc.stdout
    assert 0.25 < rows["busy"][0] < 3 and 0.25 < rows["wait"][0] < 3, proc.stdout
    assert "whole run" in proc.stdout and "command exit 0" in proc.stdout


def test_bench_ab_runs_both_versions_in_alternating_pairs(tmp_path):
    from autodriz.simulate import EXACT_WORLD, SimulationConfig, simulate_visit

    visit = simulate_visit(tmp_path / "v", SimulationConfig(**EXACT_WORLD, n_exposures=1, chip_shape=(64, 128),
                                                            n_stars=10, seed=3))
    src = Path(__file__).resolve().parents[1] / "src"
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_ab.py"), "--a", str(src), "--b", str(src), "--dataset", str(visit.directory),
         "--pairs", "2", "--settle", "0", "--workdir", str(tmp_path / "w"), "--",
         visit.asn_path.name, "--jref", "jref", "--no-apriori", "--no-aposteriori", "--no-verify", "--offline",
         "--num-cores", "1"],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    order = re.findall(r"^pair (\d)/2 ([AB]): total [0-9.]+ s", proc.stdout, flags=re.M)
    assert order == [("1", "A"), ("1", "B"), ("2", "B"), ("2", "A")], proc.stdout
    # Per stage, from each run's trailer: the medians and every pair's difference.
    rows = {line.split()[0] for line in proc.stdout.splitlines() if re.match(r"^\s+\S+\s+[0-9.]+\s+[0-9.]+\s+[+-]", line)}
    assert {"total", "default", "drizzle", "products"} <= rows, proc.stdout
    assert not (tmp_path / "w" / "run").exists()  # the last copy is removed


def test_bench_ab_reads_stage_times_from_a_trailer(monkeypatch):
    module = _load_script("bench_ab", monkeypatch)
    text = ("2026-12-06 03:00:00,000 INFO    autodriz.pipeline: AUTODRIZ-STAGE start default\n"
            "2026-12-06 03:00:04,000 INFO    autodriz.pipeline: AUTODRIZ-STAGE end default ok 4.0s\n"
            "2026-12-06 03:00:05,000 INFO    autodriz.pipeline: AUTODRIZ-STAGE end products failed 1.6s\n")
    assert module.stage_seconds(text) == {"default": 4.0, "products": 1.6}
    # … as autodriz.logs.stage writes them, a failed stage included (one parser beside the writer).
    import io
    import logging

    from autodriz.logs import stage

    stream = io.StringIO()
    logger = logging.getLogger("autodriz.test_bench_ab")
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        with stage(logger, "default"):
            pass
        with pytest.raises(RuntimeError), stage(logger, "products"):
            raise RuntimeError("boom")
    finally:
        logger.removeHandler(handler)
    assert set(module.stage_seconds(stream.getvalue())) == {"default", "products"}, stream.getvalue()
