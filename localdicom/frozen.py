"""The one-file executable's main program (the script ``python -m localdicom.freeze``
builds around).

PyInstaller's one-file executable is two processes: the launcher the user started, which
unpacks the program into a temporary folder, runs it as a child and deletes the folder when
it ends; and that child, the server. The launcher passes SIGTERM and SIGINT on to the child,
but a launcher killed outright (SIGKILL, the OOM killer) cannot: its child would serve on,
with nobody left to stop it. So the child asks the kernel for SIGTERM when its parent dies
(Linux's PR_SET_PDEATHSIG), and stops as it does on any SIGTERM; its workers follow it
(``workers.exit_with``), and it deletes the unpacked folder, which the launcher would have.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import shutil
import signal
import sys
from pathlib import Path

#: prctl(2): deliver a signal to this process when its parent thread dies.
PR_SET_PDEATHSIG = 1


def main() -> None:
    # A multiprocessing helper (forkserver, resource tracker) or a spawned worker started
    # as this executable with Python's arguments: PyInstaller's runtime hook runs it, exits.
    multiprocessing.freeze_support()
    onefile, launcher = _is_onefile_child(), os.getppid()
    if onefile:
        _stop_with_launcher(launcher)
    from localdicom.cli import main as command

    try:
        command()
    finally:
        if onefile and os.getppid() != launcher:  # nobody else will delete it
            shutil.rmtree(sys._MEIPASS, ignore_errors=True)


def _is_onefile_child() -> bool:
    """True in the program a one-file launcher unpacked and started (its folder is a
    temporary one, not the executable's own, as in PyInstaller's one-folder mode)."""
    unpacked = getattr(sys, "_MEIPASS", None)
    return unpacked is not None and Path(unpacked) != Path(sys.executable).resolve().parent


def _stop_with_launcher(launcher: int) -> None:
    """SIGTERM to this process when ``launcher``, its parent, dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return  # a kernel that refuses: the launcher's SIGTERM still reaches us
    if os.getppid() != launcher:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
