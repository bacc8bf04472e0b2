"""The three samples and a few of pydicom's test files stored on a live server through
STOW-RS, over ``requests``, and a check that it serves exactly them, byte for byte."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import requests
from pydicom.data import get_testdata_file

from tests.helpers import SAMPLES

#: A few of pydicom's test files: native, encapsulated, multi-frame, deflated, no pixel data.
PYDICOM_FILES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "JPEG2000.dcm",
    "emri_small.dcm",
    "SC_rgb_rle_2frame.dcm",
    "image_dfl.dcm",
    "rtplan.dcm",
)
DICOM_JSON = "application/dicom+json"
AS_STORED = "application/dicom; transfer-syntax=*"


@dataclass(frozen=True)
class Instance:
    """A file to store and the UIDs pydicom reads from it."""

    file: Path
    study: str
    series: str
    sop: str

    @classmethod
    def of(cls, file: Path) -> Instance:
        ds = pydicom.dcmread(file, stop_before_pixels=True)
        return cls(file, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)

    @property
    def url_path(self) -> str:
        return f"/studies/{self.study}/series/{self.series}/instances/{self.sop}"

    def dcm(self, archive: Path) -> Path:
        return archive / self.study / self.series / f"{self.sop}.dcm"

    def sidecar(self, archive: Path) -> Path:
        return self.dcm(archive).with_suffix(".json")


def files_to_store() -> list[Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pydicom_files = [Path(get_testdata_file(name)) for name in PYDICOM_FILES]
    return sorted(SAMPLES.glob("*.dcm")) + pydicom_files


# HTTP ------------------------------------------------------------------------------------


def get(server, path: str, accept: str) -> requests.Response:
    response = requests.get(server.url + path, headers={"Accept": accept}, timeout=30)
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response


def stow(server, file: Path) -> None:
    response = requests.post(
        server.url + "/studies",
        data=file.read_bytes(),
        headers={"Content-Type": "application/dicom", "Accept": DICOM_JSON},
        timeout=30,
    )
    assert response.status_code == 200, (file.name, response.status_code, response.text)


def search(server, level: str) -> list[dict[str, Any]]:
    """Every QIDO match at ``level`` (studies, series, instances), in a stable order."""
    matches = get(server, f"/{level}", DICOM_JSON).json()
    return sorted(matches, key=lambda match: json.dumps(match, sort_keys=True))


def listed_sops(server) -> set[str]:
    return {match["00080018"]["Value"][0] for match in search(server, "instances")}


def assert_serves(server, instances: list[Instance]) -> None:
    """QIDO lists exactly ``instances`` and each comes back byte for byte."""
    assert len(search(server, "studies")) == len({i.study for i in instances})
    assert len(search(server, "series")) == len({i.series for i in instances})
    assert listed_sops(server) == {i.sop for i in instances}
    for instance in instances:
        assert get(server, instance.url_path, AS_STORED).content == instance.file.read_bytes()


def log_since(server, offset: int) -> str:
    return server.log.read_bytes()[offset:].decode("utf-8", "replace")


def store_all(server) -> list[Instance]:
    """The three samples and a few pydicom test files, stored through STOW-RS."""
    instances = [Instance.of(file) for file in files_to_store()]
    assert len({i.sop for i in instances}) == len(instances), "test files share a SOP UID"
    for instance in instances:
        stow(server, instance.file)
    assert_serves(server, instances)
    return instances


def sample(instances: list[Instance], name: str) -> Instance:
    return next(i for i in instances if i.file.name == name)
