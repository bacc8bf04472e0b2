// The home page: the study list (QIDO-RS) and an upload box (STOW-RS). No build step.
"use strict";

const FIELDS = "00081030,00080061,00201206,00201208";
const viewer = document.querySelector('meta[name="localdicom-viewer"]').content;

function value(study, tag) {
  const element = study[tag];
  if (!element || !element.Value || !element.Value.length) return "";
  const first = element.Value[0];
  if (element.vr === "PN") return (first.Alphabetic || "").replace(/\^/g, " ");
  if (element.vr === "DA" && /^\d{8}$/.test(first)) {
    return `${first.slice(0, 4)}-${first.slice(4, 6)}-${first.slice(6)}`;
  }
  return element.Value.join(", ");
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function studyRow(tbody, study) {
  const uid = value(study, "0020000D");
  const row = tbody.insertRow();
  row.dataset.studyUid = uid;
  const img = document.createElement("img");
  img.className = "thumbnail";
  img.alt = "";
  img.loading = "lazy";
  img.src = `studies/${encodeURIComponent(uid)}/thumbnail`;
  img.onerror = () => { img.style.visibility = "hidden"; };
  row.insertCell().appendChild(img);
  cell(row, value(study, "00100010"));
  cell(row, value(study, "00100020"));
  cell(row, value(study, "00080020"));
  cell(row, value(study, "00081030"));
  cell(row, value(study, "00080061"));
  cell(row, value(study, "00201206"), "number");
  cell(row, value(study, "00201208"), "number");
  const open = row.insertCell();
  if (viewer) {
    const link = document.createElement("a");
    link.href = `${viewer}viewer?StudyInstanceUIDs=${encodeURIComponent(uid)}`;
    link.textContent = "Open in viewer";
    open.appendChild(link);
  }
}

async function loadStudies() {
  const response = await fetch(`studies?includefield=${FIELDS}`, {
    headers: { Accept: "application/dicom+json" },
  });
  const studies = response.status === 204 ? [] : await response.json();
  const tbody = document.querySelector("#studies tbody");
  tbody.replaceChildren();
  studies.forEach((study) => studyRow(tbody, study));
  document.getElementById("empty").hidden = studies.length > 0;
}

// One STOW-RS request per file (Content-Type application/dicom), with upload progress.
function storeFile(file, onProgress) {
  return new Promise((resolve) => {
    const request = new XMLHttpRequest();
    request.open("POST", "studies");
    request.setRequestHeader("Content-Type", "application/dicom");
    request.setRequestHeader("Accept", "application/dicom+json");
    request.upload.onprogress = (event) => onProgress(event.loaded);
    request.onload = () => resolve({ ok: request.status < 300, status: request.status,
      message: request.getResponseHeader("Warning") || request.statusText });
    request.onerror = () => resolve({ ok: false, status: 0, message: "network error" });
    request.send(file);
  });
}

async function upload(files) {
  const status = document.getElementById("upload-status");
  const progress = document.getElementById("upload-progress");
  const total = files.reduce((sum, file) => sum + file.size, 0) || 1;
  let done = 0;
  let stored = 0;
  const failures = [];
  progress.hidden = false;
  progress.max = total;
  for (const file of files) {
    status.textContent = `Storing ${file.name}…`;
    const result = await storeFile(file, (loaded) => { progress.value = done + loaded; });
    done += file.size;
    progress.value = done;
    if (result.ok) stored += 1;
    else failures.push(`${file.name}: ${result.status} ${result.message}`);
  }
  status.textContent = `${stored} of ${files.length} files stored.` +
    (failures.length ? ` Not stored: ${failures.join("; ")}` : "");
  status.dataset.done = "true";
  await loadStudies();
}

function setUpUpload() {
  const drop = document.getElementById("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    upload(Array.from(event.dataTransfer.files));
  });
  document.getElementById("files").addEventListener("change", (event) => {
    upload(Array.from(event.target.files));
  });
}

setUpUpload();
loadStudies();
