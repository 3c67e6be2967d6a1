"""Where a run's cores were busy and where they were idle, stage by stage.

Runs one command (an ``autodriz`` run, typically on a benchmark's kept work folder), samples the
machine's ``/proc/stat`` every ``--interval`` seconds while it runs, and splits the samples at the
``AUTODRIZ-STAGE`` lines of the trailer the run writes (their timestamps). Prints, per stage and
for the gaps between stages, its wall time and the core-seconds the machine spent idle
(idle + iowait) and busy. A stage with idle core-seconds is one that leaves a core waiting; a
stage with none can only get faster by doing less. The machine's, not the process tree's:
run it on an otherwise quiet machine.

Example::

    python scripts/stage_cpu.py --trailer jsim01010.tra -- \\
        autodriz jsim01010_asn.fits --jref jref --catalog jsim01010_refcat.ecsv --offline --num-cores 2

The input files are flushed to disk (``os.sync``) before the run starts, as the benchmarks do.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

STAGE_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*AUTODRIZ-STAGE (start|end) (\S+)")
VERDICT_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*AUTODRIZ-VERDICT")


@dataclass(frozen=True)
class Sample:
    """One reading of ``/proc/stat``'s first line: wall time and cumulative jiffies."""

    t: float
    idle: int
    busy: int


def read_stat() -> tuple[int, int]:
    """(idle + iowait, everything else) jiffies summed over all cores since boot."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice: guests are in user already.
    idle = fields[3] + fields[4]
    busy = sum(fields[:8]) - idle
    return idle, busy


def sample_until(done: threading.Event, interval: float, out: list[Sample]) -> None:
    """Append a :class:`Sample` every ``interval`` seconds until ``done`` is set (and once more)."""
    while True:
        idle, busy = read_stat()
        out.append(Sample(time.time(), idle, busy))
        if done.wait(interval):
            idle, busy = read_stat()
            out.append(Sample(time.time(), idle, busy))
            return


def stage_marks(trailer_text: str) -> list[tuple[float, str]]:
    """(epoch seconds, label) of every stage boundary and the verdict, in the trailer's order.

    Labels are ``start <stage>``, ``end <stage>`` and ``verdict``. The trailer's timestamps are
    local time with milliseconds (``logging``'s default format).
    """
    marks = []
    for line in trailer_text.splitlines():
        m = STAGE_LINE.match(line)
        if m:
            marks.append((_epoch(m.group(1)), f"{m.group(2)} {m.group(3)}"))
            continue
        m = VERDICT_LINE.match(line)
        if m:
            marks.append((_epoch(m.group(1)), "verdict"))
    return marks


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def split(samples: list[Sample], marks: list[tuple[float, str]], ticks: float) -> list[tuple[str, float, float, float]]:
    """(label, wall s, idle core-s, busy core-s) for each interval between consecutive marks.

    The first interval starts at the first sample (the command's start) and the last ends at the
    last sample (its exit). Jiffies between two samples are spread evenly over their interval.
    """
    bounds = [(samples[0].t, "exec"), *marks, (samples[-1].t, "exit")]
    rows = []
    for (t0, a), (t1, b) in zip(bounds, bounds[1:]):
        idle, busy = _integrate(samples, t0, t1)
        label = a.replace("start ", "") if (a.startswith("start ") and b == a.replace("start", "end", 1)) else f"{a} → {b}"
        rows.append((label, t1 - t0, idle / ticks, busy / ticks))
    return rows


def _integrate(samples: list[Sample], t0: float, t1: float) -> tuple[float, float]:
    idle = busy = 0.0
    for s0, s1 in zip(samples, samples[1:]):
        lo, hi = max(t0, s0.t), min(t1, s1.t)
        if hi <= lo or s1.t <= s0.t:
            continue
        share = (hi - lo) / (s1.t - s0.t)
        idle += share * (s1.idle - s0.idle)
        busy += share * (s1.busy - s0.busy)
    return idle, busy


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--trailer", type=Path, required=True, help="the trailer the command writes (read after it ends)")
    p.add_argument("--interval", type=float, default=0.1, help="seconds between samples (default 0.1)")
    p.add_argument("--cwd", type=Path, default=Path.cwd(), help="folder to run the command in (default: here)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the command to run after --")
    trailer = args.trailer if args.trailer.is_absolute() else args.cwd / args.trailer
    ticks = os.sysconf("SC_CLK_TCK")
    os.sync()
    samples: list[Sample] = []
    done = threading.Event()
    sampler = threading.Thread(target=sample_until, args=(done, args.interval, samples), daemon=True)
    sampler.start()
    try:
        code = subprocess.call(command, cwd=args.cwd)
    finally:
        done.set()
        sampler.join()
    if not trailer.is_file():
        print(f"no trailer at {trailer}: nothing to split (command exit {code})", file=sys.stderr)
        return 1
    rows = split(samples, stage_marks(trailer.read_text(encoding="utf-8", errors="replace")), ticks)
    print(f"{'':>42} {'wall s':>8} {'idle core-s':>12} {'busy core-s':>12}")
    for label, wall, idle, busy in rows:
        print(f"{label:>42} {wall:8.2f} {idle:12.2f} {busy:12.2f}")
    idle = sum(r[2] for r in rows)
    busy = sum(r[3] for r in rows)
    print(f"{'whole run':>42} {samples[-1].t - samples[0].t:8.2f} {idle:12.2f} {busy:12.2f}")
    print(f"command exit {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
