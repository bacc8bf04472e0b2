"""How fast ``localdicom import`` brings a folder of CT slices in, next to ``cp -r``.

    python -m benchmarks.import_speed /scratch/import-bench            # 5,000 512x512 slices
    python -m benchmarks.import_speed /scratch/import-bench --count 1000 --repeat 3

The slices (``benchmarks.dataset``, ~0.5 MB each, uncompressed) are generated once into
FOLDER/cache and reused by later runs; each run works on FOLDER/source-COUNT, hard links to
the first COUNT of them, so several counts share one cache. Copies and archives are made in
FOLDER too, so that everything is on one disk, each in a folder of its own, all removed at
the end: ext4 without a journal passes over every inode of the group freed in the last
minute when it allocates one, in the last six while that part of its inode table is not
written back, which allocating others beside them keeps it from being
(``recently_deleted`` in the kernel's fs/ext4/ialloc.c). In an import made right after the
last run's files were deleted, a quarter of the CPU went to allocating inodes (``perf``),
and creating 2,500 files of 512 KB with a small file beside each took 0.4-1.9 ms of system
time per pair in this benchmark's folder against 0.15 in a folder of a group where nothing
was deleted. For the same reason a run that finds an earlier run's copies removes them and
waits six minutes before it starts.

Both sides end on the disk: the import flushes once at its end (its default), so ``cp -r`` is
timed with and without a ``sync`` after it. The import is timed as a user runs it, a fresh
``localdicom import`` process, interpreter start-up included (its cost is printed apart:
``localdicom import --help``).
With ``--repeat N`` the three run N times in turn and every run is printed, each import
beside the ``cp -r; sync`` of its own round, with the load average before the round (the
machine may be shared). The CPU column (user + system seconds of the processes run) depends
less on other load than the seconds: the import is bound by it, spread over one worker per
CPU.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.dataset import write_series
from benchmarks.servers import as_installed

STUDY, SERIES = "study-import", "series-import"
#: Seconds for which ext4 without a journal may pass over a freed inode (see above).
RECENTLY_DELETED = 60 + 300


@dataclass(frozen=True)
class Timing:
    name: str
    files: int
    size: int
    seconds: float
    #: CPU time (user + system) of the processes it ran: what other load inflates least.
    cpu: float
    #: The 1-minute load average before the round.
    load: float

    def row(self, reference: float) -> list[str]:
        return [
            self.name,
            str(self.files),
            f"{self.size / 1e6:.0f}",
            f"{self.seconds:.2f}",
            f"{self.files / self.seconds:.0f}",
            f"{self.size / 1e6 / self.seconds:.0f}",
            f"{self.seconds / reference:.2f}",
            f"{self.cpu:.1f}",
            f"{self.load:.2f}",
        ]


def source_folder(folder: Path, count: int) -> Path:
    """FOLDER/source-COUNT: COUNT slices, hard links into the generated cache."""
    cache = folder / "cache"
    started = time.perf_counter()
    paths = write_series(cache, STUDY, SERIES, count)
    print(f"{count} slices ready in {cache} ({time.perf_counter() - started:.1f} s)")
    source = folder / f"source-{count}"
    if not source.is_dir() or len(list(source.iterdir())) != count:
        shutil.rmtree(source, ignore_errors=True)
        source.mkdir(parents=True)
        for path in paths:
            os.link(path, source / path.name)
    return source


def timed(action: Callable[[], None]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one run, with nothing dirty before it."""
    subprocess.run(["sync"], check=True)
    cpu = _children_cpu()
    started = time.perf_counter()
    action()
    return time.perf_counter() - started, _children_cpu() - cpu


def remove_results(folder: Path) -> bool:
    """Remove the copies and archives of this benchmark's runs; whether there were any."""
    results = [*folder.glob("cp-copy-*"), *folder.glob("archive-*")]
    for path in results:
        shutil.rmtree(path, ignore_errors=True)
    return bool(results)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(command: list[str]) -> None:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(
    folder: Path, source: Path, repeat: int, workers: int | None
) -> tuple[list[list[Timing]], Timing]:
    files = sorted(source.iterdir())
    size = sum(path.stat().st_size for path in files)

    def imported(archive: Path) -> Callable[[], None]:
        extra = ["--workers", str(workers)] if workers else []
        command = [sys.executable, "-m", "localdicom", "import", str(source), "-a", str(archive)]

        def run_and_check() -> None:
            run([*command, *extra])
            stored = len(list(archive.glob("*/*/*.dcm")))
            if stored != len(files):
                raise SystemExit(f"the import stored {stored} of {len(files)} files")

        return run_and_check

    def copied(copy: Path, then_sync: bool) -> Callable[[], None]:
        command = f"cp -r '{source}' '{copy}'" + (" && sync" if then_sync else "")
        return lambda: run(["sh", "-c", command])

    rounds = []
    try:
        for number in range(1, repeat + 1):
            load = os.getloadavg()[0]
            runs = [
                ("cp -r", copied(folder / f"cp-copy-{number}", then_sync=False)),
                ("cp -r; sync", copied(folder / f"cp-copy-{number}-synced", then_sync=True)),
                ("localdicom import", imported(folder / f"archive-{number}")),
            ]
            rounds.append(
                [Timing(name, len(files), size, *timed(action), load) for name, action in runs]
            )
    finally:
        remove_results(folder)
    started = lambda: run([sys.executable, "-m", "localdicom", "import", "--help"])  # noqa: E731
    startup = Timing("  start-up alone", 0, 0, *timed(started), os.getloadavg()[0])
    return rounds, startup


def table(rounds: list[list[Timing]], startup: Timing) -> list[str]:
    header = ["", "files", "MB", "seconds", "files/s", "MB/s", "x cp -r; sync", "CPU s", "load"]
    rows = [header]
    for number, timings in enumerate(rounds, 1):
        reference = timings[1].seconds
        rows += [[f"{t.name} (run {number})", *t.row(reference)[1:]] for t in timings]
    rows.append([startup.name, "", "", f"{startup.seconds:.2f}", "", "", "", f"{startup.cpu:.1f}"])
    rows[-1].append(f"{startup.load:.2f}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path, help="cache and scratch space, on the disk to test")
    parser.add_argument("--count", type=int, default=5000, help="slices (default 5000)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, each printed")
    parser.add_argument("--workers", type=int, default=None, help="import --workers")
    args = parser.parse_args()
    folder = args.folder.resolve()
    source = source_folder(folder, args.count)
    if remove_results(folder):
        print(f"removed the copies of an earlier run; waiting {RECENTLY_DELETED} s (see --help)")
        subprocess.run(["sync"], check=True)
        time.sleep(RECENTLY_DELETED)
    as_installed()
    print(f"{os.cpu_count()} CPUs; {source}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for line in table(*measure(folder, source, args.repeat, args.workers)):
        print(line)


if __name__ == "__main__":
    main()
