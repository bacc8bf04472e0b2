// The studies page: search (QIDO-RS), sort and pages (orderby, limit, offset; the count from
// X-Total-Count), and an upload area (STOW-RS). The search lives in the page's URL, so every
// list can be bookmarked. No build step.
"use strict";

const PAGE_SIZE = 50;
const FIELDS = "00081030,00080061,00201206,00201208";
const TEXT_KEYS = ["PatientName", "PatientID", "ModalitiesInStudy", "StudyDescription"];
const DEFAULT_SORT = "-StudyDate";
const viewer = document.querySelector('meta[name="localdicom-viewer"]').content;
const form = document.getElementById("search");

function state() {
  const params = new URLSearchParams(location.search);
  return { params, sort: params.get("sort") || DEFAULT_SORT,
    page: Math.max(1, parseInt(params.get("page") || "1", 10) || 1) };
}

// A word without wildcards matches anywhere in the value, as people expect of a search box.
function pattern(text) {
  return /[*?]/.test(text) ? text : `*${text}*`;
}

function qidoQuery({ params, sort, page }) {
  const query = new URLSearchParams({ includefield: FIELDS, limit: PAGE_SIZE,
    offset: (page - 1) * PAGE_SIZE });
  const order = sort.startsWith("-") ? [sort, "-StudyTime"] : [sort, "StudyTime"];
  query.set("orderby", order.join(","));
  for (const key of TEXT_KEYS) {
    const text = (params.get(key) || "").trim();
    if (!text) continue;
    query.set(key, key === "PatientName" || key === "StudyDescription" ? pattern(text) : text);
  }
  const from = (params.get("from") || "").replaceAll("-", "");
  const to = (params.get("to") || "").replaceAll("-", "");
  if (from || to) query.set("StudyDate", from === to ? from : `${from}-${to}`);
  return query;
}

function studyRow(tbody, study) {
  const uid = dicomValue(study, "0020000D");
  const row = tbody.insertRow();
  row.dataset.studyUid = uid;
  const href = `ui/${studyPath(uid)}`;
  const img = element("img", { className: "thumbnail", alt: "", loading: "lazy",
    src: `${studyPath(uid)}/thumbnail` });
  img.onerror = () => { img.style.visibility = "hidden"; };
  row.insertCell().append(img);
  const name = dicomValue(study, "00100010") || "(no name)";
  row.insertCell().append(element("a", { href, textContent: name }));
  for (const tag of ["00100020", "00080020", "00081030", "00080061"]) {
    row.insertCell().textContent = dicomValue(study, tag);
  }
  for (const tag of ["00201206", "00201208"]) {
    const cell = row.insertCell();
    cell.className = "number";
    cell.textContent = dicomValue(study, tag);
  }
  const open = row.insertCell();
  if (viewer) {
    open.append(element("a", { href: `${viewer}viewer?StudyInstanceUIDs=${encodeURIComponent(uid)}`,
      textContent: "Open in OHIF" }));
  }
  row.addEventListener("click", (event) => {
    if (!event.target.closest("a")) location.href = href;
  });
}

function showSort(sort) {
  for (const th of document.querySelectorAll("th[data-sort]")) {
    const key = th.dataset.sort;
    th.setAttribute("aria-sort", sort === key ? "ascending" : sort === `-${key}` ? "descending" : "none");
  }
}

function showRange(current, shown, total) {
  const first = (current.page - 1) * PAGE_SIZE;
  const known = total !== null;
  const noun = total === 1 ? "study" : "studies";
  document.getElementById("count").textContent = known ? `${total.toLocaleString("en")} ${noun}` : "";
  document.getElementById("range").textContent = shown ?
    `${first + 1}–${first + shown}${known ? ` of ${total.toLocaleString("en")}` : ""}` : "";
  document.getElementById("previous").disabled = current.page <= 1;
  document.getElementById("next").disabled = known ? first + shown >= total : shown < PAGE_SIZE;
}

async function loadStudies() {
  const current = state();
  fillForm(current.params);
  showSort(current.sort);
  const tbody = document.querySelector("#studies tbody");
  let studies = [];
  let total = null;
  try {
    const { body, response } = await getJson(`studies?${qidoQuery(current)}`);
    studies = body;
    const count = response.headers.get("X-Total-Count");
    total = count === null ? null : parseInt(count, 10);
  } catch (error) {
    document.getElementById("empty").textContent = `The search failed: ${error.message}`;
  }
  tbody.replaceChildren();
  studies.forEach((study) => studyRow(tbody, study));
  document.getElementById("empty").hidden = studies.length > 0;
  showRange(current, studies.length, total);
  performance.mark("localdicom-rows");
  document.body.dataset.loaded = String(Date.now());
}

function fillForm(params) {
  for (const input of form.elements) {
    if (input.name) input.value = params.get(input.name) || "";
  }
}

// Changing the search goes to a new URL (history), so Back returns to the previous list.
function navigate(changes) {
  const params = new URLSearchParams(location.search);
  for (const [key, value] of Object.entries(changes)) {
    if (value === "" || value === null) params.delete(key);
    else params.set(key, value);
  }
  history.pushState(null, "", `${location.pathname}${params.size ? `?${params}` : ""}`);
  loadStudies();
}

function setUpSearch() {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const changes = { page: null };
    for (const input of form.elements) if (input.name) changes[input.name] = input.value.trim();
    navigate(changes);
  });
  form.addEventListener("reset", (event) => {
    event.preventDefault();
    const changes = { page: null };
    for (const input of form.elements) if (input.name) changes[input.name] = null;
    navigate(changes);
  });
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.querySelector("button").addEventListener("click", () => {
      const key = th.dataset.sort;
      const { sort } = state();
      navigate({ sort: sort === key ? `-${key}` : key, page: null });
    });
  }
  document.getElementById("previous").addEventListener("click", () => navigate({ page: state().page - 1 }));
  document.getElementById("next").addEventListener("click", () => navigate({ page: state().page + 1 }));
  window.addEventListener("popstate", loadStudies);
}

setUpSearch();
loadStudies();
window.addEventListener("localdicom:stored", loadStudies);
