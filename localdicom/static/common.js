// What the pages share: reading DICOM JSON (PS3.18 F.2) and asking the server. No build step.
"use strict";

const DICOM_JSON = { Accept: "application/dicom+json" };

function dicomValue(object, tag) {
  const element = object && object[tag];
  if (!element || !element.Value || !element.Value.length) return "";
  const first = element.Value[0];
  if (element.vr === "PN") return (first && first.Alphabetic || "").replace(/\^/g, " ").trim();
  if (element.vr === "DA" && /^\d{8}$/.test(first)) {
    return `${first.slice(0, 4)}-${first.slice(4, 6)}-${first.slice(6)}`;
  }
  if (element.vr === "TM" && /^\d{4}/.test(first)) {
    return `${first.slice(0, 2)}:${first.slice(2, 4)}${first.length >= 6 ? ":" + first.slice(4, 6) : ""}`;
  }
  return element.Value.join(", ");
}

async function getJson(url, headers = DICOM_JSON) {
  const response = await fetch(url, { headers });
  if (response.status === 204) return { body: [], response };
  if (!response.ok) throw new Error(`${response.status} ${(await response.text()).trim()}`);
  return { body: await response.json(), response };
}

function element(tag, properties = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, properties);
  node.append(...children);
  return node;
}

function studyPath(study) {
  return `studies/${encodeURIComponent(study)}`;
}

function seriesPath(study, series) {
  return `${studyPath(study)}/series/${encodeURIComponent(series)}`;
}
