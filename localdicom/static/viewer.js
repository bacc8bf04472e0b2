// The quick viewer: the server renders every frame (WADO-RS /rendered, window=center,width per
// PS3.18 8.3.5.1.4), the page only shows them: wheel, arrow keys and the slider move through
// the frames in the order /ui/api/.../frames gives, a drag changes the window, neighbours are
// fetched ahead so that scrolling does not wait. No build step.
"use strict";

const [, STUDY, SERIES] = location.pathname.match(/\/ui\/studies\/([^/]+)\/series\/([^/]+)\/?$/)
  .map(decodeURIComponent);
const AHEAD = 24;        // frames fetched first ahead in the direction of scrolling
const BEHIND = 8;        // and behind; then the rest of the series, nearest first
const PARALLEL = 6;      // requests at once (a browser's connections per host)
const KEPT = 1000;       // compressed frames kept (about 40 kB each), the farthest dropped first
const canvas = document.getElementById("image");
const context = canvas.getContext("2d");
const slider = document.getElementById("slider");

const view = {
  frames: [], range: null, index: 0, direction: 1,
  window: null,          // [center, width], or null: each frame's own (no window parameter)
  shown: null, drawn: 0, firstDrawnAt: null,
};
const cache = new Map(); // "index|window" -> Promise<Blob>, with .index, .key, .start
const queue = [];        // entries waiting for a connection, the most wanted first
let inFlight = 0;

function instancePath(frame) {
  return `${seriesPath(STUDY, SERIES)}/instances/${encodeURIComponent(frame.instance)}`;
}

function windowKey(win) {
  return win ? `${Math.round(win[0])},${Math.round(win[1])}` : "own";
}

function frameUrl(index, win) {
  const frame = view.frames[index];
  const query = win ? `?window=${windowKey(win)},linear` : "";
  return `${instancePath(frame)}/frames/${frame.frame}/rendered${query}`;
}

// A frame's rendered image (JPEG), fetched once per window and kept; it starts when a
// connection is free (pump), the urgent ones first.
function image(index, win = view.window, urgent = false) {
  const key = `${index}|${windowKey(win)}`;
  let entry = cache.get(key);
  if (!entry) {
    let start;
    entry = new Promise((resolve) => { start = resolve; }).then(async () => {
      // the server's default rendered type is JPEG; no Accept header, so that the page's
      // preload of the first frame is this very request
      const response = await fetch(frameUrl(index, win));
      if (!response.ok) throw new Error(`${response.status} ${(await response.text()).trim()}`);
      return response.blob();
    });
    entry.catch(() => cache.delete(key));
    Object.assign(entry, { index, key, start });
    cache.set(key, entry);
    queue.push(entry);
  }
  if (urgent && queue.includes(entry)) {
    queue.splice(queue.indexOf(entry), 1);
    queue.unshift(entry);
  }
  pump();
  return entry;
}

function pump() {
  while (inFlight < PARALLEL && queue.length) {
    const entry = queue.shift();
    inFlight += 1;
    entry.start();
    entry.catch(() => {}).finally(() => { inFlight -= 1; pump(); });
  }
}

// The whole series is fetched in the background for the current window, in the order the
// user is likely to need it: the current frame, AHEAD frames in the direction of scrolling,
// BEHIND frames behind, then every other frame nearest first.
function prefetch() {
  const { index, direction, frames } = view;
  const order = [index];
  for (let step = 1; step <= AHEAD; step += 1) order.push(index + direction * step);
  for (let step = 1; step <= BEHIND; step += 1) order.push(index - direction * step);
  for (let step = 1; step < frames.length; step += 1) {
    if (step > AHEAD) order.push(index + direction * step);
    if (step > BEHIND) order.push(index - direction * step);
  }
  const rank = new Map();
  for (const i of order) if (i >= 0 && i < frames.length && !rank.has(i)) rank.set(i, rank.size);
  for (const i of rank.keys()) if (rank.get(i) < KEPT) image(i);
  const suffix = `|${windowKey(view.window)}`;
  const place = (entry) => (entry.key.endsWith(suffix) ? rank.get(entry.index) : -1);
  queue.sort((a, b) => place(a) - place(b));  // a drag's frames (other windows) stay first
  if (cache.size > KEPT) {
    const far = [...cache.values()].sort((a, b) =>
      Math.abs(b.index - index) - Math.abs(a.index - index));
    for (const entry of far.slice(0, cache.size - KEPT)) {
      cache.delete(entry.key);
      if (queue.includes(entry)) queue.splice(queue.indexOf(entry), 1);
    }
  }
}

// Go to a frame. While the user scrolls faster than frames arrive, a frame that arrives
// between the one shown and the one wanted is drawn on the way, so the image keeps moving.
async function show(index) {
  index = Math.max(0, Math.min(view.frames.length - 1, index));
  if (index !== view.index) view.direction = index > view.index ? 1 : -1;
  view.index = index;
  slider.value = String(index + 1);
  describePosition();
  const win = view.window;
  const pending = image(index, win, true);
  prefetch();
  try {
    const bitmap = await createImageBitmap(await pending);
    const from = view.shown === null ? index : view.shown;
    const onTheWay = (index - from) * (view.index - index) >= 0 && index !== from;
    const current = windowKey(view.window) === windowKey(win);
    if (current && (view.index === index || onTheWay)) draw(bitmap, index);
    else bitmap.close();
  } catch (error) {
    document.getElementById("overlay").textContent = `Cannot show this frame: ${error.message}`;
  }
}

function draw(bitmap, index) {
  if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
  }
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  view.shown = index;
  view.drawn += 1;
  if (view.firstDrawnAt === null) {
    view.firstDrawnAt = performance.now();
    performance.mark("localdicom-first-frame");
  }
  canvas.dataset.frame = String(index);
  canvas.dataset.window = windowKey(view.window);
  canvas.dataset.drawn = String(view.drawn);
  canvas.dispatchEvent(new CustomEvent("localdicom:drawn", { detail: index }));
  showOverlay();
  scheduleTags();
  remember();
}

function describePosition() {
  const frame = view.frames[view.index];
  const total = view.frames.length;
  const multi = view.frames.filter((f) => f.instance === frame.instance).length > 1;
  document.getElementById("position").textContent =
    `${view.index + 1} / ${total}${multi ? ` (frame ${frame.frame})` : ""}`;
}

function currentWindow() {
  return view.window || view.frames[view.index].window || view.range || [128, 256];
}

function showOverlay() {
  const win = currentWindow();
  const text = `${view.index + 1} / ${view.frames.length}   W ${Math.round(win[1])} C ${Math.round(win[0])}`;
  document.getElementById("overlay").textContent = text;
  document.getElementById("window-value").textContent = view.window ?
    `center ${Math.round(win[0])}, width ${Math.round(win[1])}` : "the image's own window";
}

function setWindow(win, redraw = true) {
  view.window = win;
  for (const button of document.querySelectorAll("[data-preset]")) {
    const preset = button.dataset.preset;
    button.setAttribute("aria-pressed", String(win ? preset === windowKey(win) : preset === "own"));
  }
  const suffix = `|${windowKey(win)}`;
  for (const [key, entry] of [...cache.entries()]) {
    if (key.endsWith(suffix)) continue;
    cache.delete(key);
    if (queue.includes(entry)) queue.splice(queue.indexOf(entry), 1);
  }
  if (redraw) show(view.index);
}

// The slice and window in the URL (replaced, not pushed), so a view can be bookmarked.
let rememberTimer = null;
function remember() {
  clearTimeout(rememberTimer);
  rememberTimer = setTimeout(() => {
    const params = new URLSearchParams(location.search);
    params.set("slice", String(view.index + 1));
    if (view.window) params.set("window", windowKey(view.window)); else params.delete("window");
    history.replaceState(null, "", `${location.pathname}?${params}`);
  }, 300);
}

function setUpNavigation() {
  const stage = document.getElementById("stage");
  stage.addEventListener("wheel", (event) => {
    event.preventDefault();
    if (event.deltaY) show(view.index + Math.sign(event.deltaY));
  }, { passive: false });
  const keys = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 };
  stage.addEventListener("keydown", (event) => {
    if (event.key in keys) show(view.index + keys[event.key]);
    else if (event.key === "Home") show(0);
    else if (event.key === "End") show(view.frames.length - 1);
    else return;
    event.preventDefault();
  });
  slider.addEventListener("input", () => show(Number(slider.value) - 1));
  for (const button of document.querySelectorAll("[data-preset]")) {
    button.addEventListener("click", () => {
      const preset = button.dataset.preset;
      setWindow(preset === "own" ? null : preset.split(",").map(Number));
    });
  }
}

// Drag: right/left widens/narrows the window, down/up raises/lowers its center. Only the
// current frame is asked while dragging, one request at a time, for the latest window.
function setUpWindowDrag() {
  const stage = document.getElementById("stage");
  let origin = null;
  let busy = false;
  let wanted = null;
  async function render() {
    if (busy || !wanted) return;
    busy = true;
    const win = wanted;
    wanted = null;
    view.window = win;
    try {
      draw(await createImageBitmap(await image(view.index, win, true)), view.index);
    } catch { /* the next move asks again */ }
    busy = false;
    render();
  }
  stage.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    origin = { x: event.clientX, y: event.clientY, window: currentWindow() };
    for (const entry of queue.splice(0)) cache.delete(entry.key);  // the drag's frames first
    stage.setPointerCapture(event.pointerId);
  });
  stage.addEventListener("pointermove", (event) => {
    if (!origin) return;
    const [center, width] = origin.window;
    const scale = Math.max(width, 10) / 300;
    wanted = [center + (event.clientY - origin.y) * scale,
      Math.max(1, width + (event.clientX - origin.x) * scale * 2)];
    render();
  });
  const end = () => {
    if (!origin) return;
    origin = null;
    if (wanted || view.window) setWindow(wanted || view.window);
  };
  stage.addEventListener("pointerup", end);
  stage.addEventListener("pointercancel", end);
}

// The header of the shown instance, as a searchable table (sequences expanded).
let tagsTimer = null;
let tagsOf = null;
function scheduleTags() {
  clearTimeout(tagsTimer);
  tagsTimer = setTimeout(showTags, 150);
}

async function showTags() {
  const frame = view.frames[view.index];
  const path = instancePath(frame);
  document.getElementById("file-link").href =
    `${path}?accept=${encodeURIComponent("application/dicom; transfer-syntax=*")}`;
  document.getElementById("file-link").download = `${frame.instance}.dcm`;
  document.getElementById("json-link").href = `${path}/metadata?accept=application/dicom%2Bjson`;
  if (tagsOf === frame.instance) return;
  tagsOf = frame.instance;
  const { body } = await getJson(`ui/api/${path}/tags`, {});
  if (tagsOf !== frame.instance) return;
  const tbody = document.querySelector("#tags tbody");
  tbody.replaceChildren(...body.rows.map((row) => {
    const tr = element("tr", {}, [row.tag, row.keyword, row.vr, row.value].map((text, i) => {
      const td = element("td", { textContent: text });
      if (i === 1 || (i === 0 && row.tag)) td.style.paddingLeft = `${0.3 + row.depth * 0.8}rem`;
      return td;
    }));
    tr.dataset.text = `${row.tag} ${row.keyword} ${row.value}`.toLowerCase();
    return tr;
  }));
  filterTags();
}

function filterTags() {
  const words = document.getElementById("tag-filter").value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const tr of document.querySelectorAll("#tags tbody tr")) {
    tr.hidden = !words.every((word) => tr.dataset.text.includes(word));
  }
}

async function start() {
  document.getElementById("study-link").href = `ui/${studyPath(STUDY)}`;
  document.getElementById("series-zip").href = `${seriesPath(STUDY, SERIES)}?accept=application%2Fzip`;
  document.getElementById("tag-filter").addEventListener("input", filterTags);
  setUpNavigation();
  setUpWindowDrag();
  const embedded = document.getElementById("frames-data");
  const body = embedded ? JSON.parse(embedded.textContent) :
    (await getJson(`ui/api/${seriesPath(STUDY, SERIES)}/frames`, {})).body;
  view.frames = body.frames;
  view.range = body.range;
  if (!view.frames.length) {
    document.getElementById("overlay").textContent = "This series has no images.";
    return;
  }
  slider.max = String(view.frames.length);
  const params = new URLSearchParams(location.search);
  const win = params.get("window");
  if (win && /^-?[\d.]+,[\d.]+$/.test(win)) setWindow(win.split(",").map(Number), false);
  show(Math.max(0, (parseInt(params.get("slice") || "1", 10) || 1) - 1));
  document.getElementById("stage").focus();
  showSeriesTitle();
}

async function showSeriesTitle() {
  const query = new URLSearchParams({ SeriesInstanceUID: SERIES, includefield: "0008103E" });
  const { body } = await getJson(`${studyPath(STUDY)}/series?${query}`);
  const series = body[0] || {};
  const title = `${dicomValue(series, "00080060")} ${dicomValue(series, "0008103E")}`.trim() || "Series";
  document.getElementById("crumb").textContent = title;
  document.title = `${title} · localdicom`;
}

window.quickViewer = view;
start().catch((error) => {
  document.getElementById("overlay").textContent = `Cannot open the series: ${error.message}`;
});
