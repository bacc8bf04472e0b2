"""What an import reads: every file under the paths given (folders walked, the archive's own
files left alone), the files a DICOMDIR lists, and the members of zip files."""

from __future__ import annotations

import os
import posixpath
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from localdicom.archive import Layout

#: Bytes read to classify a file: the 128-byte preamble and the 'DICM' prefix (PS3.10 7.1).
HEAD = 132


def is_part10(head: bytes) -> bool:
    return head[128:132] == b"DICM"


@dataclass(frozen=True)
class Source:
    """One thing to examine: a file, or a member of a zip file (``member`` set)."""

    path: Path
    member: str | None = None
    #: Named on the command line (a zip-format file is opened even without a .zip name).
    explicit: bool = False

    def __str__(self) -> str:
        return str(self.path) if self.member is None else f"{self.path}:{self.member}"

    @property
    def key(self) -> str:
        """Identity used to match DICOMDIR references: case-insensitive, because CD file
        names are upper case in the DICOMDIR and often lower case once mounted."""
        base = os.path.abspath(self.path).casefold()
        return base if self.member is None else f"{base}/{self.member.casefold()}"


@dataclass
class Collected:
    """The sources found under the paths given, and what was settled without reading."""

    sources: list[Source] = field(default_factory=list)
    not_dicom: list[tuple[str, str]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def collect(paths: Iterable[Path], archive_root: Path) -> Collected:
    """Every file under ``paths`` (folders recursively), skipping the archive's own files so
    that a source folder holding the archive (``import ARCHIVE --archive ARCHIVE``) works."""
    collected = Collected()
    layout = Layout(archive_root.resolve())
    walk = _Walk(layout, collected)
    for path in paths:
        where = _below(path.resolve(), layout.root)
        if path.is_dir():
            walk.folder(path, where)
        elif where is not None and layout.owns(where[:-1], path.name):
            walk.own += 1
        else:
            collected.sources.append(Source(path, explicit=True))
    if walk.own:
        collected.notes.append(f"{walk.own} files already in the archive's layout were left alone")
    return collected


class _Walk:
    """A depth-first walk in name order that knows where the archive folder is."""

    def __init__(self, layout: Layout, out: Collected) -> None:
        self.layout = layout
        self.out = out
        self.root_id = _dir_id(layout.root)
        #: Files of the archive's own that were left alone.
        self.own = 0

    def folder(self, top: Path, where: tuple[str, ...] | None) -> None:
        stack: list[tuple[Path, tuple[str, ...] | None]] = [(top, where)]
        while stack:
            folder, inside = stack.pop()
            try:
                with os.scandir(folder) as iterator:
                    entries = sorted(iterator, key=lambda entry: entry.name)
            except OSError as exc:
                self.out.errors.append((str(folder), f"the folder cannot be read: {exc.strerror}"))
                continue
            stack.extend(reversed(self._entries(entries, inside)))

    def _entries(
        self, entries: list[os.DirEntry], inside: tuple[str, ...] | None
    ) -> list[tuple[Path, tuple[str, ...] | None]]:
        """Take the files of one folder; its subfolders, to walk next."""
        folders = []
        for entry in entries:
            if inside is not None and self.layout.owns(inside, entry.name):
                self.own += 1
            elif entry.is_dir(follow_symlinks=False):
                below = (*inside, entry.name) if inside is not None else None
                if below is None and self.root_id is not None and _is_dir(entry, self.root_id):
                    below = ()
                folders.append((Path(entry.path), below))
            else:
                _collect_entry(entry, self.out)
        return folders


def _collect_entry(entry: os.DirEntry, out: Collected) -> None:
    if entry.is_file():
        out.sources.append(Source(Path(entry.path)))
    elif entry.is_symlink() and not os.path.exists(entry.path):
        out.errors.append((entry.path, "a broken symbolic link"))
    elif entry.is_symlink():
        out.not_dicom.append(
            (entry.path, "a link to a folder, not followed (name it on the command line)")
        )
    else:
        out.not_dicom.append((entry.path, "not a regular file"))


def _dir_id(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _is_dir(entry: os.DirEntry, identity: tuple[int, int]) -> bool:
    """Whether ``entry`` is the folder ``identity`` names (the inode check costs nothing)."""
    return entry.inode() == identity[1] and entry.stat(follow_symlinks=False).st_dev == identity[0]


def _below(path: Path, root: Path) -> tuple[str, ...] | None:
    return path.relative_to(root).parts if path.is_relative_to(root) else None


# DICOMDIR ---------------------------------------------------------------------------------


def referenced(dicomdir: Source, parts: tuple[str, ...]) -> Source:
    """The source a DICOMDIR's ReferencedFileID names, relative to the DICOMDIR
    (PS3.10 8.5: the components of a path from the File-set's root)."""
    if dicomdir.member is None:
        return Source(dicomdir.path.parent.joinpath(*parts))
    folder = posixpath.dirname(dicomdir.member)
    return Source(dicomdir.path, member=posixpath.join(folder, *parts))


def locate(reference: Source) -> Source | None:
    """The file a DICOMDIR reference names, matching names without regard to case."""
    if reference.member is not None:
        return None  # every member of the zip is already queued: this one is missing
    if reference.path.is_file():
        return reference
    folder = Path(reference.path.anchor or ".")
    for part in reference.path.parts[1 if reference.path.anchor else 0 :]:
        try:
            names = {name.casefold(): name for name in os.listdir(folder)}
        except OSError:
            return None
        if part.casefold() not in names:
            return None
        folder = folder / names[part.casefold()]
    return Source(folder) if folder.is_file() else None


# what lies outside the layout -------------------------------------------------------------


@dataclass
class Found:
    """DICOM and zip files in an archive folder that are not in its layout."""

    dicom: int = 0
    zips: int = 0
    example: str | None = None


def survey(root: Path) -> Found:
    """What lies in ``root`` outside the archive layout: DICOM files (by content) and zip
    files. The server does not see these; ``serve`` says so, or imports them."""
    found = Found()
    for source in collect([root], root).sources:
        try:
            with source.path.open("rb") as fp:
                head = fp.read(HEAD)
                zipped = source.path.suffix.lower() == ".zip" and zipfile.is_zipfile(fp)
        except OSError:
            continue
        if is_part10(head):
            found.dicom += 1
        elif zipped:
            found.zips += 1
        else:
            continue
        found.example = found.example or str(source.path)
    return found
