// caraway dashboard: vanilla JS, no build step. Tasks arrive live over server-sent
// events (/api/stream); workers, queues and throughput are polled every 2 s.
// Everything user-controlled is inserted as text (textContent), never as HTML.
"use strict";

const POLL_MS = 2000;
const MAX_ROWS = 500;
const tasks = new Map(); // uuid -> task dict
let detailId = null;
let detailRoot = null;

function $(selector) { return document.querySelector(selector); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  }
  return node;
}

async function api(path, options) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

let csrf = null;

async function act(path, body) {
  try {
    if (!csrf) csrf = (await api("/api/session")).csrf;
    const reply = await api(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {}),
    });
    notice(`${path}: ok (${reply.replies.length} repl${reply.replies.length === 1 ? "y" : "ies"})`);
  } catch (error) {
    notice(`${path}: ${error.message}`, true);
  }
}

function notice(text, bad) {
  const box = $("#notice");
  box.textContent = text;
  box.hidden = false;
  box.classList.toggle("bad", Boolean(bad));
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "";
}

// -- views -------------------------------------------------------------------

function show() {
  const hash = location.hash.slice(1) || "workers";
  const [view, id] = hash.split("/");
  for (const section of document.querySelectorAll("[data-view]")) {
    section.hidden = section.dataset.view !== (view === "task" ? "detail" : view);
  }
  for (const link of document.querySelectorAll("nav [data-tab]")) {
    link.classList.toggle("current", link.dataset.tab === view);
  }
  detailId = view === "task" ? decodeURIComponent(id || "") : null;
  if (detailId) loadDetail();
}

// -- workers -----------------------------------------------------------------

function workerActions(worker) {
  const base = `/api/workers/${encodeURIComponent(worker.hostname)}`;
  const queue = el("input", { name: "queue", placeholder: "queue", size: 8 });
  const task = el("input", { name: "task", placeholder: "task name", size: 12 });
  const rate = el("input", { name: "rate", placeholder: "10/m", size: 5 });
  const button = (label, handler, cls) =>
    el("button", { type: "button", onclick: handler, class: cls || "", "data-action": label }, label);
  return el("div", { class: "actions" },
    button("shutdown", () => {
      if (confirm(`Shut down ${worker.hostname}?`)) act(`${base}/shutdown`);
    }, "danger"),
    button("grow", () => act(`${base}/pool/grow`, { n: 1 })),
    button("shrink", () => act(`${base}/pool/shrink`, { n: 1 })),
    queue,
    button("consume", () => act(`${base}/queues/add`, { queue: queue.value })),
    button("cancel", () => act(`${base}/queues/cancel`, { queue: queue.value })),
    task, rate,
    button("rate limit", () => act(`${base}/rate-limit`, { task_name: task.value, rate_limit: rate.value })),
  );
}

function workerRow(worker) {
  const active = (worker.active_tasks || []).map((t) => t.name).join(", ");
  return el("tr", { "data-hostname": worker.hostname },
    el("td", {}, worker.hostname),
    el("td", { class: `status ${worker.status}` }, worker.status),
    el("td", {}, worker.pool || ""),
    el("td", {}, String(worker.concurrency ?? "")),
    el("td", {}, String(worker.processed ?? "")),
    el("td", {}, String(worker.succeeded)),
    el("td", {}, String(worker.failed)),
    el("td", { title: active }, String(worker.active ?? 0)),
    el("td", {}, (worker.loadavg || []).map((x) => Number(x).toFixed(2)).join(" ")),
    el("td", {}, (worker.queues || []).join(", ")),
    el("td", {}, workerActions(worker)),
  );
}

async function pollWorkers() {
  const workers = await api("/api/workers");
  $("#no-workers").hidden = workers.length > 0;
  // do not redraw under someone typing a queue name or a rate limit
  if (document.activeElement && document.activeElement.closest("#worker-table")) return;
  $("#worker-table tbody").replaceChildren(...workers.map(workerRow));
}

// -- tasks -------------------------------------------------------------------

function filters() {
  const form = new FormData($("#filters"));
  const window = Number(form.get("window") || 0);
  return {
    state: form.get("state"),
    name: form.get("name").trim(),
    worker: form.get("worker").trim(),
    since: window ? Date.now() / 1000 - window : null,
    search: form.get("search").trim(),
  };
}

// the same rules as TaskQuery.matches on the server, for rows arriving live
function matches(task, f) {
  if (f.state && task.state !== f.state) return false;
  if (f.name && !(task.name || "").toLowerCase().includes(f.name.toLowerCase())) return false;
  if (f.worker && task.worker !== f.worker) return false;
  if (f.since && (task.timestamp || 0) < f.since) return false;
  if (f.search) {
    const hay = [task.uuid, task.args, task.kwargs].join(" ").toLowerCase();
    if (!hay.includes(f.search.toLowerCase())) return false;
  }
  return true;
}

function taskRow(task) {
  const link = el("a", { href: `#task/${encodeURIComponent(task.uuid)}` }, task.uuid);
  return el("tr", { "data-uuid": task.uuid, "data-state": task.state },
    el("td", { class: "uuid" }, link),
    el("td", {}, task.name || ""),
    el("td", { class: `state state-${task.state}` }, task.state),
    el("td", { class: "args" }, task.args || ""),
    el("td", { class: "args" }, task.kwargs || ""),
    el("td", {}, task.worker || ""),
    el("td", {}, when(task.times.received || task.timestamp)),
    el("td", {}, task.runtime != null ? `${Number(task.runtime).toFixed(3)} s` : ""),
    el("td", {}, String(task.retries || 0)),
  );
}

function upsert(task) {
  tasks.set(task.uuid, task);
  const body = $("#task-table tbody");
  const old = body.querySelector(`tr[data-uuid="${CSS.escape(task.uuid)}"]`);
  if (!matches(task, filters())) {
    if (old) old.remove();
    return;
  }
  const row = taskRow(task);
  if (old) old.replaceWith(row);
  else body.prepend(row);
  while (body.rows.length > MAX_ROWS) body.lastElementChild.remove();
}

async function loadTasks() {
  const f = filters();
  const query = new URLSearchParams({ limit: MAX_ROWS });
  for (const [key, value] of Object.entries(f)) if (value) query.set(key, value);
  const list = await api(`/api/tasks?${query}`);
  tasks.clear();
  for (const task of list) tasks.set(task.uuid, task);
  $("#task-table tbody").replaceChildren(...list.map(taskRow));
}

function connect() {
  const live = $("#live");
  const stream = new EventSource("/api/stream");
  // open first, then load: an update racing the load is applied on top of it
  stream.onopen = () => {
    live.textContent = "live";
    live.className = "live on";
    loadTasks().catch((error) => notice(error.message, true));
  };
  stream.onerror = () => {
    live.textContent = "reconnecting";
    live.className = "live off";
  };
  stream.addEventListener("tasks", (event) => {
    const data = JSON.parse(event.data);
    for (const task of data.tasks) upsert(task);
    if (detailId && data.tasks.some((t) => t.uuid === detailId || (detailRoot && t.root_id === detailRoot))) loadDetail();
  });
  stream.addEventListener("reset", () => loadTasks());
}

// -- task detail ---------------------------------------------------------------

function drawTree(node) {
  if (!node) return el("p", { class: "empty" }, "not part of a canvas seen here");
  const label = el("a", { href: `#task/${encodeURIComponent(node.uuid)}`, class: `node state-${node.state}` },
    `${node.name || "?"} `, el("small", {}, node.state));
  if (node.uuid === detailId) label.classList.add("current");
  const item = el("li", { "data-uuid": node.uuid }, label);
  if (node.children.length) item.append(el("ul", {}, ...node.children.map((c) => drawTree(c).firstChild)));
  return el("ul", {}, item);
}

async function loadDetail() {
  const id = detailId;
  $("#detail-id").textContent = id;
  let task;
  try {
    task = await api(`/api/tasks/${encodeURIComponent(id)}`);
  } catch (error) {
    $("#detail-fields").replaceChildren(el("dd", {}, error.message));
    return;
  }
  if (id !== detailId) return;
  detailRoot = task.root_id || task.uuid;
  const fields = [
    ["name", task.name], ["state", task.state], ["worker", task.worker],
    ["args", task.args], ["kwargs", task.kwargs], ["result", task.result],
    ["exception", task.exception], ["runtime", task.runtime != null ? `${task.runtime} s` : ""],
    ["retries", String(task.retries)], ["parent", task.parent_id], ["root", task.root_id],
    ["children", task.children.join(", ")],
    ...Object.entries(task.times).map(([k, v]) => [k, when(v)]),
  ];
  $("#detail-fields").replaceChildren(...fields.flatMap(([k, v]) =>
    [el("dt", {}, k), el("dd", { "data-field": k }, v ?? "")]));
  $("#detail-fields").dataset.state = task.state;
  $("#detail-traceback").textContent = task.traceback || "";
  $("#detail-tree").replaceChildren(drawTree(task.tree));
}

// -- queues and throughput -------------------------------------------------------

async function pollQueues() {
  const queues = await api("/api/queues");
  $("#queue-table tbody").replaceChildren(...queues.map((q) =>
    el("tr", { "data-queue": q.name }, el("td", {}, q.name), el("td", {}, String(q.length)))));
}

function polyline(points, key, peak, cls) {
  const width = 600 / Math.max(points.length - 1, 1);
  const coords = points.map((p, i) => `${(i * width).toFixed(1)},${(155 - (p[key] / peak) * 145).toFixed(1)}`);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", coords.join(" "));
  line.setAttribute("class", cls);
  return line;
}

async function pollThroughput() {
  const points = await api("/api/throughput?seconds=120");
  const svg = $("#throughput");
  const peak = Math.max(1, ...points.map((p) => Math.max(p.succeeded, p.failed)));
  const total = (key) => points.reduce((sum, p) => sum + p[key], 0);
  svg.dataset.succeeded = total("succeeded");
  svg.dataset.failed = total("failed");
  const label = document.createElementNS("http://www.w3.org/2000/svg", "text");
  label.setAttribute("x", "4");
  label.setAttribute("y", "14");
  label.textContent = `peak ${peak}/s`;
  svg.replaceChildren(polyline(points, "succeeded", peak, "ok"), polyline(points, "failed", peak, "bad"), label);
}

function every(ms, fn) {
  const run = () => fn().catch((error) => notice(error.message, true));
  run();
  setInterval(run, ms);
}

window.addEventListener("DOMContentLoaded", () => {
  $("#filters").addEventListener("input", () => loadTasks().catch((e) => notice(e.message, true)));
  $("#filters").addEventListener("submit", (event) => event.preventDefault());
  $("#revoke").addEventListener("click", () => act(`/api/tasks/${encodeURIComponent(detailId)}/revoke`));
  $("#terminate").addEventListener("click", () =>
    act(`/api/tasks/${encodeURIComponent(detailId)}/terminate`, { signal: "SIGTERM" }));
  window.addEventListener("hashchange", show);
  show();
  connect();
  every(POLL_MS, pollWorkers);
  every(POLL_MS, pollQueues);
  every(POLL_MS, pollThroughput);
});
