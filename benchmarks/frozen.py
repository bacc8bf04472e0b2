"""The one-file executable against the pip-installed server: size, start, memory.

    python -m benchmarks.frozen [--executable dist/localdicom] [--launches 5]

Builds the executable first (``python -m localdicom.freeze --out DIST``) unless it is given.
Then, for each of the two (the executable with an environment holding only PATH=/usr/bin:/bin
and HOME; ``python -m localdicom`` of this Python), on an archive of its own:

- launch to first answered request: from starting ``serve --samples`` to the first 200 of
  ``/studies?limit=1`` (polled every 10 ms); the first launch creates the archive and
  stores the samples, each later one opens it. A one-file executable unpacks itself at every
  launch (PyInstaller keeps no unpacked copy), so later launches save only what the page
  cache keeps;
- memory once the samples are stored and a JPEG 2000 frame (pydicom's US1_J2KR.dcm) was
  decoded in a worker process, summed over the whole process tree (the launcher, the server,
  the forkserver and its workers): heap, RSS and PSS (see :data:`MEMORY`).

Budgets (issue 23): size <= 100 MB, start <= 3 s, memory <= pip-installed + 20 %. Each
answer is checked (the frame's length), so a failure cannot pass for a fast start.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from benchmarks.servers import Server, free_port

REPOSITORY = Path(__file__).resolve().parent.parent
FRAME_ACCEPT = (
    'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'
)


def launch(
    name: str, program: list[str], folder: Path, env: dict[str, str] | None
) -> tuple[Server, float]:
    """Start ``program serve`` on folder/archive with the samples; the server and the seconds
    from starting it to its first answer."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    command = [*program, "serve", str(folder / "archive"), "--port", str(port), "--samples"]
    server = Server(name, command, f"http://127.0.0.1:{port}", folder / f"{name}.log")
    started = time.perf_counter()
    server.process = subprocess.Popen(
        command, stdout=server.log.open("ab"), stderr=subprocess.STDOUT, env=env
    )
    while not server.answers():
        if server.process.poll() is not None:
            raise RuntimeError(f"{name} exited; see {server.log}")
        if time.perf_counter() - started > 60:
            raise RuntimeError(f"{name} did not answer in 60 s; see {server.log}")
        time.sleep(0.01)
    return server, time.perf_counter() - started, server.cpu_seconds()


def decode_a_jpeg_2000_frame(server: Server) -> None:
    """Store US1_J2KR.dcm (JPEG 2000, 640x480 RGB) and ask for its frame decoded."""
    path = get_testdata_file("US1_J2KR.dcm")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    store = urllib.request.Request(
        server.root + "/studies",
        data=Path(path).read_bytes(),
        headers={"Content-Type": "application/dicom"},
    )
    urllib.request.urlopen(store, timeout=60).read()
    url = (
        f"{server.root}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames/1"
    )
    request = urllib.request.Request(url, headers={"Accept": FRAME_ACCEPT})
    body = urllib.request.urlopen(request, timeout=60).read()
    assert len(body) > ds.Rows * ds.Columns * 3, len(body)


def measure(
    name: str, program: list[str], folder: Path, env: dict[str, str] | None, launches: int
) -> dict:
    starts, cpu = [], []
    for number in range(launches):
        server, seconds, cpu_seconds = launch(name, program, folder, env)
        starts.append(seconds)
        cpu.append(cpu_seconds)
        if number == launches - 1:
            decode_a_jpeg_2000_frame(server)
            time.sleep(1)  # the workers settle
            memory = server.memory()
        server.stop()
    return {"first": starts[0], "later": starts[1:], "cpu": cpu, "memory": memory}


def build(out: Path) -> Path:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "localdicom.freeze", "--out", str(out)], check=True, cwd=REPOSITORY
    )
    print(f"built in {time.perf_counter() - started:.0f} s")
    return out / "localdicom"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executable", type=Path, help="the built executable (default: build one)")
    parser.add_argument("--launches", type=int, default=5, help="launches of each (default 5)")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-frozen-") as temporary:
        base = Path(temporary)
        executable = arguments.executable or build(base / "dist")
        home = base / "home"
        home.mkdir()
        bare = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
        frozen = measure("frozen", [str(executable)], base / "frozen", bare, arguments.launches)
        pip = measure(
            "pip", [sys.executable, "-m", "localdicom"], base / "pip", None, arguments.launches
        )
        report(executable.stat().st_size, frozen, pip)


#: The sums of /proc/PID/smaps_rollup shown. PSS divides a file page among every process
#: mapping it, on the whole machine: the pip-installed server's libraries are shared with
#: other Python processes of the same installation, the executable's unpacked copies with
#: nobody, so PSS favours the former; heap (anonymous PSS) and RSS compare like with like.
MEMORY = [("heap (anonymous PSS)", "Pss_Anon"), ("RSS", "Rss"), ("PSS", "Pss")]


def memory_row(label: str, key: str, frozen: dict, pip: dict) -> tuple[str, str, str, str]:
    ratio = frozen["memory"][key] / pip["memory"][key] - 1
    mine = f"{frozen['memory'][key] / 1024:.0f} MiB ({ratio:+.0%})"
    return label, mine, f"{pip['memory'][key] / 1024:.0f} MiB", "<= pip + 20 %"


def report(size: int, frozen: dict, pip: dict) -> None:
    rows = [
        ("size of the file", f"{size / 1e6:.1f} MB ({size / 2**20:.1f} MiB)", "", "<= 100 MB"),
        (
            "launch to first answer, first",
            f"{frozen['first']:.2f} s",
            f"{pip['first']:.2f} s",
            "<= 3 s",
        ),
        (
            "launch to first answer, later (median, max)",
            f"{statistics.median(frozen['later']):.2f} s, {max(frozen['later']):.2f} s",
            f"{statistics.median(pip['later']):.2f} s, {max(pip['later']):.2f} s",
            "<= 3 s",
        ),
        (
            "CPU seconds to first answer, first; later (median)",
            f"{frozen['cpu'][0]:.2f} s; {statistics.median(frozen['cpu'][1:]):.2f} s",
            f"{pip['cpu'][0]:.2f} s; {statistics.median(pip['cpu'][1:]):.2f} s",
            "",
        ),
        *(
            memory_row(f"memory, {label} of the process tree", key, frozen, pip)
            for label, key in MEMORY
        ),
    ]
    header = ("", "one-file executable", "pip-installed", "budget")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
