"""``localdicom pull`` of several checkouts from one source Orthanc, in interleaved rounds: an
A/B of two builds.

    python -m benchmarks.pull_ab . ../other-checkout                  # 1,000 CT, 6 rounds
    python -m benchmarks.pull_ab . ../other-checkout --count 200 --rounds 3 --folder /scratch

Stores COUNT 512x512 CT slices of one series in a source Orthanc (DICOMweb plugin), then has
each checkout pull them into an empty archive (``python -m localdicom pull SOURCE --all``
run in the checkout, so that it imports its own code), in turns, in the opposite order every
other round. Each pull goes to a new archive; a round deletes the previous round's copies
before it starts and waits :data:`benchmarks.transfer.INODE_REUSE` seconds (why: see
:mod:`benchmarks.transfer`); before each pull, everything is written back and the disk left
alone for ``--settle`` seconds. The first round warms up and is not counted. Prints every
round's seconds and CPU-seconds (the pull's process and the children it waited for) and
their medians. :mod:`benchmarks.transfer` compares the same pull with Orthanc's own.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.dataset import write_series
from benchmarks.servers import Server, as_installed, orthanc
from benchmarks.transfer import SERIES, SETTLE, STUDY, clear_round, post, rest, settle


def pull(
    checkout: Path, source: Server, archive: Path, count: int, pause: float
) -> tuple[float, float]:
    """Seconds and CPU-seconds of one pull of the whole source into a new ``archive``."""
    settle(pause)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "localdicom", "pull", source.root, "-a", str(archive), "--all"],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"the pull of {checkout} failed: {done.stdout}{done.stderr}")
    if (held := sum(1 for _ in archive.glob("*/*/*.dcm"))) != count:
        raise SystemExit(f"the pull of {checkout} stored {held} instances, not {count}")
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    return seconds, cpu


def compare(checkouts: list[Path], folder: Path, count: int, rounds: int, pause: float) -> None:
    files = write_series(folder / "data", STUDY, SERIES, count)
    for checkout in checkouts:
        as_installed(checkout / "localdicom")
    work = Path(tempfile.mkdtemp(prefix="pull-ab-", dir=folder))
    source = orthanc(work / "source")
    source.start()
    times: list[list[tuple[float, float]]] = [[] for _ in checkouts]  # a checkout may repeat
    try:
        for path in files:
            post(rest(source) + "/instances", path.read_bytes(), "application/dicom")
        for number in range(rounds + 1):
            clear_round(work, number - 1, pause)
            turns = list(enumerate(checkouts))
            for at, checkout in turns if number % 2 == 0 else turns[::-1]:
                archive = work / f"round-{number}" / str(at)
                measured = pull(checkout, source, archive, count, pause)
                if number:  # the first round warms each checkout up
                    times[at].append(measured)
    finally:
        source.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{count} instances of 512x512 CT (~0.5 MB each), pulled from one Orthanc")
    print()
    print("| checkout | seconds, median | every round | CPU-seconds, median | every round |")
    print("| --- | ---: | --- | ---: | --- |")
    for checkout, measured in zip(checkouts, times, strict=True):
        seconds = [each for each, _ in measured]
        cpu = [each for _, each in measured]
        print(
            f"| {checkout} | {statistics.median(seconds):.2f} | "
            f"{', '.join(f'{each:.2f}' for each in seconds)} | {statistics.median(cpu):.2f} | "
            f"{', '.join(f'{each:.2f}' for each in cpu)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkouts", nargs="+", type=Path, metavar="CHECKOUT")
    parser.add_argument("--count", type=int, default=1000, help="instances in the series")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--folder", type=Path, help="where instances are cached (default: a temporary folder)"
    )
    parser.add_argument("--settle", type=float, default=SETTLE, help="seconds before each pull")
    options = parser.parse_args()
    checkouts = [checkout.resolve() for checkout in options.checkouts]
    if options.folder is not None:
        compare(checkouts, options.folder, options.count, options.rounds, options.settle)
        return
    with tempfile.TemporaryDirectory() as folder:
        compare(checkouts, Path(folder), options.count, options.rounds, options.settle)


if __name__ == "__main__":
    main()
