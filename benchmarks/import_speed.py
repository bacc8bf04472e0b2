"""How fast ``localdicom import`` brings a folder of CT slices in, next to ``cp -r``.

    python -m benchmarks.import_speed /scratch/import-bench            # 5,000 512x512 slices
    python -m benchmarks.import_speed /scratch/import-bench --count 1000 --repeat 3

The slices (``benchmarks.dataset``, ~0.5 MB each, uncompressed) are generated once into
FOLDER/cache and reused by later runs; each run works on FOLDER/source-COUNT, hard links to
the first COUNT of them, so several counts share one cache. Copies and archives are made in
FOLDER too, so that everything is on one disk, and removed afterwards.

Both sides end on the disk: the import flushes once at its end (its default), so ``cp -r`` is
timed with and without a ``sync`` after it. The import is timed as a user runs it, a fresh
``localdicom import`` process, interpreter start-up included (its cost is printed apart).
With ``--repeat N`` each figure is the best of N runs (the least disturbed by other work on
the machine). The CPU column (user + system seconds of the processes run) does not depend on
other load: the import is bound by it, mostly parsing headers, spread over one worker per CPU.
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

STUDY, SERIES = "study-import", "series-import"


@dataclass(frozen=True)
class Timing:
    name: str
    files: int
    size: int
    seconds: float
    #: CPU time (user + system) of the processes it ran: what other load cannot inflate.
    cpu: float

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


def timed(
    action: Callable[[], None], cleanup: Callable[[], None], repeat: int
) -> tuple[float, float]:
    """Wall-clock and CPU seconds of the fastest of ``repeat`` runs, each on a clean slate."""
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        cleanup()
        subprocess.run(["sync"], check=True)  # start with nothing dirty
        cpu = _children_cpu()
        started = time.perf_counter()
        action()
        best = min(best, (time.perf_counter() - started, _children_cpu() - cpu))
    cleanup()
    return best


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(command: list[str]) -> None:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(folder: Path, source: Path, repeat: int, workers: int | None) -> list[Timing]:
    files = sorted(source.iterdir())
    size = sum(path.stat().st_size for path in files)
    copy, archive = folder / "cp-copy", folder / "archive"

    def remove_copy() -> None:
        shutil.rmtree(copy, ignore_errors=True)

    def remove_archive() -> None:
        shutil.rmtree(archive, ignore_errors=True)

    def imported() -> None:
        extra = ["--workers", str(workers)] if workers else []
        run([sys.executable, "-m", "localdicom", "import", str(source), "-a", str(archive), *extra])
        stored = len(list(archive.glob("*/*/*.dcm")))
        if stored != len(files):
            raise SystemExit(f"the import stored {stored} of {len(files)} files")

    def copied(then_sync: bool) -> Callable[[], None]:
        command = f"cp -r '{source}' '{copy}'" + (" && sync" if then_sync else "")
        return lambda: run(["sh", "-c", command])

    startup = timed(lambda: run([sys.executable, "-m", "localdicom", "--version"]), _nothing, 3)
    return [
        Timing("cp -r", len(files), size, *timed(copied(False), remove_copy, repeat)),
        Timing("cp -r; sync", len(files), size, *timed(copied(True), remove_copy, repeat)),
        Timing("localdicom import", len(files), size, *timed(imported, remove_archive, repeat)),
        Timing("  of which start-up", 0, 0, *startup),
    ]


def _nothing() -> None:
    pass


def table(timings: list[Timing]) -> list[str]:
    reference = timings[1].seconds
    header = ["", "files", "MB", "seconds", "files/s", "MB/s", "x cp -r; sync", "CPU s"]
    rows = [header] + [t.row(reference) for t in timings[:3]]
    startup = timings[3]
    rows.append([startup.name, "", "", f"{startup.seconds:.2f}", "", "", "", f"{startup.cpu:.1f}"])
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
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure; the best counts")
    parser.add_argument("--workers", type=int, default=None, help="import --workers")
    args = parser.parse_args()
    folder = args.folder.resolve()
    source = source_folder(folder, args.count)
    print(f"{os.cpu_count()} CPUs; {source}")
    for line in table(measure(folder, source, args.repeat, args.workers)):
        print(line)


if __name__ == "__main__":
    main()
