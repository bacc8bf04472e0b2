"""``localdicom reindex``: rebuild every sidecar from its .dcm, in parallel.

After an upgrade that changes what a sidecar holds (its format number) the server rebuilds
stale sidecars on its own at start; this does all of them at once, with progress, and also
picks up .dcm files edited in place.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from localdicom.archive import Layout, archive_lock, sidecar
from localdicom.dicom.header import NotDicom
from localdicom.importer.examine import why, worker_init
from localdicom.importer.report import NoProgress, Progress


@dataclass
class ReindexReport:
    rebuilt: int = 0
    current: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def lines(self) -> list[str]:
        lines = [
            f"{self.rebuilt} sidecars rebuilt (format {sidecar.FORMAT}), {self.current} already "
            f"current, {len(self.failed)} failed, in {self.seconds:.2f} s"
        ]
        lines += [f"failed: {path}: {reason}" for path, reason in self.failed]
        return lines


def reindex(
    root: Path,
    *,
    only_stale: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
) -> ReindexReport:
    """Rebuild the sidecar of every instance in the archive from its .dcm, in parallel."""
    progress = progress or NoProgress()
    started = time.perf_counter()
    report = ReindexReport()
    with archive_lock(root):
        files = sorted(Layout(root).instance_files())
        progress.add_total(len(files))
        batches = [files[start : start + 16] for start in range(0, len(files), 16)]
        count = workers or os.cpu_count() or 1
        with ProcessPoolExecutor(count, initializer=worker_init) as pool:
            jobs = pool.map(
                _rebuild_batch, batches, [root] * len(batches), [only_stale] * len(batches)
            )
            for results in jobs:
                for path, outcome, reason, size in results:
                    _count_rebuild(report, path, outcome, reason)
                    progress.advance(1, size)
        if report.rebuilt:
            os.sync()
    report.seconds = time.perf_counter() - started
    return report


def _count_rebuild(report: ReindexReport, path: Path, outcome: str, reason: str) -> None:
    if outcome == "rebuilt":
        report.rebuilt += 1
    elif outcome == "current":
        report.current += 1
    else:
        report.failed.append((str(path), reason))


def _rebuild_batch(
    files: list[Path], root: Path, only_stale: bool
) -> list[tuple[Path, str, str, int]]:
    layout = Layout(root)
    results = []
    for dcm in files:
        try:
            if only_stale and sidecar.read_current(dcm) is not None:
                results.append((dcm, "current", "", 0))
                continue
            stored = sidecar.regenerate(layout, dcm, fsync=False)
            results.append((dcm, "rebuilt", "", stored.size))
        except (NotDicom, OSError) as exc:
            results.append((dcm, "failed", why(exc), 0))
    return results
