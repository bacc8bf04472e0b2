// The study page: its attributes (QIDO-RS), its series as a grid of thumbnails, and the
// actions on the whole study. No build step.
"use strict";

const viewer = document.querySelector('meta[name="localdicom-viewer"]').content;
const trashOn = document.querySelector('meta[name="localdicom-trash"]').content === "on";
const study = decodeURIComponent(location.pathname.match(/\/ui\/studies\/([^/]+)\/?$/)[1]);
const SHOWN = [
  ["Patient", "00100010"], ["Patient ID", "00100020"], ["Birth date", "00100030"],
  ["Sex", "00100040"], ["Study date", "00080020"], ["Study time", "00080030"],
  ["Description", "00081030"], ["Accession number", "00080050"], ["Study ID", "00200010"],
  ["Referring physician", "00080090"], ["Institution", "00080080"], ["Modalities", "00080061"],
  ["Series", "00201206"], ["Instances", "00201208"], ["Study Instance UID", "0020000D"],
];
const SERIES_FIELDS = "0008103E,00080060,00200011,00201209,00080021";

async function showStudy() {
  const query = new URLSearchParams({ StudyInstanceUID: study, includefield: "all" });
  const { body } = await getJson(`studies?${query}`);
  const attributes = body[0] || {};
  const list = document.getElementById("attributes");
  list.replaceChildren(...SHOWN.flatMap(([label, tag]) => [
    element("dt", { textContent: label }), element("dd", { textContent: dicomValue(attributes, tag) })]));
  const name = dicomValue(attributes, "00100010") || "(no name)";
  const description = dicomValue(attributes, "00081030");
  const title = `${name}${description ? ` — ${description}` : ""}`;
  document.getElementById("title").textContent = title;
  document.getElementById("crumb").textContent = title;
  document.title = `${title} · localdicom`;
  if (viewer) {
    const ohif = document.getElementById("open-ohif");
    ohif.href = `${viewer}viewer?StudyInstanceUIDs=${encodeURIComponent(study)}`;
    ohif.hidden = false;
  }
}

function seriesCard(series) {
  const uid = dicomValue(series, "0020000E");
  const img = element("img", { alt: "", loading: "lazy", src: `${seriesPath(study, uid)}/thumbnail` });
  img.onerror = () => { img.style.visibility = "hidden"; };
  const number = dicomValue(series, "00200011");
  const description = dicomValue(series, "0008103E") || "(no description)";
  const count = Number(dicomValue(series, "00201209")) || 0;
  const meta = element("div", { className: "meta" }, [
    element("strong", { textContent: `${dicomValue(series, "00080060")} ${number ? `#${number}` : ""}` }),
    element("br"), description, element("br"),
    `${count} instance${count === 1 ? "" : "s"}`]);
  const link = element("a", { href: `ui/${seriesPath(study, uid)}`,
    title: `Open series ${description} in the quick viewer` }, [img, meta]);
  const item = element("li", {}, [link]);
  item.dataset.seriesUid = uid;
  return item;
}

async function showSeries() {
  const { body } = await getJson(`${studyPath(study)}/series?includefield=${SERIES_FIELDS}`);
  document.getElementById("series").replaceChildren(...body.map(seriesCard));
  document.getElementById("series-heading").textContent = `Series (${body.length})`;
  if (body.length) {
    const quick = document.getElementById("open-quick");
    quick.href = `ui/${seriesPath(study, dicomValue(body[0], "0020000E"))}`;
    quick.hidden = false;
  }
}

// The downloads are plain links (?accept=, PS3.18 8.3.3.1), so the browser saves the zip
// under the name the server gives it, with its own progress and no copy in memory.
function showDownloads() {
  const zip = `${studyPath(study)}?accept=${encodeURIComponent("application/zip")}`;
  document.getElementById("download-zip").href = zip;
  document.getElementById("download-dicomdir").href = `${zip}&dicomdir=true`;
}

async function deleteStudy() {
  const title = document.getElementById("title").textContent;
  const question = trashOn
    ? `Move the study "${title}" and all its instances to the trash? You can restore it from the Trash page.`
    : `Delete the study "${title}" and all its instances for good? This server keeps no trash (--no-trash).`;
  if (!confirm(question)) return;
  const message = document.getElementById("message");
  const response = await fetch(studyPath(study), { method: "DELETE" });
  if (!response.ok) {
    message.textContent = `Not deleted: ${response.status} ${(await response.text()).trim()}`;
    return;
  }
  for (const control of document.querySelectorAll("#actions a, #actions button")) {
    control.hidden = true;
  }
  message.replaceChildren(trashOn
    ? element("span", {}, ["Moved to the trash; restore it from the ",
      element("a", { href: "ui/trash", textContent: "Trash page" }), "."])
    : "Deleted for good.");
}

document.getElementById("delete").textContent = trashOn ? "Move to the trash…" : "Delete for good…";
document.getElementById("delete").addEventListener("click", deleteStudy);
showDownloads();
Promise.all([showStudy(), showSeries()]).catch((error) => {
  document.getElementById("message").textContent = `Cannot show the study: ${error.message}`;
}).finally(() => { document.body.dataset.loaded = "true"; });
