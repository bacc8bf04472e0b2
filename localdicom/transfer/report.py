"""What a pull or push tells the person who ran it: the import's counts (stored, already
there, conflicts, errors) under the transfer's own summary line, with nothing secret in it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from localdicom.importer import ImportReport


@dataclass
class TransferReport(ImportReport):
    """A pull's or push's counts. Every instance selected is counted once: ``files`` =
    stored + already there + conflicts + errors. ``size`` counts the bytes moved."""

    verb: str = "Pulled"
    remote: str = ""
    #: Attempts repeated after a connection error, 5xx or 429.
    retries: int = 0
    dry_run: list[str] = field(default_factory=list)
    #: Instances a dry run would move (its lines may name whole series).
    would_move: int = 0
    hide: Callable[[str], str] = str
    #: push --follow: ended by Ctrl-C or SIGTERM, its usual end.
    followed: bool = False

    def lines(self, *, verbose: bool = False) -> list[str]:
        seconds = max(self.seconds, 1e-9)
        direction = "from" if self.verb == "Pulled" else "to"
        through = f" through the server at {self.server}" if self.server else ""
        stopped = "Stopped following; pushed" if self.followed else "Interrupted"
        head = f"{stopped if self.interrupted else self.verb} {direction} {self.remote}"
        lines = [
            f"{head}{through} in {self.seconds:.2f} s: {self.files} instances, "
            f"{self.size / 1e6:.1f} MB moved, {self.files / seconds:.0f} instances/s, "
            f"{self.size / 1e6 / seconds:.1f} MB/s"
        ]
        rows = [
            ("stored", self.stored),
            ("already there", self.duplicates),
            ("conflicts", len(self.conflicts)),
            ("errors", len(self.errors)),
        ]
        width = max(len(str(number)) for _, number in rows)
        lines += [f"  {name:<15}{number:>{width}}" for name, number in rows]
        lines += [
            line
            for line in super().lines(verbose=verbose)
            if line.startswith(("conflict", "error", "... and"))
        ]
        if self.retries:
            lines.append(f"{self.retries} requests were repeated after a failure of the remote.")
        lines += self.notes
        if self.interrupted:
            again = "follow on from where it stopped" if self.followed else "move the rest"
            lines.append(f"Run the same command again to {again}.")
        return [self.hide(line) for line in lines]

    def dry_run_lines(self) -> list[str]:
        if self.verb == "Pulled":  # sizes are known once fetched
            head = f"Would be pulled: {self.would_move} instances"
        else:
            head = f"Would be pushed: {self.would_move} instances, {self.size / 1e6:.1f} MB"
        lines = [head]
        return [self.hide(line) for line in lines + self.dry_run]
