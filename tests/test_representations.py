"""The representations of issue 17 items 7, 8 and 9, each against pydicom's reading of the
files stored:

* XML (``application/dicom+xml``, PS3.19 Native DICOM Model): metadata as multipart/related,
  one instance a part (PS3.18 Table 10.4.4-1), or a single part for one instance (10.4.4);
  QIDO-RS results, one match a part (10.6.3.2); the STOW-RS response (10.5.3), also to the
  ``Accept: application/dicom+xml`` that dcm4che's ``stowrs`` sends;
* the bulk data of studies, series and instances: the instance resources asked as
  ``multipart/related; type="application/octet-stream"`` (PS3.18 10.4.4, Annex B.10) and the
  Bulkdata resources (Table 10.3-2), each part with its BulkDataURI as Content-Location
  (10.4.3.3.5), as the BulkDataURI's own answer has it too;
* the ``accept`` and ``charset`` query parameters (PS3.18 8.3.3.1, 8.3.3.2).

Real clients where they can: curl and dicomweb-client against a live server.
"""

from __future__ import annotations

import io
import json
import subprocess
import urllib.request
import xml.etree.ElementTree as ET
from email.message import Message
from pathlib import Path
from typing import Any

import pydicom
import pytest
from aiohttp.test_utils import make_mocked_request
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.data import get_charset_files, get_testdata_file

from localdicom.dicom.dicomxml import NAMESPACE
from localdicom.web.negotiation import query_values

NS = {"d": NAMESPACE}
XML_PARTS = 'multipart/related; type="application/dicom+xml"'
OCTET_PARTS = 'multipart/related; type="application/octet-stream"'
CT = get_testdata_file("CT_small.dcm")  # private tags, inline and bulk OB, native pixels
J2K = get_testdata_file("emri_small_jpeg_2k_lossless.dcm")  # 10 frames, JPEG 2000
BIG_ENDIAN = get_testdata_file("MR_small_bigendian.dcm")
PLAN = get_testdata_file("rtplan.dcm")  # sequences, a person name of four components
JAPANESE = get_charset_files("chrH31.dcm")[0]  # a name in three component groups
DEFLATED = get_testdata_file("image_dfl.dcm")  # bulk values parsed out, not read by offset


def read(path: str | Path) -> pydicom.Dataset:
    return pydicom.dcmread(path)


def instance_path(ds: pydicom.Dataset) -> str:
    series = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    return f"{series}/instances/{ds.SOPInstanceUID}"


def split_multipart(content_type: str, body: bytes) -> list[tuple[Message, bytes]]:
    """The parts of a multipart body: each one's header fields and bytes (RFC 2046 5.1)."""
    header = Message()
    header["Content-Type"] = content_type
    delimiter = b"--" + header.get_param("boundary").encode()
    chunks = (b"\r\n" + body).split(b"\r\n" + delimiter)
    assert chunks[-1].startswith(b"--"), "no close delimiter"
    parts = []
    for chunk in chunks[1:-1]:
        head, _, data = chunk.partition(b"\r\n\r\n")
        fields = Message()
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            fields[name.strip()] = value.strip()
        parts.append((fields, data))
    return parts


def xml_attribute(node: ET.Element, keyword: str) -> ET.Element:
    found = node.find(f"d:DicomAttribute[@keyword='{keyword}']", NS)
    assert found is not None, keyword
    return found


def first_value(node: ET.Element, keyword: str) -> str:
    return xml_attribute(node, keyword).find("d:Value", NS).text


@pytest.fixture
async def stored(client):
    """The in-process server with the files above stored."""
    for path in (CT, J2K, BIG_ENDIAN, PLAN, JAPANESE, DEFLATED):
        body = Path(path).read_bytes()
        response = await client.post(
            "/studies", data=body, headers={"Content-Type": "application/dicom"}
        )
        assert response.status == 200, await response.text()
    return client


async def get(client, path: str, accept: str | None = None, **headers: str):
    if accept is not None:
        headers["Accept"] = accept
    response = await client.get(path, headers=headers)
    return response, await response.read()


# XML: metadata ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CT, PLAN, JAPANESE], ids=lambda p: Path(p).name)
async def test_series_metadata_in_xml_one_instance_per_part(stored, path):
    ds = read(path)
    series = instance_path(ds).rsplit("/instances/", 1)[0]
    response, body = await get(stored, f"{series}/metadata", XML_PARTS)
    assert response.status == 200, body
    assert response.content_type == "multipart/related"
    assert response.headers["Content-Type"].count('type="application/dicom+xml"') == 1
    (part,) = split_multipart(response.headers["Content-Type"], body)
    assert part[0]["Content-Type"] == "application/dicom+xml"
    root = ET.fromstring(part[1])
    assert root.get("{http://www.w3.org/XML/1998/namespace}space") == "preserve"
    assert first_value(root, "SOPInstanceUID") == ds.SOPInstanceUID
    top_level = {elem.tag for elem in ds if elem.tag.element != 0}
    assert len(root.findall("d:DicomAttribute", NS)) == len(top_level)


async def test_person_name_groups_and_components_in_xml(stored):
    ds = read(JAPANESE)
    response, body = await get(stored, f"{instance_path(ds)}/metadata", "application/dicom+xml")
    assert response.status == 200 and response.content_type == "application/dicom+xml"
    name = xml_attribute(ET.fromstring(body), "PatientName").find("d:PersonName", NS)
    groups = ds.PatientName.components  # alphabetic, ideographic, phonetic
    for group, text in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=True):
        family, given = text.split("^")[:2]
        assert name.find(f"d:{group}/d:FamilyName", NS).text == family
        assert name.find(f"d:{group}/d:GivenName", NS).text == given


async def test_sequences_in_xml(stored):
    ds = read(PLAN)
    response, body = await get(stored, f"{instance_path(ds)}/metadata", XML_PARTS)
    (part,) = split_multipart(response.headers["Content-Type"], body)
    root = ET.fromstring(part[1])
    sequence = xml_attribute(root, "FractionGroupSequence")
    items = sequence.findall("d:Item", NS)
    assert len(items) == len(ds.FractionGroupSequence)
    beams = xml_attribute(items[0], "ReferencedBeamSequence").findall("d:Item", NS)
    expected = ds.FractionGroupSequence[0].ReferencedBeamSequence
    assert [first_value(b, "ReferencedBeamNumber") for b in beams] == [
        str(item.ReferencedBeamNumber) for item in expected
    ]


async def test_bulk_data_in_xml_resolves_to_the_value(stored):
    """A BulkData uri (PS3.19 A.1.5) is the BulkDataURI: it gives the element's value."""
    ds = read(CT)
    response, body = await get(stored, f"{instance_path(ds)}/metadata", "application/dicom+xml")
    root = ET.fromstring(body)
    uri = root.find("d:DicomAttribute[@tag='7FE00010']/d:BulkData", NS).get("uri")
    private = root.find("d:DicomAttribute[@tag='00430029'][@privateCreator]", NS)
    assert private.get("privateCreator") == ds.private_block(0x0043, "GEMS_PARM_01").private_creator
    assert private.find("d:BulkData", NS) is not None
    path = uri.split("/", 3)[3]
    response, data = await get(stored, "/" + path, "application/octet-stream")
    assert response.status == 200 and data == ds.PixelData


async def test_xml_metadata_has_its_own_etag(stored):
    ds = read(CT)
    path = f"{instance_path(ds)}/metadata"
    json_response, _ = await get(stored, path, "application/dicom+json")
    xml_response, _ = await get(stored, path, XML_PARTS)
    assert json_response.headers["ETag"] != xml_response.headers["ETag"]
    again, body = await get(
        stored, path, XML_PARTS, **{"If-None-Match": xml_response.headers["ETag"]}
    )
    assert again.status == 304 and body == b""
    json_again, _ = await get(
        stored, path, "application/dicom+json", **{"If-None-Match": xml_response.headers["ETag"]}
    )
    assert json_again.status == 200


async def test_study_metadata_as_a_single_xml_part_is_406(stored):
    """PS3.18 10.4.4: single part media types are for resources of one item."""
    ds = read(CT)
    response, body = await get(
        stored, f"/studies/{ds.StudyInstanceUID}/metadata", "application/dicom+xml"
    )
    assert response.status == 406
    assert XML_PARTS in body.decode()


# XML: QIDO-RS and STOW-RS -----------------------------------------------------------------


async def test_qido_in_xml_one_match_per_part(stored):
    response, body = await get(stored, "/studies?includefield=PatientName", XML_PARTS)
    assert response.status == 200, body
    parts = split_multipart(response.headers["Content-Type"], body)
    found = {first_value(ET.fromstring(data), "StudyInstanceUID") for _, data in parts}
    files = (CT, J2K, BIG_ENDIAN, PLAN, JAPANESE, DEFLATED)
    assert found == {read(path).StudyInstanceUID for path in files}
    assert all(fields["Content-Type"] == "application/dicom+xml" for fields, _ in parts)


async def test_qido_in_xml_pages_warn_and_no_match_is_no_part(stored):
    response, body = await get(stored, "/studies?limit=2", XML_PARTS)
    assert len(split_multipart(response.headers["Content-Type"], body)) == 2
    assert "additional results" in response.headers["Warning"]
    response, body = await get(stored, "/studies?PatientID=nobody", XML_PARTS)
    assert response.status == 200
    assert split_multipart(response.headers["Content-Type"], body) == []


async def test_stow_answers_in_xml_when_asked(client):
    ds = read(CT)
    response = await client.post(
        "/studies",
        data=Path(CT).read_bytes(),
        headers={"Content-Type": "application/dicom", "Accept": "application/dicom+xml"},
    )
    body = await response.read()
    assert response.status == 200 and response.content_type == "application/dicom+xml"
    root = ET.fromstring(body)
    item = xml_attribute(root, "ReferencedSOPSequence").find("d:Item", NS)
    assert first_value(item, "ReferencedSOPInstanceUID") == ds.SOPInstanceUID
    assert first_value(item, "ReferencedSOPClassUID") == ds.SOPClassUID
    assert first_value(root, "RetrieveURL").endswith(f"/studies/{ds.StudyInstanceUID}")


async def test_stow_failure_answer_in_xml(client):
    truncated = Path(CT).read_bytes()[:5000]
    response = await client.post(
        "/studies",
        data=truncated,
        headers={"Content-Type": "application/dicom", "Accept": "application/dicom+xml"},
    )
    assert response.status == 409 and response.content_type == "application/dicom+xml"
    item = xml_attribute(ET.fromstring(await response.read()), "FailedSOPSequence")
    assert first_value(item.find("d:Item", NS), "FailureReason") == str(0xC000)
    assert (
        first_value(item.find("d:Item", NS), "ReferencedSOPInstanceUID") == read(CT).SOPInstanceUID
    )
    assert "truncated" in response.headers["Warning"]


# bulk data of instances (octet-stream) ----------------------------------------------------


def bulk_uris(metadata: dict[str, Any]) -> list[str]:
    """Every BulkDataURI of one instance's DICOM JSON, in tag order, items included."""
    uris = []
    for key in sorted(metadata):
        element = metadata[key]
        if "BulkDataURI" in element:
            uris.append(element["BulkDataURI"])
        for item in element.get("Value", []) if element.get("vr") == "SQ" else []:
            uris += bulk_uris(item)
    return uris


async def metadata_of(client, ds: pydicom.Dataset) -> dict[str, Any]:
    _, body = await get(client, f"{instance_path(ds)}/metadata", "application/dicom+json")
    return json.loads(body)[0]


@pytest.mark.parametrize("level", ["study", "series", "instance"])
@pytest.mark.parametrize("form", ["instances as octet-stream", "bulkdata"])
async def test_bulk_data_of_a_resource_each_part_located_by_its_bulk_data_uri(stored, level, form):
    ds = read(CT)
    path = {
        "study": f"/studies/{ds.StudyInstanceUID}",
        "series": f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}",
        "instance": instance_path(ds),
    }[level]
    path += "/bulkdata" if form == "bulkdata" else ""
    response, body = await get(stored, path, OCTET_PARTS)
    assert response.status == 200, body
    parts = split_multipart(response.headers["Content-Type"], body)
    locations = [fields["Content-Location"] for fields, _ in parts]
    assert locations == bulk_uris(await metadata_of(stored, ds))
    for location, (fields, data) in zip(locations, parts, strict=True):
        assert fields.get_content_type() == "application/octet-stream"
        tag = int(location.rsplit("/", 1)[1], 16)
        assert data == ds[tag].value  # little endian file: the bytes as stored


async def test_compressed_pixel_data_comes_decoded(stored):
    """octet-stream is uncompressed bulk data (PS3.18 8.7.3.3.1): all ten JPEG 2000 frames
    decoded, one after the other, as pydicom's pixel_array has them."""
    ds = read(J2K)
    response, body = await get(stored, instance_path(ds), OCTET_PARTS)
    assert response.status == 200, body
    parts = split_multipart(response.headers["Content-Type"], body)
    by_location = {fields["Content-Location"].rsplit("/", 1)[1]: data for fields, data in parts}
    pixels = ds.pixel_array.astype(ds.pixel_array.dtype.newbyteorder("<"))
    assert by_location["7FE00010"] == pixels.tobytes()
    assert len(by_location["7FE00010"]) == 10 * ds.Rows * ds.Columns * 2


async def test_deflated_instance_bulk_data(stored):
    """A deflated file's values are parsed out (its offsets are of the compressed bytes)."""
    ds = read(DEFLATED)
    response, body = await get(stored, f"{instance_path(ds)}/bulkdata", OCTET_PARTS)
    parts = split_multipart(response.headers["Content-Type"], body)
    by_location = {fields["Content-Location"].rsplit("/", 1)[1]: data for fields, data in parts}
    assert by_location == {"7FE00010": ds.PixelData}


async def test_bulk_data_as_stored_only_where_it_is_uncompressed(stored):
    ct, j2k = read(CT), read(J2K)
    response, _ = await get(stored, instance_path(ct), OCTET_PARTS + "; transfer-syntax=*")
    assert response.status == 200
    response, body = await get(stored, instance_path(j2k), OCTET_PARTS + "; transfer-syntax=*")
    assert response.status == 406 and b"available as" in body


async def test_big_endian_bulk_data_comes_in_little_endian(stored):
    """octet-stream is little endian (PS3.18 8.7.3.3.1): a big endian instance's values are
    swapped by VR, so its pixels are pydicom's pixel_array in little endian."""
    ds = read(BIG_ENDIAN)
    for path in (f"{instance_path(ds)}/bulkdata", instance_path(ds)):
        response, body = await get(stored, path, OCTET_PARTS)
        assert response.status == 200, body
        parts = split_multipart(response.headers["Content-Type"], body)
        by_location = {fields["Content-Location"].rsplit("/", 1)[1]: data for fields, data in parts}
        pixels = ds.pixel_array.astype(ds.pixel_array.dtype.newbyteorder("<"))
        assert by_location == {"7FE00010": pixels.tobytes()}
    response, body = await get(stored, instance_path(ds), OCTET_PARTS + "; transfer-syntax=*")
    assert response.status == 406  # as stored would be big endian: not octet-stream


async def test_a_bulk_data_uri_answer_names_itself(stored):
    """PS3.18 10.4.3.3.5: bulk data in a multipart answer carries its Content-Location, also
    compressed Pixel Data, which comes one frame a part (each part the same element's)."""
    ds = read(CT)
    uri = (await metadata_of(stored, ds))["00431029"]["BulkDataURI"]
    response, body = await get(stored, "/" + uri.split("/", 3)[3], OCTET_PARTS)
    ((fields, data),) = split_multipart(response.headers["Content-Type"], body)
    assert fields["Content-Location"] == uri
    assert data == ds.private_block(0x0043, "GEMS_PARM_01")[0x29].value
    ds = read(J2K)
    uri = (await metadata_of(stored, ds))["7FE00010"]["BulkDataURI"]
    response, body = await get(stored, "/" + uri.split("/", 3)[3], OCTET_PARTS)
    parts = split_multipart(response.headers["Content-Type"], body)
    assert [fields["Content-Location"] for fields, _ in parts] == [uri] * 10


# the accept and charset query parameters --------------------------------------------------

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/webp,*/*;q=0.8"


async def test_accept_parameter_wins_over_the_header(stored):
    ds = read(CT)
    response, body = await get(stored, f"{instance_path(ds)}/thumbnail?accept=image/png", BROWSER)
    assert response.status == 200 and response.content_type == "image/png"
    assert Image.open(io.BytesIO(body)).format == "PNG"
    path = f"{instance_path(ds)}/metadata?accept=application/dicom%2Bxml"
    response, body = await get(stored, path, "application/dicom+json")
    assert response.content_type == "application/dicom+xml"
    assert first_value(ET.fromstring(body), "SOPInstanceUID") == ds.SOPInstanceUID


async def test_accept_parameter_holds_a_plus_and_form_spaces(stored):
    ds = read(CT)
    study = f"/studies/{ds.StudyInstanceUID}"
    response, body = await get(stored, f"{study}/metadata?accept=application/dicom+xml")
    assert response.status == 406  # a study's metadata in XML is multipart only
    query = 'accept=multipart/related;+type="application/dicom%2Bxml"'
    response, body = await get(stored, f"{study}/metadata?{query}")
    assert response.status == 200
    assert len(split_multipart(response.headers["Content-Type"], body)) == 1


@pytest.mark.parametrize(
    ("path", "wanted"),
    [("", "application/pdf"), ("", "image/png"), ("/metadata", "text/html")],
)
async def test_accept_parameter_naming_nothing_available_is_406(stored, path, wanted):
    """What the parameter names decides: a browser's */* does not bring back the default."""
    ds = read(CT)
    response, body = await get(
        stored, f"/studies/{ds.StudyInstanceUID}{path}?accept={wanted}", BROWSER
    )
    text = body.decode()
    assert response.status == 406, text
    assert wanted in text and "accept query parameter" in text and "available as" in text


async def test_qido_takes_accept_and_charset_as_parameters_not_keys(stored):
    ds = read(CT)
    path = f"/studies?PatientID={ds.PatientID}&accept=application/dicom%2Bjson&charset=utf-8"
    response, body = await get(stored, path)
    assert response.status == 200, body
    assert [r["0020000D"]["Value"][0] for r in json.loads(body)] == [ds.StudyInstanceUID]


@pytest.mark.parametrize(
    ("charset", "status"),
    [("utf-8", 200), ("UTF-8", 200), ("iso-8859-1,utf-8;q=0.5", 200), ("iso-8859-1", 400)],
)
async def test_charset_parameter_must_admit_utf_8(stored, charset, status):
    """PS3.18 8.3.3.2: a character set the server does not support is a 400."""
    response, body = await get(stored, f"/studies?charset={charset}")
    assert response.status == status, body
    if status == 400:
        assert b"UTF-8" in body


@pytest.mark.parametrize(
    ("query", "values"),
    [
        ("accept=application/dicom+xml", ["application/dicom+xml"]),
        ("accept=application/dicom%2Bxml", ["application/dicom+xml"]),
        ('accept=multipart/related;+type="image/png"', ['multipart/related; type="image/png"']),
        ("accept=image/png,+image/jpeg;q=0.5", ["image/png, image/jpeg;q=0.5"]),
        ("accept=a/b&x=1&accept=c/d&accept=", ["a/b", "c/d"]),
        ("Accept=a/b", []),
    ],
)
def test_query_values_keep_a_plus_in_media_types(query, values):
    assert query_values(make_mocked_request("GET", f"/x?{query}"), "accept") == values


# real clients ------------------------------------------------------------------------------


def stow_as_dcm4che(url: str, path: str) -> tuple[int, str, bytes]:
    """What dcm4che's stowrs sends: multipart/related parts, Accept: application/dicom+xml."""
    boundary = "dcm4che-boundary"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + Path(path).read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    request = urllib.request.Request(
        f"{url}/studies",
        data=body,
        method="POST",
        headers={"Content-Type": content_type, "Accept": "application/dicom+xml"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, response.headers["Content-Type"], response.read()


def curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    """curl's answer: the status, the header fields (names lower-cased) and the body."""
    done = subprocess.run(
        ["curl", "-sS", "-D", "-", *args], capture_output=True, check=True, timeout=60
    )
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), fields, body


@pytest.mark.external
def test_real_clients(live_server):
    """dcm4che's STOW request (with urllib), curl for XML metadata and ?accept= links,
    dicomweb-client for the bulk data of a study."""
    url = live_server.url
    status, content_type, body = stow_as_dcm4che(url, J2K)
    assert status == 200 and content_type == "application/dicom+xml"
    ds = read(J2K)
    item = xml_attribute(ET.fromstring(body), "ReferencedSOPSequence").find("d:Item", NS)
    assert first_value(item, "ReferencedSOPInstanceUID") == ds.SOPInstanceUID
    study = f"{url}/studies/{ds.StudyInstanceUID}"

    status, fields, body = curl("-H", f"Accept: {XML_PARTS}", f"{study}/metadata")
    ((_, document),) = split_multipart(fields["content-type"], body)
    assert status == 200 and first_value(ET.fromstring(document), "NumberOfFrames") == "10"
    status, fields, body = curl(f"{url}{instance_path(ds)}/thumbnail?accept=image/png")
    assert status == 200 and fields["content-type"] == "image/png"
    assert body.startswith(b"\x89PNG")
    status, fields, body = curl(f"{study}?accept=application/zip")
    assert status == 200 and fields["content-type"] == "application/zip"
    assert body.startswith(b"PK\x03\x04")
    status, _, body = curl(f"{url}/studies?charset=latin-1")
    assert status == 400 and b"UTF-8" in body

    parts = DICOMwebClient(url).retrieve_bulkdata(f"{study}/bulkdata")
    assert ds.pixel_array.astype(ds.pixel_array.dtype.newbyteorder("<")).tobytes() in parts
