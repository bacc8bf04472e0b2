"""Start the servers under test as a user would, each on an empty storage folder."""

from __future__ import annotations

import argparse
import compileall
import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A server process and the DICOMweb root it answers at."""

    name: str
    command: list[str]
    root: str
    log: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, ready_path: str = "/studies?limit=1", timeout: float = 60) -> None:
        self.process = subprocess.Popen(
            self.command, stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log}")
            if self.answers(ready_path):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer within {timeout} s; see {self.log}")

    def answers(self, path: str = "/studies?limit=1") -> bool:
        try:
            urllib.request.urlopen(self.root + path, timeout=10)
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def cpu_seconds(self) -> float:
        """CPU time (user and system) used so far by the process and its descendants (a
        forkserver's workers are its grandchildren), read from /proc: those alive now, and
        those that ended and were waited for (counted in their parent's), so that a process
        ending between two readings (localdicom's survey of the archive at startup) does not
        make the difference negative."""
        return tree_cpu_seconds(self.process.pid) if self.process else 0.0

    def disk_flushes(self) -> int | None:
        """Cache flushes completed so far by the disk that holds this server's folder
        (:func:`disk_flushes`)."""
        return disk_flushes(self.log.parent)

    def memory_kib(self) -> int:
        """Memory of the process and all its descendants (a forkserver's workers are its
        grandchildren): the sum of their proportional set sizes, so that pages the workers
        share with the process that forked them count once, not once per process."""
        return self.memory()["Pss"]

    def memory(self) -> dict[str, int]:
        """KiB of "Rss", "Pss" and "Pss_Anon" (heap and stacks, no file pages) summed over the
        process tree, read from /proc: no subprocess, whose fork from a large benchmark
        process would steal CPU from the servers. A sum of RSS counts shared pages once per
        process sharing them."""
        total = {"Rss": 0, "Pss": 0, "Pss_Anon": 0}
        if not self.process:
            return total
        for pid in process_tree(self.process.pid):
            with contextlib.suppress(OSError):  # the process has just exited
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    name, _, value = line.partition(":")
                    if name in total:
                        total[name] += int(value.split()[0])
        return total


def tree_cpu_seconds(pid: int) -> float:
    """See :meth:`Server.cpu_seconds`: of process ``pid`` and its descendants."""
    ticks = 0
    for each in process_tree(pid):
        with contextlib.suppress(OSError):  # the process has just exited
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            # utime, stime, cutime, cstime (proc(5))
            ticks += sum(int(value) for value in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def disk_flushes(path: Path) -> int | None:
    """Cache flushes the block device holding ``path`` has completed: what fsync and
    fdatasync ask of a disk to make writes durable, counted by the kernel for the whole
    device (field 16 of /sys/dev/block/MAJOR:MINOR/stat, Linux 5.5 and later; see the
    kernel's Documentation/admin-guide/iostats.rst). Read before and after one server's
    run, with nothing else writing, the difference is that server's. None where the kernel
    does not count them, or ``path`` is on no block device (a container's overlay)."""
    device = os.stat(path).st_dev
    stat = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}/stat")
    try:
        fields = stat.read_text().split()
    except OSError:
        return None
    return int(fields[15]) if len(fields) > 15 else None


def pids_for(
    parser: argparse.ArgumentParser, pids: list[int], targets: list, what: str
) -> list[int | None]:
    """The ``--pid`` given for each of ``targets``, in order, or None for each when none was
    given; a usage error when some were given, not one per target."""
    if pids and len(pids) != len(targets):
        parser.error(f"give a --pid for every {what}, or none")
    return pids or [None] * len(targets)


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):  # the process has just exited
                pending += [int(child) for child in children.read_text().split()]
    return found


def as_installed(package: Path | None = None) -> None:
    """Compile localdicom's modules to bytecode, as pip does when it installs them (and
    Python on their first import): where PYTHONDONTWRITEBYTECODE is set, as on this
    project's benchmark machine, each timed launch of a checkout compiled them from source
    again, 0.04 s of a pull's or a push's start that no installed copy pays. ``package``:
    a checkout's ``localdicom`` folder; by default the one ``python -m localdicom`` runs
    from here."""
    if package is None:
        spec = importlib.util.find_spec("localdicom")
        assert spec is not None and spec.origin is not None
        package = Path(spec.origin).parent
    compileall.compile_dir(package, quiet=1)


def localdicom(folder: Path, *extra: str) -> Server:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "localdicom",
        "serve",
        str(folder / "archive"),
        "--port",
        str(port),
        *extra,
    ]
    folder.mkdir(parents=True, exist_ok=True)
    return Server("localdicom", command, f"http://127.0.0.1:{port}", folder / "localdicom.log")


def orthanc(folder: Path, **settings: object) -> Server:
    """Orthanc with its DICOMweb and GDCM plugins (Debian packages), HTTP on loopback only;
    ``settings`` are added to its configuration (e.g. its DICOM server's)."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "bench",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "SyncStorageArea": True,  # its default since 1.7.4, stated: fsync of stored files
        "Plugins": [
            "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
            "/usr/share/orthanc/plugins/libOrthancGdcm.so",
        ],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "Gdcm": {"Enable": True},
        **settings,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config))
    return Server(
        "Orthanc",
        ["Orthanc", str(path)],
        f"http://127.0.0.1:{port}/dicom-web",
        folder / "orthanc.log",
    )
