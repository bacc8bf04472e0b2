// The upload area of the studies page: files and whole folders (drop, or the two inputs),
// sent by STOW-RS, one instance a request (application/dicom), several at a time, with one
// progress bar for all and each failure listed with the reason the server gave (the
// Warning header and the FailureReason of the Store Instances Response, PS3.18 10.5.3).
"use strict";

const PARALLEL = 4;
const FAILURE_REASONS = { 0x0110: "processing failure", 0x0111: "duplicate SOP Instance UID",
  0xa700: "out of resources", 0xa900: "data set does not match SOP class",
  0xc000: "cannot understand" };

// What the Store Instances Response says about failures: FailureReason (0008,1197) of each
// Failed SOP Sequence (0008,1198) item.
function failureReasons(text) {
  try {
    const failed = JSON.parse(text)["00081198"];
    return (failed && failed.Value || []).map((item) => {
      const code = item["00081197"] && item["00081197"].Value[0];
      return code === undefined ? "" : `FailureReason 0x${code.toString(16).toUpperCase()}` +
        (FAILURE_REASONS[code] ? ` (${FAILURE_REASONS[code]})` : "");
    }).filter(Boolean);
  } catch {
    return [];
  }
}

function storeFile(file, onProgress) {
  return new Promise((resolve) => {
    const request = new XMLHttpRequest();
    request.open("POST", "studies");
    request.setRequestHeader("Content-Type", "application/dicom");
    request.setRequestHeader("Accept", "application/dicom+json");
    request.upload.onprogress = (event) => onProgress(event.loaded);
    request.onload = () => {
      const reasons = [request.getResponseHeader("Warning"), ...failureReasons(request.responseText)];
      resolve({ ok: request.status < 300, status: request.status,
        message: reasons.filter(Boolean).join("; ") || request.statusText ||
          request.responseText.trim() });
    };
    request.onerror = () => resolve({ ok: false, status: 0, message: "the server did not answer" });
    request.send(file);
  });
}

async function upload(files) {
  const status = document.getElementById("upload-status");
  const progress = document.getElementById("upload-progress");
  const failuresList = document.getElementById("upload-failures");
  if (!files.length) return;
  const total = files.reduce((sum, file) => sum + file.size, 0) || 1;
  const loaded = new Map();
  let stored = 0;
  let finished = 0;
  const failures = [];
  failuresList.replaceChildren();
  status.dataset.done = "false";
  progress.hidden = false;
  progress.max = total;
  progress.value = 0;
  const show = () => {
    progress.value = [...loaded.values()].reduce((a, b) => a + b, 0);
    status.textContent = `${finished} of ${files.length} files sent, ${stored} stored…`;
  };
  const queue = files.map((file, index) => [file, index]);
  async function worker() {
    while (queue.length) {
      const [file, index] = queue.shift();
      const result = await storeFile(file, (bytes) => { loaded.set(index, bytes); show(); });
      loaded.set(index, file.size);
      finished += 1;
      if (result.ok) stored += 1;
      else failures.push([file.webkitRelativePath || file.name, `${result.status} ${result.message}`]);
      show();
    }
  }
  await Promise.all(Array.from({ length: Math.min(PARALLEL, files.length) }, worker));
  status.textContent = `${stored} of ${files.length} files stored` +
    (failures.length ? `; ${failures.length} not stored:` : ".");
  failuresList.replaceChildren(...failures.map(([name, reason]) =>
    element("li", { textContent: `${name}: ${reason}` })));
  status.dataset.done = "true";
  window.dispatchEvent(new Event("localdicom:stored"));
}

// Every file below dropped folders (FileSystemEntry API; readEntries gives a batch per call).
async function filesOf(entry) {
  if (entry.isFile) return [await new Promise((resolve, reject) => entry.file(resolve, reject))];
  const reader = entry.createReader();
  const found = [];
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!batch.length) return found;
    for (const child of batch) found.push(...await filesOf(child));
  }
}

async function droppedFiles(dataTransfer) {
  const entries = [...dataTransfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry());
  if (!entries.length || entries.some((entry) => !entry)) return [...dataTransfer.files];
  return (await Promise.all(entries.map(filesOf))).flat();
}

function setUpUpload() {
  const drop = document.getElementById("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    upload(await droppedFiles(event.dataTransfer));
  });
  for (const id of ["files", "folder"]) {
    document.getElementById(id).addEventListener("change", (event) => {
      upload([...event.target.files]);
      event.target.value = "";
    });
  }
}

setUpUpload();
