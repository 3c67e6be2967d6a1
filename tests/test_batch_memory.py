"""Memory-aware scheduling: datasets carry their memory estimate as a Dask ``MEMORY`` resource.

The campaign test starts a real ``dask scheduler`` and one ``dask worker --nthreads 2
--resources MEMORY=1000`` on loopback, and submits two "large" simulated datasets and a small one:
the worker has threads for two at once, but memory for only one large one (700 MB) — and for a
small one (300 MB) beside it. The memory model
itself is tested on header figures (a full-frame dataset is not needed to test arithmetic).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from autodriz.batch import BatchExit, Entry, estimate_memory_mb, input_megapixels, memory_model_mb
from autodriz.batch import driver as batch_driver
from autodriz.cli import main
from autodriz.ledger import DONE, Ledger
from autodriz.simulate import EXACT_WORLD, SimulationConfig, simulate_visit

SMALL = {**EXACT_WORLD, "chip_shape": (128, 256), "write_flc": False, "n_stars": 50}
OFFLINE = ["--offline", "--no-apriori", "--no-aposteriori"]


def test_memory_model_matches_the_operational_figures_and_prefers_a_measured_peak(tmp_path):
    acs_wfc = 8 * 2 * 2048 * 4096 / 1e6  # 4 exposures, FLT + FLC, two 2048 x 4096 chips each
    wfc3_ir = 4 * 1014 * 1014 / 1e6
    assert 2800 < memory_model_mb(acs_wfc) < 3300
    assert 380 < memory_model_mb(wfc3_ir) < 480
    visit = simulate_visit(tmp_path / "v", SimulationConfig(asn_id="JMM000010", seed=3, **SMALL))
    entry = Entry(visit.asn_path, "jmm000010", visit.directory / "jmm000010.tra")
    n_chips = 2 * len(visit.flt_paths)
    assert input_megapixels(entry) == pytest.approx(n_chips * 128 * 256 / 1e6)
    need, how = estimate_memory_mb(entry)
    assert need == pytest.approx(memory_model_mb(n_chips * 128 * 256 / 1e6)) and how.startswith("model")

    class Row:
        peak_rss_mb = 400.0

    need, how = estimate_memory_mb(entry, Row())  # type: ignore[arg-type]
    assert need == 500.0 and "measured" in how


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _interval(trailer: Path) -> tuple[float, float]:
    """Wall-clock start and end of the (one) run in a trailer."""
    stamps = {}
    for line in trailer.read_text().splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*AUTODRIZ-(START|VERDICT) ", line)
        if m:
            stamps[m[2]] = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return stamps["START"], stamps["VERDICT"]


def test_two_large_datasets_never_share_a_worker_whose_memory_fits_one(tmp_path, monkeypatch):
    dask = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")
    assert dask, "the dask command line (distributed) is not installed"
    visits = [simulate_visit(tmp_path / "data" / f"v{i}", SimulationConfig(asn_id=f"JMR{i:03d}010", seed=21 + i, **SMALL))
              for i in range(3)]
    large = {str(v.asn_path) for v in visits[:2]}
    # The estimate is the driver's (tested above); here two datasets are declared large.
    monkeypatch.setattr(batch_driver, "estimate_memory_mb",
                        lambda entry, row=None: (700.0 if str(entry.input) in large else 300.0, "test"))
    manifest = tmp_path / "campaign.txt"
    manifest.write_text("\n".join(str(v.asn_path) for v in visits) + "\n")
    scheduler_file = tmp_path / "scheduler.json"
    scheduler = _start([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0",
                        "--scheduler-file", str(scheduler_file)], tmp_path / "scheduler.log")
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and scheduler.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert scheduler_file.exists(), (tmp_path / "scheduler.log").read_text()
        import json

        address = json.loads(scheduler_file.read_text())["address"]
        worker = _start([dask, "worker", address, "--nthreads", "2", "--nworkers", "1", "--host", "127.0.0.1",
                         "--dashboard-address", "127.0.0.1:0", "--resources", "MEMORY=1000"], tmp_path / "worker.log")
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)

        code = main(["batch", str(manifest), "--jref", str(visits[0].jref_dir), "--scheduler", address, *OFFLINE,
                     "--progress", "off"])
        assert code == BatchExit.OK
    finally:
        for proc in (worker, scheduler):
            if proc is not None:
                _stop(proc)
    with Ledger(tmp_path / "campaign.ledger.sqlite", readonly=True) as ledger:
        assert [r.status for r in ledger.rows()] == [DONE] * 3
    spans = {str(v.asn_path): _interval(v.directory / f"{v.asn_path.name[:9]}.tra") for v in visits}
    (a0, a1), (b0, b1) = (spans[k] for k in sorted(large))
    assert a1 <= b0 or b1 <= a0, f"the two large datasets ran at once: {spans}"
    # … while the worker did run two datasets at once (a small one beside another), as memory allowed.
    overlaps = [(x, y) for x in spans for y in spans if x < y and spans[x][0] < spans[y][1] and spans[y][0] < spans[x][1]]
    assert overlaps and all(not ({x, y} <= large) for x, y in overlaps), spans
