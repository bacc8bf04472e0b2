"""The ``pull`` and ``push`` commands (registered in cli.py)."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import click

from localdicom import importer
from localdicom.archive import ArchiveBusy
from localdicom.console import EXIT_CODES, Bar
from localdicom.deid import Deidentify, KeyFileError
from localdicom.selection import selection_from
from localdicom.settings import options
from localdicom.transfer.follow import Follow
from localdicom.transfer.options import TransferOptions
from localdicom.transfer.push import push as run_push
from localdicom.transfer.remote import BadRemote, credentials, parse_remote, tls_context
from localdicom.transfer.report import TransferReport

REMOTE = click.argument("remote", metavar="REMOTE")


@click.command("pull", epilog=EXIT_CODES)
@REMOTE
@options("pull")
def pull(remote: str, **chosen: Any) -> int:
    """Copy the selected instances of REMOTE into the archive, as REMOTE stores them.

    REMOTE is a DICOMweb base URL (QIDO-RS, then WADO-RS of each instance) or a DICOM node
    dicom://AE@host:port (C-FIND, then C-GET; C-MOVE with --move-ae). Each instance is
    checked and stored as 'localdicom import' stores it, through the server when one runs
    on the archive. A record in ARCHIVE/.transfers/ makes a re-run fetch only what is
    missing: interrupt it and run it again.

    \b
    Examples:
      localdicom pull http://127.0.0.1:8042/dicom-web --archive ./archive --study 1.2.3
      localdicom pull https://pacs.example.org/dicom-web --archive ./archive \\
          --query PatientID=123 --query StudyDate=20240101-20241231
      localdicom pull dicom://ORTHANC@pacs:4242 --archive ./archive --query Modality=CT
    """
    from localdicom.transfer.pull import pull as run_pull  # pydicom and pynetdicom: here only

    return _run(run_pull, "Pulling", remote, **chosen)


@click.command("push", epilog=EXIT_CODES)
@REMOTE
@options("push")
def push(remote: str, **chosen: Any) -> int:
    """Copy the selected instances of the archive to REMOTE, as they are stored.

    REMOTE is a DICOMweb base URL (STOW-RS in batches of --batch-bytes) or a DICOM node
    dicom://AE@host:port (C-STORE, each instance in its stored transfer syntax, rewritten
    only when the node accepts none). A record in ARCHIVE/.transfers/ makes a re-run send
    only what is new or changed; what the remote answers as a duplicate counts as already
    there.

    \b
    Examples:
      localdicom push https://lab-orthanc/dicom-web --archive ./archive --study 1.2.3 --user me
      localdicom push dicom://ORTHANC@lab-host:4242 --archive ./archive --query Modality=SEG
      localdicom push "$GOOGLE_DICOMWEB" --archive ./archive --all \\
          --token "$(gcloud auth print-access-token)"
      localdicom push http://lab:8042/dicom-web --archive ./archive --all --follow
      localdicom push http://lab:8042/dicom-web --archive ./archive --all \\
          --deidentify --deid-key ~/private/key.json
    """
    choice = Deidentify.chosen(
        chosen.pop("deidentify"),
        chosen.pop("deid_key"),
        chosen.pop("deid_options"),
        chosen.pop("reject_burned_in"),
    )
    follow, stable_seconds = chosen.pop("follow"), chosen.pop("stable_seconds")
    if follow and chosen["dry_run"]:
        raise click.UsageError("--follow keeps sending: it does not go with --dry-run")
    deid = None
    if choice is not None:
        from localdicom.export import Deidentifying  # pydicom: only to de-identify
        from localdicom.transfer.deidentified import PushDeid

        try:
            deidentifier = choice.open([("the archive", chosen["archive"])])
        except KeyFileError as exc:
            raise click.ClickException(str(exc)) from None
        deid = PushDeid(Deidentifying(choice, deidentifier, went="sent as"))
    command = functools.partial(
        run_push, deid=deid, follow=Follow(stable_seconds, _say) if follow else None
    )
    return _run(command, "Pushing", remote, **chosen)


def _say(line: str) -> None:
    """push --follow: what happens, on stderr with the time (the summary goes to stdout at
    the end)."""
    click.echo(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}", err=True)


def _run(
    command: Any,
    label: str,
    remote: str,
    *,
    archive: Path,
    studies: tuple[str, ...],
    series: tuple[str, ...],
    queries: tuple[tuple[str, str], ...],
    everything: bool,
    remote_token: str | None,
    user: str | None,
    password: str | None,
    headers: tuple[str, ...],
    ca_file: Path | None,
    insecure_tls: bool,
    verbose: bool,
    **chosen: Any,
) -> int:
    selection = selection_from(studies, series, queries, everything)
    try:
        address, node, userinfo = parse_remote(remote)
        secrets = credentials(
            address,
            token=remote_token,
            user=user,
            password=password,
            headers=headers,
            from_url=userinfo,
        )
    except BadRemote as exc:
        raise click.BadParameter(str(exc), param_hint="REMOTE") from None
    if label == "Pushing" and not archive.is_dir():
        raise click.BadParameter(f"{archive} is not a folder", param_hint="--archive")
    transfer = TransferOptions(tls=tls_context(ca_file, insecure_tls), **chosen)
    try:
        with Bar(label) as bar:
            report: TransferReport = command(
                address, node, archive, selection, secrets, transfer, bar
            )
    except (importer.CannotImport, ArchiveBusy) as exc:
        raise click.ClickException(secrets.hide(str(exc))) from None
    lines = report.dry_run_lines() if transfer.dry_run else report.lines(verbose=verbose)
    for line in lines:
        click.echo(line)
    return report.exit_code
