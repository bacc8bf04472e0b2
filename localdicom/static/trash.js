// The Trash page: one row per removal (GET ui/api/trash), restore one, empty all or the
// older ones (POST ui/api/trash/restore|empty, JSON bodies). No build step.
"use strict";

const API = "ui/api/trash";

function humanSize(bytes) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let size = bytes;
  let unit = 0;
  while (size >= 1000 && unit < units.length - 1) { size /= 1000; unit += 1; }
  return `${size.toFixed(unit && size < 10 ? 1 : 0)} ${units[unit]}`;
}

function studyCell(entry) {
  const cell = element("td");
  for (const about of entry.studies) {
    const who = [about.patient.replace(/\^/g, " ").trim(), about.patient_id && `(${about.patient_id})`]
      .filter(Boolean).join(" ");
    const line = element("div", {}, [
      element("span", { textContent: [who, about.description].filter(Boolean).join(" — ") || "(unknown)" }),
      element("br"), element("small", { textContent: about.study })]);
    cell.append(line);
  }
  return cell;
}

function entryRow(entry) {
  const removed = new Date(entry.removed * 1000);
  const restore = element("button", { type: "button", textContent: "Restore" });
  restore.setAttribute("aria-label", `Restore the entry removed ${removed.toLocaleString()}`);
  restore.addEventListener("click", () => restoreEntry(entry, restore));
  const row = element("tr", {}, [
    element("td", {}, [element("time", { dateTime: removed.toISOString(), textContent: removed.toLocaleString() })]),
    element("td", { textContent: [entry.reason, entry.code].filter(Boolean).join(" ") }),
    element("td", { className: "number", textContent: String(entry.instances) }),
    element("td", { className: "number", textContent: humanSize(entry.size) }),
    studyCell(entry),
    element("td", { textContent: entry.by }),
    element("td", {}, [restore]),
  ]);
  row.dataset.entry = entry.entry;
  return row;
}

async function showTrash() {
  const { body } = await getJson(API, { Accept: "application/json" });
  const rows = body.entries.slice().reverse().map(entryRow);  // newest first
  document.getElementById("entries").replaceChildren(...rows);
  const count = body.entries.length;
  const instances = body.entries.reduce((sum, entry) => sum + entry.instances, 0);
  document.getElementById("title").textContent = count
    ? `Trash: ${count} removal${count === 1 ? "" : "s"}, ${instances} instance${instances === 1 ? "" : "s"}`
    : "Trash: empty";
  for (const button of document.querySelectorAll(".trash-actions button")) button.disabled = !count;
  if (!body.enabled) {
    document.getElementById("about").textContent =
      "This server runs with --no-trash: what is deleted now is gone for good. What an earlier run kept is listed below.";
  }
}

async function post(path, body) {
  const response = await fetch(`${API}/${path}`, {
    method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body) });
  const text = await response.text();
  const type = response.headers.get("Content-Type") || "";
  return { response, body: type.startsWith("application/json") ? JSON.parse(text) : { error: text.trim() } };
}

async function restoreEntry(entry, button) {
  const message = document.getElementById("message");
  button.disabled = true;
  const { response, body } = await post("restore", { entry: entry.entry });
  if (body.error !== undefined) {
    message.textContent = `Not restored: ${response.status} ${body.error}`;
  } else {
    const problems = [...body.conflicts, ...body.errors].map((each) => `${each.sop}: ${each.reason}`);
    message.textContent = `${body.restored} instance${body.restored === 1 ? "" : "s"} restored` +
      (body.present ? `, ${body.present} already stored` : "") +
      (problems.length ? `; left in the trash: ${problems.join("; ")}` : ".");
  }
  await showTrash();
}

async function emptyTrash(days) {
  const message = document.getElementById("message");
  const what = days === undefined ? "everything in the trash" : `the trash entries older than ${days} days`;
  if (!confirm(`Delete ${what} for good? This cannot be undone.`)) return;
  const { response, body } = await post("empty", days === undefined ? {} : { older_than_days: days });
  message.textContent = body.error !== undefined
    ? `Not emptied: ${response.status} ${body.error}`
    : `${body.emptied} trash entr${body.emptied === 1 ? "y" : "ies"} deleted for good.`;
  await showTrash();
}

document.getElementById("empty-all").addEventListener("click", () => emptyTrash());
document.getElementById("empty-older").addEventListener("submit", (event) => {
  event.preventDefault();
  emptyTrash(Number(document.getElementById("older-days").value));
});
showTrash().catch((error) => {
  document.getElementById("message").textContent = `Cannot show the trash: ${error.message}`;
}).finally(() => { document.body.dataset.loaded = "true"; });
