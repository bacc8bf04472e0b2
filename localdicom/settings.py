"""The options of every command, declared once in :data:`OPTIONS`.

Each :class:`Option` gives its flags, python type, default and, for each command that offers
it, its help there. The commands' click options (:func:`options`) and the server's
:class:`Settings` are made from the table, so a default is written once and a server built in
code (tests) runs as ``localdicom serve`` would. tests/test_readme_options.py checks that
README.md names every flag and that the commands have no option outside the table.

Where commands differ, the table says so: ``--fsync`` defaults to on for ``serve`` (an
acknowledged instance must survive a power cut) and to off for ``import`` (it flushes once, at
its end), so it has an entry per command; ``--overwrite`` and ``--workers`` mean the same
everywhere and only their help differs. A command lists its options in table order, which is
why the commands' options interleave.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar

import click

from localdicom.dicom.confidentiality_options import DeidOption
from localdicom.dicom.dictionary import dictionary_VR, tag_for_keyword
from localdicom.dicom.qido import UNMATCHABLE_VRS

F = TypeVar("F", bound=Callable[..., Any])


class ByteSize(click.ParamType):
    """A size in bytes: 1048576, 500M, 4G, 1.5GiB (K, M, G, T: powers of 1024)."""

    name = "size"
    _UNITS: ClassVar[dict[str, int]] = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("B").removesuffix("I")
        unit = text[-1:] if text[-1:] in "KMGT" else ""
        try:
            size = int(float(text.removesuffix(unit)) * self._UNITS[unit]) if unit else int(text)
        except ValueError:
            self.fail(f"{value!r} is not a size (e.g. 1048576, 500M, 4G)", param, ctx)
        if size < 1:
            self.fail(f"{value!r} must be at least one byte", param, ctx)
        return size


class Duration(click.ParamType):
    """An age in seconds: 30d, 12h, 90m, 45s, 2w (a bare number is days)."""

    name = "age"
    _UNITS: ClassVar[dict[str, int]] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        text = str(value).strip().lower()
        unit = text[-1:] if text[-1:] in self._UNITS else "d"
        try:
            amount = float(text.removesuffix(unit) if text[-1:] == unit else text)
        except ValueError:
            self.fail(f"{value!r} is not an age (e.g. 30d, 12h, 90m)", param, ctx)
        if amount < 0:
            self.fail(f"{value!r} is negative", param, ctx)
        return amount * self._UNITS[unit]


class AETitle(click.ParamType):
    """An Application Entity title: 1 to 16 characters of the default character repertoire,
    no backslash, not only spaces (PS3.5 6.2, VR AE)."""

    name = "ae-title"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        text = str(value).strip()
        if not 1 <= len(text) <= 16 or "\\" in text or not text.isascii() or not text.isprintable():
            self.fail(f"{value!r} is not an AE title (1 to 16 ASCII characters)", param, ctx)
        return text


class AttributeType(click.ParamType):
    """A DICOM attribute of the data dictionary, by keyword or tag (SliceThickness,
    00180050), as its 8-digit tag; not a sequence or a binary value, which are not matched."""

    name = "attribute"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        text = str(value).strip()
        tag = int(text, 16) if re.fullmatch(r"[0-9A-Fa-f]{8}", text) else tag_for_keyword(text)
        try:
            vr = dictionary_VR(tag) if tag is not None else ""
        except KeyError:
            vr = ""
        if not vr:
            self.fail(f"{value!r} is not a keyword or tag of the DICOM dictionary", param, ctx)
        if not UNMATCHABLE_VRS.isdisjoint(vr.split(" or ")):
            self.fail(f"{value!r} ({vr}) is a sequence or binary: it is never matched", param, ctx)
        return f"{tag:08X}"


class DicomPeer(NamedTuple):
    """A DICOM node known by its AE title."""

    ae_title: str
    host: str
    port: int


class PeerType(click.ParamType):
    """AE=HOST:PORT, e.g. ORTHANC=127.0.0.1:4242."""

    name = "peer"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> DicomPeer:
        if isinstance(value, DicomPeer):
            return value
        title, _, address = str(value).partition("=")
        host, _, port = address.rpartition(":")
        if not (title and host and port.isdigit() and 0 < int(port) < 65536):
            self.fail(f"{value!r} is not AE=HOST:PORT (e.g. ORTHANC=127.0.0.1:4242)", param, ctx)
        return DicomPeer(AETitle().convert(title, param, ctx), host.strip("[]"), int(port))


class KeyValue(click.ParamType):
    """KEY=VALUE, e.g. Modality=CT, as a (key, value) pair."""

    name = "key=value"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        key, equals, condition = str(value).partition("=")
        if not equals or not key.strip():
            self.fail(f"{value!r} is not KEY=VALUE (e.g. Modality=CT)", param, ctx)
        return key.strip(), condition


@dataclass(frozen=True)
class Option:
    """One command-line option. ``default`` is written as on the command line ("4G"); ``type``
    turns it into the value the command gets, which is also the default of its Settings field.
    """

    #: The parameter name of the command function and, for serve, of the Settings field.
    name: str
    #: click's declarations: ("-p", "--port"), ("--fsync/--no-fsync",).
    flags: tuple[str, ...]
    #: The python type of the value the command gets.
    annotation: Any
    #: None: none (click then gives None, or () if ``multiple``). Of several flags for one
    #: parameter (``flag_value``), the one that is the default has True.
    default: Any
    #: Help text by command; its keys are the commands that offer the option.
    help: Mapping[str, str]
    #: click's parameter type when it cannot be told from the default.
    type: click.ParamType | None = None
    show_default: bool = False
    is_flag: bool = False
    #: The value of ``name`` when this flag is given: one of several flags for one parameter.
    flag_value: str | None = None
    multiple: bool = False
    metavar: str | None = None
    #: An environment variable read when the option is not given (shown in the help).
    envvar: str | None = None
    required: bool = False
    #: For serve: False when the command acts on the option itself, so Settings lacks it.
    in_settings: bool = True

    @property
    def commands(self) -> tuple[str, ...]:
        return tuple(self.help)

    @property
    def value(self) -> Any:
        """The default as the command gets it ("4G" -> 4294967296)."""
        if self.default is None or self.type is None or self.multiple:
            return self.default
        return self.type.convert(self.default, None, None)

    def click_option(self, command: str) -> Callable[[F], F]:
        """The click.option decorator of this option in ``command``."""
        given = {
            "type": self.type,
            "show_default": self.show_default,
            "is_flag": self.is_flag,
            "flag_value": self.flag_value,
            "multiple": self.multiple,
            "metavar": self.metavar,
            "envvar": self.envvar,
            "show_envvar": self.envvar is not None,
            "required": self.required,
        }
        # Only what is given, since click tells unset from None and False: an explicit
        # default=None satisfies required=True, is_flag=False undoes "--fsync/--no-fsync".
        keywords = {key: value for key, value in given.items() if value not in (None, False)}
        if self.default is not None:
            keywords["default"] = self.default
        return click.option(*self.flags, self.name, help=self.help[command], **keywords)


def _both(text: str) -> dict[str, str]:
    """The same help in pull and push."""
    return {"pull": text, "push": text}


def _moving(text: str) -> dict[str, str]:
    """The same help in every command that moves data out of or into an archive."""
    return {"export": text, "pull": text, "push": text}


OPTIONS: tuple[Option, ...] = (
    # serve: where it listens
    Option(
        "host",
        ("-h", "--host"),
        str,
        "127.0.0.1",
        show_default=True,
        help={
            "serve": "Address to listen on. 127.0.0.1 keeps the archive private to this "
            "machine; 0.0.0.0 exposes it to the network."
        },
    ),
    Option(
        "port",
        ("-p", "--port"),
        int,
        8042,
        show_default=True,
        help={"serve": "Port; 0 picks a free one."},
    ),
    Option(
        "samples",
        ("--samples",),
        bool,
        False,
        is_flag=True,
        help={"serve": "Store the tutorial's three sample instances if they are not there yet."},
    ),
    # serve: classic DICOM (DIMSE) beside DICOMweb
    Option(
        "dicom_port",
        ("--dicom-port",),
        int | None,
        None,
        type=click.IntRange(0, 65535),
        metavar="PORT",
        help={
            "serve": "Also answer classic DICOM (C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE) on "
            "PORT (11112 is the registered one; 0 picks a free one). Off when absent."
        },
    ),
    Option(
        "ae_title",
        ("--ae-title",),
        str,
        "LOCALDICOM",
        type=AETitle(),
        show_default=True,
        help={
            "serve": "This server's DICOM Application Entity title.",
            "pull": "Our AE title towards a dicom:// remote (it must know it for C-GET).",
            "push": "Our AE title towards a dicom:// remote.",
        },
    ),
    Option(
        "dicom_host",
        ("--dicom-host",),
        str | None,
        None,
        help={"serve": "Address the DICOM port listens on; by default the --host address."},
    ),
    Option(
        "dicom_peers",
        ("--dicom-peer",),
        tuple[DicomPeer, ...],
        (),
        type=PeerType(),
        multiple=True,
        metavar="AE=HOST:PORT",
        help={
            "serve": "A DICOM node that C-MOVE may send to, by its AE title (repeatable). "
            "When the DICOM port is reachable beyond this machine, only these AE titles "
            "may connect."
        },
    ),
    # serve: what runs when a study has arrived
    Option(
        "on_stable_study",
        ("--on-stable-study",),
        str | None,
        None,
        metavar="CMD",
        in_settings=False,
        help={
            "serve": "Run CMD (split as a shell would, run without one) for each study that "
            "received no instance for --stable-seconds, with LOCALDICOM_STUDY_UID, "
            "LOCALDICOM_ARCHIVE and LOCALDICOM_URL in its environment; again whenever the "
            "study receives more. Failures are logged."
        },
    ),
    Option(
        "stable_seconds",
        ("--stable-seconds",),
        float,
        60.0,
        type=click.FloatRange(min=0, min_open=True),
        show_default=True,
        in_settings=False,
        help={
            "serve": "Seconds without a new instance after which a study counts as complete.",
            "push": "With --follow: seconds without a change after which a study is pushed.",
        },
    ),
    # import: into which archive, and how
    Option(
        "archive",
        ("-a", "--archive"),
        Path,
        None,
        type=click.Path(file_okay=False, path_type=Path),
        required=True,
        help={
            "import": "The archive to import into (created if absent), as given to "
            "'localdicom serve'.",
            "pull": "The archive to pull into (created if absent); through its server when "
            "one runs on it, as import does.",
            "push": "The archive to push from.",
        },
    ),
    # The values are those of importer.Transfer, which the command turns them into.
    Option(
        "transfer",
        ("--copy",),
        str,
        True,
        flag_value="copy",
        help={
            "import": "Copy each instance into the archive; the sources are not touched "
            "(the default)."
        },
    ),
    Option(
        "transfer",
        ("--move",),
        str,
        None,
        flag_value="move",
        help={
            "import": "Move each instance into the archive (a rename on the same file "
            "system). Sources already in the archive (identical bytes) are removed too; "
            "conflicts, files that are not DICOM and zip files stay."
        },
    ),
    Option(
        "transfer",
        ("--link",),
        str,
        None,
        flag_value="link",
        help={
            "import": "Hard-link each instance into the archive: no bytes are copied, the "
            "source stays. Across file systems this falls back to copying, with a note."
        },
    ),
    # reindex
    Option(
        "only_stale",
        ("--only-stale",),
        bool,
        False,
        is_flag=True,
        help={
            "reindex": "Rebuild only the sidecars that are missing, unreadable, of an older "
            "format or older than their .dcm (what a server would rebuild at start, but in "
            "parallel)."
        },
    ),
    # how instances are stored, and by how many processes
    Option(
        "overwrite",
        ("--overwrite",),
        bool,
        False,
        is_flag=True,
        help={
            "serve": "Let STOW-RS replace a stored instance by a different one with the same "
            "SOP Instance UID (by default that is refused with 409).",
            "import": "Replace a stored instance by a different one with the same SOP "
            "Instance UID (by default that is a conflict and the stored one is kept).",
            "pull": "Replace a stored instance by a different one the remote has under the "
            "same SOP Instance UID (by default a conflict; the stored one is kept).",
            "push": "Send again an instance that changed here since it was pushed (by "
            "default a conflict, not sent); the remote's own policy then decides.",
        },
    ),
    Option(
        "fsync",
        ("--fsync/--no-fsync",),
        bool,
        True,
        show_default=True,
        help={
            "serve": "Flush every stored instance to disk before acknowledging it. "
            "--no-fsync is faster but a power cut may lose recently acknowledged instances."
        },
    ),
    Option(
        "workers",
        ("--workers",),
        int | None,
        None,
        type=click.IntRange(min=1),
        help={
            "serve": "Processes that parse uploads and decode, encode and render images  "
            "[default: one per CPU]",
            "import": "Processes that read, parse and copy files  [default: one per CPU]",
            "reindex": "Processes that parse the .dcm files  [default: one per CPU]",
            "export": "Processes that convert instances for --transfer-syntax  "
            "[default: one per CPU]",
            "push": "Processes that de-identify instances (--deidentify, DICOMweb)  "
            "[default: one per CPU]",
        },
    ),
    Option(
        "fsync",
        ("--fsync/--no-fsync",),
        bool,
        False,
        show_default=True,
        help={
            "import": "Flush each instance to disk as it is stored, like the server. By "
            "default the import flushes once, at the end, which is much faster; an "
            "interrupted import is safe either way."
        },
    ),
    # import: --deidentify (README "De-identify")
    Option(
        "deidentify",
        ("--deidentify",),
        bool,
        False,
        is_flag=True,
        help={
            "import": "Store de-identified copies (PS3.15 Annex E Basic Profile): new UIDs, "
            "pseudonyms, identifying attributes removed; needs --deid-key.",
            "export": "Write de-identified copies (PS3.15 Annex E Basic Profile): new UIDs "
            "(in the file names and the DICOMDIR too), pseudonyms, identifying attributes "
            "removed; needs --deid-key. The archive is not changed.",
            "push": "Send de-identified copies (PS3.15 Annex E Basic Profile), the UIDs "
            "export --deidentify writes with the same key; needs --deid-key. The archive is "
            "not changed.",
        },
    ),
    Option(
        "deid_key",
        ("--deid-key",),
        Path | None,
        None,
        type=click.Path(dir_okay=False, path_type=Path),
        metavar="FILE",
        help={
            "import": "The secret and the pseudonym map (created when absent; keep it "
            "outside the archive and private): the same key gives the same UIDs and "
            "pseudonyms in every run.",
            "export": "The secret and the pseudonym map (created when absent; keep it "
            "outside the archive and DEST, and private): the same key gives the same UIDs "
            "and pseudonyms in every run, as for import --deidentify.",
            "push": "The secret and the pseudonym map (created when absent; keep it "
            "outside the archive, and private): the same key gives the same UIDs and "
            "pseudonyms as export --deidentify.",
        },
    ),
    Option(
        "deid_options",
        ("--deid-option",),
        tuple[str, ...],
        None,
        type=click.Choice([option.value for option in DeidOption]),
        multiple=True,
        metavar="NAME",
        help=dict.fromkeys(
            ("import", "export", "push"),
            "An Annex E option to apply (repeatable): "
            + ", ".join(option.value for option in DeidOption)
            + ".",
        ),
    ),
    Option(
        "reject_burned_in",
        ("--reject-burned-in",),
        bool,
        False,
        is_flag=True,
        help={
            "import": "With --deidentify, do not store instances whose pixels may show "
            "identifying text (Burned In Annotation YES, ultrasound, secondary capture...); "
            "by default they are stored and listed as needing review.",
            "export": "With --deidentify, leave out instances whose pixels may show "
            "identifying text (Burned In Annotation YES, ultrasound, secondary capture...); "
            "by default they are exported and listed as needing review.",
            "push": "With --deidentify, do not send instances whose pixels may show "
            "identifying text (Burned In Annotation YES, ultrasound, secondary capture...); "
            "by default they are sent and listed as needing review.",
        },
    ),
    Option(
        "verbose",
        ("-v", "--verbose"),
        bool,
        False,
        is_flag=True,
        help={
            "import": "List every file that is not DICOM, with the reason.",
            "pull": "List every conflict and error (the first 20 otherwise).",
            "push": "List every conflict and error (the first 20 otherwise).",
        },
    ),
    # serve: what it serves, and to whom
    Option(
        "import_found",
        ("--import-found",),
        bool,
        False,
        is_flag=True,
        in_settings=False,
        help={
            "serve": "Before serving, import DICOM files found in ARCHIVE outside its layout "
            "(a CD copy, a collaborator's tree, zips) into the layout; the originals stay. "
            "Without it, the server only says what it found and how to import it."
        },
    ),
    Option(
        "cors_origins",
        ("--cors-origin",),
        tuple[str, ...],
        (),
        multiple=True,
        metavar="ORIGIN",
        help={
            "serve": "Let web pages from ORIGIN (e.g. https://viewer.example:443) read the "
            "archive; repeatable. Pages on http(s)://localhost and 127.0.0.1 (any port) may "
            "by default. '*' lets every web site you visit read it: only as an explicit "
            "choice."
        },
    ),
    Option(
        "token",
        ("--token",),
        str | None,
        None,
        envvar="LOCALDICOM_TOKEN",
        help={
            "serve": "Require TOKEN on every request: 'Authorization: Bearer TOKEN', or "
            "Basic with TOKEN as the password; a browser opens the link printed at start "
            "(.../?token=TOKEN) once and keeps a cookie."
        },
    ),
    Option(
        "insecure",
        ("--insecure",),
        bool,
        False,
        is_flag=True,
        in_settings=False,
        help={
            "serve": "Allow a network --host without --token: anyone who reaches the port "
            "reads and changes the archive."
        },
    ),
    Option(
        "viewer",
        ("--viewer",),
        Path | None,
        None,
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help={
            "serve": "An OHIF build (the dist/ folder of the npm package @ohif/app) to serve "
            "at /viewer/, configured for this server."
        },
    ),
    Option(
        "index_attributes",
        ("--index-attribute",),
        tuple[str, ...],
        (),
        type=AttributeType(),
        multiple=True,
        metavar="KEYWORD",
        help={
            "serve": "Keep this attribute of every instance in memory (repeatable, e.g. "
            "SliceThickness), so that QIDO-RS matches it as fast as the built-in ones; "
            "other attributes are matched from the sidecars."
        },
    ),
    # serve: STOW-RS limits (None in Settings: no limit)
    Option(
        "max_request_bytes",
        ("--max-request-size",),
        int | None,
        None,
        type=ByteSize(),
        help={
            "serve": "Largest STOW-RS request body (e.g. 10G); larger is refused with 413 and "
            "nothing of it is kept  [default: no limit]"
        },
    ),
    Option(
        "max_part_bytes",
        ("--max-instance-size",),
        int | None,
        "4G",
        type=ByteSize(),
        show_default=True,
        help={
            "serve": "Largest instance: one multipart/related part or an application/dicom "
            "body; larger is refused with 413 and nothing of the request is kept."
        },
    ),
    Option(
        "upload_timeout",
        ("--upload-timeout",),
        float | None,
        60.0,
        type=click.FloatRange(min=0, min_open=True),
        show_default=True,
        help={
            "serve": "Seconds a client may send nothing in the middle of an upload; then the "
            "upload is dropped (408) and its partial data deleted."
        },
    ),
    # what DELETE and --overwrite keep (localdicom/archive/trash.py)
    Option(
        "trash",
        ("--trash/--no-trash",),
        bool,
        True,
        show_default=True,
        help={
            "serve": "Move what DELETE, the reject route and --overwrite remove to "
            "ARCHIVE/.trash/, from where 'localdicom trash restore' brings it back. "
            "--no-trash deletes for good.",
            "import": "With --overwrite, move each replaced instance to ARCHIVE/.trash/ "
            "(--no-trash deletes it for good).",
        },
    ),
    Option(
        "trash_days",
        ("--trash-days",),
        int,
        30,
        type=click.IntRange(min=1),
        show_default=True,
        help={"serve": "Purge trash entries older than this many days, at start and every hour."},
    ),
    Option(
        "restore_all",
        ("--all",),
        bool,
        False,
        is_flag=True,
        help={"trash restore": "Restore everything in the trash."},
    ),
    Option(
        "study",
        ("--study",),
        str | None,
        None,
        metavar="UID",
        help={"trash restore": "Restore the trashed instances of this study."},
    ),
    Option(
        "series_uid",
        ("--series",),
        str | None,
        None,
        metavar="UID",
        help={"trash restore": "Restore the trashed instances of this series."},
    ),
    Option(
        "instance",
        ("--instance",),
        str | None,
        None,
        metavar="UID",
        help={"trash restore": "Restore this instance (by SOP Instance UID)."},
    ),
    Option(
        "entry",
        ("--entry",),
        str | None,
        None,
        metavar="NAME",
        help={
            "trash restore": "Restore what one removal put in the trash (its ENTRY in "
            "'localdicom trash ls'): an older version an --overwrite replaced, say."
        },
    ),
    Option(
        "older_than",
        ("--older-than",),
        float | None,
        None,
        type=Duration(),
        metavar="AGE",
        help={
            "trash empty": "Only entries removed longer ago than AGE (30d, 12h, 90m; a bare "
            "number is days)  [default: every entry]"
        },
    ),
    # ls
    Option(
        "series",
        ("--series",),
        bool,
        False,
        is_flag=True,
        help={"ls": "Add a row for each series under its study."},
    ),
    # export
    Option(
        "as_zip",
        ("--zip",),
        bool,
        False,
        is_flag=True,
        help={"export": "Write DEST as one zip file (ZIP64 beyond 4 GB) instead of a folder."},
    ),
    Option(
        "dicomdir",
        ("--dicomdir",),
        bool,
        False,
        is_flag=True,
        help={
            "export": "Lay the files out for a CD viewer (DICOM/ST000001/SE000001/IM000001, "
            "PS3.11) with a DICOMDIR at the top, instead of STUDY/SERIES/SOP.dcm by UID."
        },
    ),
    Option(
        "transfer_syntax",
        ("--transfer-syntax",),
        str | None,
        None,
        metavar="UID",
        help={
            "export": "Convert every instance to this transfer syntax, e.g. "
            "1.2.840.10008.1.2.1 (Explicit VR Little Endian); by default they are "
            "copied as stored."
        },
    ),
    # export, pull and push: which instances (localdicom/selection.py); pull and push: to or
    # from where, and how
    Option(
        "studies",
        ("--study",),
        tuple[str, ...],
        (),
        multiple=True,
        metavar="UID",
        help=_moving("A study to include (repeatable)."),
    ),
    Option(
        "series",
        ("--series",),
        tuple[str, ...],
        (),
        multiple=True,
        metavar="UID",
        help=_moving("A series to include (repeatable)."),
    ),
    Option(
        "queries",
        ("--query",),
        tuple[tuple[str, str], ...],
        (),
        type=KeyValue(),
        multiple=True,
        metavar="KEY=VALUE",
        help=_moving(
            "A QIDO-RS condition every instance must meet, e.g. Modality=CT, "
            "StudyDate=20240101-20241231, PatientName=DOE^* (repeatable)."
        ),
    ),
    Option(
        "everything",
        ("--all",),
        bool,
        False,
        is_flag=True,
        help=_moving("Everything (when nothing else is named)."),
    ),
    Option(
        "jobs",
        ("-j", "--jobs"),
        int,
        4,
        type=click.IntRange(min=1),
        show_default=True,
        help={
            "pull": "Instances fetched at once (DICOMweb).",
            "push": "STOW-RS requests at once (DICOMweb).",
        },
    ),
    Option(
        "batch_bytes",
        ("--batch-bytes",),
        int,
        "20M",
        type=ByteSize(),
        show_default=True,
        help={
            "push": "Largest STOW-RS request (instances are grouped up to it; a bigger one "
            "goes alone): far under the 1 to 2 GB the cloud services accept, and small "
            "enough that --jobs requests keep the remote busy."
        },
    ),
    Option(
        "move_ae",
        ("--move-ae",),
        str | None,
        None,
        type=AETitle(),
        help={
            "pull": "From a dicom:// remote that offers no C-GET: C-MOVE to this AE title, a "
            "'localdicom serve ARCHIVE --dicom-port' the remote knows by it."
        },
    ),
    Option(
        "follow",
        ("--follow",),
        bool,
        False,
        is_flag=True,
        help={
            "push": "After the first pass keep running: read the archive's change feed and "
            "push each study once it had no change for --stable-seconds; deletions are not "
            "sent. Stop with Ctrl-C or SIGTERM; a restart reads on from where it stopped."
        },
    ),
    Option(
        "dry_run",
        ("-n", "--dry-run"),
        bool,
        False,
        is_flag=True,
        help=_both("List what would move, and move nothing."),
    ),
    Option(
        "remote_token",
        ("--token",),
        str | None,
        None,
        envvar="LOCALDICOM_REMOTE_TOKEN",
        help=_both("Bearer token for the remote (e.g. $(gcloud auth print-access-token))."),
    ),
    Option(
        "user",
        ("--user",),
        str | None,
        None,
        envvar="LOCALDICOM_REMOTE_USER",
        help=_both("User for HTTP Basic; without --user or --token, ~/.netrc is read."),
    ),
    Option(
        "password",
        ("--password",),
        str | None,
        None,
        envvar="LOCALDICOM_REMOTE_PASSWORD",
        help=_both("Password for HTTP Basic (better in the environment than on the line)."),
    ),
    Option(
        "headers",
        ("-H", "--header"),
        tuple[str, ...],
        (),
        multiple=True,
        metavar="'NAME: VALUE'",
        help=_both(
            "An HTTP header sent with every request (repeatable); its value is kept secret."
        ),
    ),
    Option(
        "ca_file",
        ("--ca-file",),
        Path | None,
        None,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help=_both("Certificates (PEM) to verify the remote's TLS certificate with."),
    ),
    Option(
        "insecure_tls",
        ("--insecure-tls",),
        bool,
        False,
        is_flag=True,
        help=_both("Do not verify the remote's TLS certificate (a test server only)."),
    ),
)


def options(command: str) -> Callable[[F], F]:
    """Decorate a click command with its options from :data:`OPTIONS`, in table order."""
    chosen = [option for option in OPTIONS if command in option.commands]

    def decorate(function: F) -> F:
        for option in reversed(chosen):  # click lists the decorator applied last first
            function = option.click_option(command)(function)
        return function

    return decorate


def _settings_class() -> type:
    """Settings: the archive, then each serve option the server acts on, with its default."""
    fields: list[Any] = [("archive", Path)]
    fields += [
        (option.name, option.annotation, field(default=option.value))
        for option in OPTIONS
        if "serve" in option.commands and option.in_settings
    ]
    namespace = {
        "__module__": __name__,
        "__doc__": "How one server runs: ``localdicom serve`` fills it from its options, "
        "and a Settings built in code has the same defaults. None in the STOW-RS limits "
        "(max_request_bytes, max_part_bytes, upload_timeout): no limit.",
    }
    return make_dataclass("Settings", fields, frozen=True, namespace=namespace)


Settings = _settings_class()
