"""What every command of ``localdicom`` shares in how it talks to a person: the exit codes,
a progress bar, and Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import click

EXIT_CODES = """\b
Exit codes:
  0    done, nothing failed
  1    conflicts or errors (each is listed), or the archive is busy
  2    the command line is wrong (unknown option, missing argument, path not found)
  130  interrupted (Ctrl-C); run the same command again to finish"""


class Bar:
    """A click progress bar on stderr with files/s and MB/s; the total may grow (zips).

    Drawn on a terminal only: in a log, the summary at the end says it all.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None
        self.files = 0
        self.size = 0
        self.started = time.perf_counter()

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)

    def add_total(self, files: int) -> None:
        if not sys.stderr.isatty():
            return
        if self.bar is None:
            self.bar = click.progressbar(
                length=max(files, 1),
                label=self.label,
                file=sys.stderr,
                show_pos=True,
                item_show_func=lambda rate: rate,
            )
            self.bar.__enter__()
        else:
            self.bar.length += files

    def advance(self, files: int, size: int) -> None:
        self.files += files
        self.size += size
        if self.bar is not None and files:
            seconds = max(time.perf_counter() - self.started, 1e-6)
            rate = f"{self.files / seconds:.0f} files/s {self.size / 1e6 / seconds:.1f} MB/s"
            self.bar.update(files, rate)


@contextlib.contextmanager
def stopping_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGINT and SIGTERM call ``stop`` instead of raising in the middle of a commit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    numbers = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.signal(number, lambda *_: stop()) for number in numbers]
    try:
        yield
    finally:
        for number, handler in zip(numbers, previous, strict=True):
            signal.signal(number, handler)
