// caraway dashboard: vanilla JS, no build step. Tasks arrive live over server-sent
// events (/api/stream); workers, queues and charts are polled every 2 s.
// Everything user-controlled is inserted as text (textContent), never as HTML.
"use strict";

const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const COLUMNS = [
  // key, header, default shown, sort key (null: not sortable)
  ["uuid", "Task id", true, null],
  ["name", "Name", true, "name"],
  ["state", "State", true, "state"],
  ["args", "Args", true, null],
  ["kwargs", "Kwargs", false, null],
  ["result", "Result", true, null],
  ["exception", "Exception", true, null],
  ["worker", "Worker", true, "worker"],
  ["received", "Received", true, "received"],
  ["started", "Started", false, "started"],
  ["runtime", "Runtime", true, "runtime"],
  ["retries", "Retries", false, null],
];
const state = {
  csrf: null,
  detailId: null,
  detailRoot: null,
  workerName: null,
  workerTab: "pool",
  workerDetail: null,
  offset: 0,
  sort: "timestamp",
  order: "desc",
  total: 0,
  dirty: false,
  shown: new Set(),
  tasksAsked: 0, // the newest task-list request: an older one's answer is stale
};

function $(selector) { return document.querySelector(selector); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  }
  return node;
}

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text != null) node.textContent = text;
  return node;
}

async function api(path, options) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

async function act(path, body, label) {
  try {
    if (!state.csrf) state.csrf = (await api("/api/session")).csrf;
    const reply = await api(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": state.csrf },
      body: JSON.stringify(body || {}),
    });
    const what = label || path;
    if (reply.count != null) notice(`${what}: ok (${reply.count})`);
    else notice(`${what}: ok (${reply.replies.length} repl${reply.replies.length === 1 ? "y" : "ies"})${replyText(reply.replies)}`);
    return reply;
  } catch (error) {
    notice(`${label || path}: ${error.message}`, true);
    return null;
  }
}

function replyText(replies) {
  const parts = [];
  for (const reply of replies || []) {
    for (const [node, answer] of Object.entries(reply)) {
      const text = answer && (answer.ok || answer.error);
      if (text) parts.push(`${node}: ${text}`);
    }
  }
  return parts.length ? ` — ${parts.join("; ")}` : "";
}

function notice(text, bad) {
  const box = $("#notice");
  box.textContent = text;
  box.hidden = false;
  box.classList.toggle("bad", Boolean(bad));
}

function confirmWith(text) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    $("#confirm-ok").focus();
  });
}

// -- formatting -----------------------------------------------------------------

const pad = (n) => String(n).padStart(2, "0");

function when(seconds) {
  if (!seconds) return "";
  const d = new Date(seconds * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function clock(seconds) {
  const d = new Date(seconds * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function duration(seconds) {
  if (seconds == null || Number.isNaN(Number(seconds))) return "";
  const s = Number(seconds);
  if (s < 0.001) return `${Math.round(s * 1e6)} µs`;
  if (s < 1) return `${(s * 1000).toFixed(s < 0.01 ? 2 : 1)} ms`;
  if (s < 60) return `${s.toFixed(2)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function count(n) { return n == null ? "" : Number(n).toLocaleString("en"); }

// -- views -------------------------------------------------------------------------

const VIEWS = { task: "detail", worker: "worker" };

function show() {
  const hash = location.hash.slice(1) || "workers";
  const slash = hash.indexOf("/");
  const view = slash < 0 ? hash : hash.slice(0, slash);
  const id = slash < 0 ? "" : decodeURIComponent(hash.slice(slash + 1));
  const section = VIEWS[view] || view;
  for (const node of document.querySelectorAll("[data-view]")) node.hidden = node.dataset.view !== section;
  for (const link of document.querySelectorAll("nav [data-tab]")) {
    const current = link.dataset.tab === view || (view === "task" && link.dataset.tab === "tasks") ||
      (view === "worker" && link.dataset.tab === "workers");
    link.classList.toggle("current", current);
    if (current) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  state.detailId = view === "task" ? id : null;
  state.workerName = view === "worker" ? id : null;
  if (state.detailId) loadDetail();
  if (state.workerName) loadWorker();
  if (view === "workers" || !hash) pollWorkers().catch(fail);
  if (view === "queues") { pollQueues().catch(fail); pollThroughput().catch(fail); }
  if (view === "tasks") loadTasks().catch(fail);
  if (view === "charts") pollCharts().catch(fail);
  if (view === "dead-letters") loadDeadLetters().catch(fail);
  if (view === "beat") loadBeat().catch(fail);
}

function fail(error) { notice(error.message, true); }

// -- workers -----------------------------------------------------------------------

function cell(text, attrs) { return el("td", { title: String(text ?? ""), ...(attrs || {}) }, String(text ?? "")); }

function workerRow(worker) {
  const active = (worker.active_tasks || []).map((t) => t.name).join(", ");
  const link = el("a", { href: `#worker/${encodeURIComponent(worker.hostname)}` }, worker.hostname);
  return el("tr", { "data-hostname": worker.hostname },
    el("td", { class: "host", title: worker.hostname }, link),
    el("td", { class: `status ${worker.status}` }, worker.status),
    cell(worker.pool || ""),
    cell(worker.concurrency ?? ""),
    cell(worker.active ?? 0, { title: active }),
    cell(count(worker.processed), { "data-count": "processed" }),
    cell(count(worker.succeeded), { "data-count": "succeeded" }),
    cell(count(worker.failed), { "data-count": "failed" }),
    cell(count(worker.retried), { "data-count": "retried" }),
    cell(count(worker.processed_total), { "data-count": "total" }),
    cell((worker.loadavg || []).map((x) => Number(x).toFixed(2)).join(" ")),
    cell((worker.queues || []).join(", ")),
  );
}

async function pollWorkers() {
  const [workers, status] = await Promise.all([api("/api/workers"), api("/api/status")]);
  const looking = workers.length === 0 && !status.polled;
  $("#workers-loading").hidden = !looking;
  $("#no-workers").hidden = workers.length > 0 || looking;
  $("#counts-since").textContent =
    `Processed, succeeded, failed and retried count what the dashboard saw since ${when(status.since)}` +
    `${status.history ? " (kept across restarts)" : ""}; "Node total" is each node's own count since it started.`;
  $("#worker-table tbody").replaceChildren(...workers.map(workerRow));
}

// -- one worker --------------------------------------------------------------------

const WORKER_TABS = [
  ["pool", "Pool"], ["queues", "Queues"], ["limits", "Limits"], ["config", "Config"],
  ["system", "System"], ["active", "Active"], ["reserved", "Reserved"],
  ["scheduled", "Scheduled"], ["revoked", "Revoked"], ["registered", "Registered"],
];

function drawWorkerTabs() {
  const list = $("#worker-tabs");
  list.replaceChildren(...WORKER_TABS.map(([key, label]) => el("button", {
    type: "button", role: "tab", id: `tab-${key}`, "data-tab-key": key,
    "aria-selected": String(key === state.workerTab), tabIndex: key === state.workerTab ? 0 : -1,
    onclick: () => selectTab(key),
  }, label)));
}

function selectTab(key, focus) {
  state.workerTab = key;
  drawWorkerTabs();
  if (focus) $(`#tab-${key}`).focus();
  drawWorkerPanel();
}

function keyValueTable(object) {
  const rows = Object.entries(object || {}).map(([k, v]) =>
    el("tr", {}, el("th", { scope: "row" }, k), el("td", { class: "mono" }, typeof v === "object" ? JSON.stringify(v) : String(v))));
  return rows.length ? el("table", { class: "kv" }, el("tbody", {}, ...rows)) : el("p", { class: "empty" }, "nothing reported");
}

function taskList(tasks) {
  if (!tasks || !tasks.length) return el("p", { class: "empty" }, "none");
  return el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Task id"), el("th", {}, "Name"), el("th", {}, "Args"), el("th", {}, "Since"))),
    el("tbody", {}, ...tasks.map((t) => {
      const req = t.request || t;
      return el("tr", { "data-uuid": req.id || "" },
        el("td", { class: "mono" }, el("a", { href: `#task/${encodeURIComponent(req.id || "")}` }, req.id || "")),
        el("td", {}, req.name || ""), el("td", { class: "mono" }, req.args == null ? "" : typeof req.args === "string" ? req.args : JSON.stringify(req.args)),
        el("td", {}, when(req.time_start || t.eta && Date.parse(t.eta) / 1000)));
    })));
}

function drawWorkerPanel() {
  const panel = $("#worker-panel");
  panel.setAttribute("aria-labelledby", `tab-${state.workerTab}`);
  const detail = (state.workerDetail || {}).detail || {};
  const stats = detail.stats || {};
  const conf = detail.conf || {};
  let content;
  switch (state.workerTab) {
    case "pool": content = keyValueTable({ ...(stats.pool || {}), prefetch_count: stats.prefetch_count }); break;
    case "queues": content = el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Queue"), el("th", {}, "Exchange"), el("th", {}, "Routing key"))),
      el("tbody", {}, ...(detail.active_queues || []).map((q) => el("tr", { "data-queue": q.name },
        el("td", {}, q.name), el("td", {}, (q.exchange && q.exchange.name) || ""), el("td", {}, q.routing_key || ""))))); break;
    case "limits": {
      const pool = stats.pool || {};
      const perTask = (detail.registered || []).filter((n) => n.includes(" ["));
      content = el("div", {}, keyValueTable({
        prefetch_count: stats.prefetch_count,
        "time limits (soft, hard)": pool.timeouts,
        "max-tasks-per-child": pool["max-tasks-per-child"],
        ...Object.fromEntries(Object.entries(conf).filter(([k]) => /limit|prefetch|concurrency|max_tasks|max_memory/.test(k))),
      }), el("h4", {}, "Per task"), perTask.length
        ? el("table", { id: "task-limits" }, el("tbody", {}, ...perTask.map((entry) => {
          const [name, rest] = entry.split(" [");
          return el("tr", { "data-task": name }, el("th", { scope: "row" }, name), el("td", { class: "mono" }, rest.replace(/]$/, "")));
        })))
        : el("p", { class: "empty" }, "no task has a rate or time limit of its own (or the node does not say)"));
      break;
    }
    case "config": content = keyValueTable(conf); break;
    case "system": content = keyValueTable({ pid: stats.pid, uptime: stats.uptime != null ? duration(stats.uptime) : "", clock: stats.clock, broker: (stats.broker || {}).hostname, ...(stats.rusage || {}), totals: stats.total }); break;
    case "revoked": content = (detail.revoked || []).length ? el("ul", { class: "mono" }, ...(detail.revoked || []).map((id) => el("li", {}, id))) : el("p", { class: "empty" }, "none"); break;
    case "registered": content = (detail.registered || []).length ? el("ul", { class: "mono" }, ...(detail.registered || []).map((n) => el("li", {}, n.split(" [")[0]))) : el("p", { class: "empty" }, "none"); break;
    default: content = taskList(detail[state.workerTab]);
  }
  panel.replaceChildren(content);
}

async function loadWorker(refresh) {
  const name = state.workerName;
  $("#worker-name").textContent = name;
  if (!refresh) drawWorkerTabs();
  let body;
  try {
    body = await api(`/api/workers/${encodeURIComponent(name)}`);
  } catch (error) {
    $("#worker-panel").replaceChildren(el("p", { class: "empty" }, error.message));
    return;
  }
  if (name !== state.workerName) return;
  state.workerDetail = body;
  const status = body.worker.status || "unknown";
  $("#worker-status").textContent = status;
  $("#worker-status").className = `status ${status}`;
  $("#task-names").replaceChildren(...((body.detail || {}).registered || []).map((n) => el("option", { value: n.split(" ")[0] })));
  drawWorkerPanel();
}

async function workerAction(action) {
  const form = $("#worker-actions");
  const value = (name) => form.elements[name].value.trim();
  const base = `/api/workers/${encodeURIComponent(state.workerName)}`;
  const calls = {
    grow: () => act(`${base}/pool/grow`, { n: 1 }, "grow"),
    shrink: () => act(`${base}/pool/shrink`, { n: 1 }, "shrink"),
    autoscale: () => act(`${base}/pool/autoscale`, { max: Number(value("max")), min: Number(value("min") || 0) }, "autoscale"),
    consume: () => act(`${base}/queues/add`, { queue: value("queue") }, "consume"),
    cancel: () => act(`${base}/queues/cancel`, { queue: value("queue") }, "cancel"),
    "rate limit": () => act(`${base}/rate-limit`, { task_name: value("task"), rate_limit: value("rate") }, "rate limit"),
    "time limit": () => act(`${base}/time-limit`, { task_name: value("task"), soft: value("soft") || null, hard: value("hard") || null }, "time limit"),
    shutdown: async () => {
      if (await confirmWith(`Shut down ${state.workerName}? Its running tasks finish first.`)) act(`${base}/shutdown`, {}, "shutdown");
    },
  };
  await calls[action]();
  if (action !== "shutdown") loadWorker();
}

// -- tasks -------------------------------------------------------------------------

function visibleColumns() {
  const saved = JSON.parse(localStorage.getItem("caraway.columns") || "null");
  return COLUMNS.filter(([key, , shown]) => (saved ? saved.includes(key) : shown));
}

function drawColumnChoice() {
  const chosen = new Set(visibleColumns().map(([key]) => key));
  $("#column-choice").replaceChildren(...COLUMNS.map(([key, label]) => el("label", {},
    el("input", { type: "checkbox", name: key, checked: chosen.has(key), onchange: () => {
      const keys = [...document.querySelectorAll("#column-choice input:checked")].map((i) => i.name);
      localStorage.setItem("caraway.columns", JSON.stringify(keys));
      drawTaskHead();
      loadTasks().catch(fail);
    } }), ` ${label}`)));
}

function drawTaskHead() {
  const cells = visibleColumns().map(([key, label, , sortKey]) => {
    const th = el("th", { "data-column": key, class: `c-${key}` });
    if (!sortKey) { th.textContent = label; return th; }
    const sorted = state.sort === sortKey;
    th.setAttribute("aria-sort", sorted ? (state.order === "asc" ? "ascending" : "descending") : "none");
    th.append(el("button", { type: "button", class: "sort", onclick: () => {
      state.order = sorted && state.order === "desc" ? "asc" : "desc";
      state.sort = sortKey;
      state.offset = 0;
      drawTaskHead();
      loadTasks().catch(fail);
    } }, label, sorted ? (state.order === "asc" ? " ▲" : " ▼") : ""));
    return th;
  });
  $("#task-table thead tr").replaceChildren(...cells);
}

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

function pageSize() { return Number(new FormData($("#filters")).get("size") || 50); }

function taskCell(key, task) {
  switch (key) {
    case "uuid": return el("td", { class: "uuid mono", title: task.uuid }, el("a", { href: `#task/${encodeURIComponent(task.uuid)}` }, task.uuid));
    case "state": return stateCell(task);
    case "received": case "started": {
      const t = task.times[key] || (key === "received" ? task.timestamp : null);
      return el("td", { class: "time" }, when(t));
    }
    case "runtime": return el("td", { class: "num", title: task.runtime != null ? `${task.runtime} s` : "" }, duration(task.runtime));
    case "retries": return el("td", { class: "num" }, String(task.retries || 0));
    case "args": case "kwargs": case "result": case "exception":
      return el("td", { class: `mono clip c-${key}`, title: task[key] || "" }, task[key] || "");
    default: return el("td", { class: "clip", title: task[key] || "" }, task[key] || "");
  }
}

const FINAL = new Set(["SUCCESS", "FAILURE", "REVOKED"]);

function stateCell(task) {
  const td = el("td", { class: `state state-${task.state}` }, task.state);
  if (task.revoke_sent && !FINAL.has(task.state)) {
    td.append(" ", el("small", { class: "revoking", title: `revoke sent ${when(task.revoke_sent)}` }, "revoking"));
  }
  return td;
}

/** Run `render`, which replaces task rows, keeping the keyboard on the row it was on: a
 * live update or a reload must not throw the user's place (after `j`/`k`) back to the page. */
function keepingFocus(render) {
  const row = document.activeElement?.closest("#task-table tbody tr");
  render();
  if (row && !row.isConnected) {
    document.querySelector(`#task-table tr[data-uuid="${CSS.escape(row.dataset.uuid)}"] td.uuid a`)?.focus();
  }
}

function taskRow(task) {
  return el("tr", { "data-uuid": task.uuid, "data-state": task.state },
    ...visibleColumns().map(([key]) => {
      const td = taskCell(key, task);
      td.dataset.column = key;
      return td;
    }));
}

async function loadTasks() {
  const query = new URLSearchParams({ limit: pageSize(), offset: state.offset, sort: state.sort, order: state.order });
  for (const [key, value] of Object.entries(filters())) if (value) query.set(key, value);
  const started = performance.now();
  const asked = ++state.tasksAsked;
  const page = await api(`/api/tasks?${query}`);
  const table = $("#task-table");
  table.dataset.answers = Number(table.dataset.answers || 0) + 1;
  // answers can come out of order (a reload per keystroke): a slower, older one would
  // show the list for a filter the user has since changed
  if (asked !== state.tasksAsked) return;
  state.total = page.total;
  state.shown = new Set(page.tasks.map((t) => t.uuid));
  keepingFocus(() => $("#task-table tbody").replaceChildren(...page.tasks.map(taskRow)));
  const last = Math.min(state.offset + page.tasks.length, page.total);
  $("#page-info").textContent = page.total
    ? `${count(state.offset + 1)}–${count(last)} of ${count(page.total)} tasks`
    : "no tasks match";
  $("#prev").disabled = state.offset === 0;
  $("#next").disabled = last >= page.total;
  $("#task-table").dataset.renderMs = (performance.now() - started).toFixed(1);
  $("#task-table").dataset.total = page.total;
}

function onTasksChanged(changed) {
  let unseen = false;
  for (const task of changed) {
    const row = document.querySelector(`#task-table tr[data-uuid="${CSS.escape(task.uuid)}"]`);
    if (row) keepingFocus(() => row.replaceWith(taskRow(task)));
    else unseen = true;
  }
  if (unseen) state.dirty = true; // a new task: the page and its total reload, at most every second
}

function connect() {
  const live = $("#live");
  const stream = new EventSource("/api/stream");
  stream.onopen = () => {
    live.textContent = "live";
    live.className = "live on";
    if (!$("#tasks").hidden) loadTasks().catch(fail);
  };
  stream.onerror = () => {
    live.textContent = "reconnecting";
    live.className = "live off";
  };
  stream.addEventListener("tasks", (event) => {
    const data = JSON.parse(event.data);
    if (!$("#tasks").hidden) onTasksChanged(data.tasks);
    if (state.detailId && data.tasks.some((t) => t.uuid === state.detailId || (state.detailRoot && t.root_id === state.detailRoot) || t.group)) loadDetail();
  });
  stream.addEventListener("reset", () => { state.dirty = true; });
  setInterval(() => {
    if (state.dirty && !$("#tasks").hidden) {
      state.dirty = false;
      loadTasks().catch(fail);
    }
  }, 1000);
}

// -- task detail -------------------------------------------------------------------------

function treeNode(node) {
  if (node.kind === "canvas") return node.children.map(treeNode);
  if (node.kind === "group") {
    const label = el("span", { class: `node group${node.failed ? " has-failed" : ""}` },
      `${node.chord ? "chord header" : "group"} `,
      el("small", { class: "progress" }, `${node.done} of ${node.total} done${node.failed ? `, ${node.failed} failed` : ""}`));
    const bar = el("progress", { max: node.total, value: node.done, "aria-label": "header tasks done" });
    const item = el("li", { "data-group": node.group, "data-done": node.done, "data-total": node.total }, label, " ", bar);
    if (node.children.length) item.append(el("ul", {}, ...node.children.flatMap(treeNode)));
    return item;
  }
  const label = el("a", { href: `#task/${encodeURIComponent(node.uuid)}`, class: `node state-${node.state}` },
    `${node.name || "?"} `, el("small", {}, node.state));
  if (node.uuid === state.detailId) label.classList.add("current");
  const item = el("li", { "data-uuid": node.uuid }, label);
  if (node.children.length) item.append(el("ul", {}, ...node.children.flatMap(treeNode)));
  return item;
}

function drawTree(tree) {
  if (!tree) return el("p", { class: "empty" }, "not part of a canvas seen here");
  const items = [treeNode(tree)].flat();
  return el("ul", {}, ...items);
}

async function loadDetail() {
  const id = state.detailId;
  $("#detail-id").textContent = id;
  let task;
  try {
    task = await api(`/api/tasks/${encodeURIComponent(id)}`);
  } catch (error) {
    $("#detail-fields").replaceChildren(el("dd", {}, error.message));
    return;
  }
  if (id !== state.detailId) return;
  state.detailRoot = task.root_id || task.uuid;
  const fields = [
    ["name", task.name], ["state", task.state],
    ["revoke", task.revoke_sent && !FINAL.has(task.state) ? `sent ${when(task.revoke_sent)}; the node acts on it when the task falls due` : ""],
    ["worker", task.worker],
    ["args", task.args], ["kwargs", task.kwargs], ["result", task.result],
    ["exception", task.exception], ["runtime", duration(task.runtime)],
    ["retries", String(task.retries)], ["parent", task.parent_id], ["root", task.root_id],
    ["group", task.group], ["children", task.children.join(", ")],
    ...Object.entries(task.times).map(([k, v]) => [k, when(v)]),
  ];
  $("#detail-fields").replaceChildren(...fields.flatMap(([k, v]) =>
    [el("dt", {}, k), el("dd", { "data-field": k }, v ?? "")]));
  $("#detail-fields").dataset.state = task.state;
  $("#detail-traceback").textContent = task.traceback || "";
  $("#detail-tree").replaceChildren(drawTree(task.tree));
}

// -- charts ------------------------------------------------------------------------------

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

function axisValue(value, unit) {
  if (unit === "s") return duration(value) || "0";
  if (Math.abs(value) >= 100 || value === 0) return String(Math.round(value));
  const text = value.toPrecision(2);
  // 0.50 -> 0.5, 2.0 -> 2; never 50 -> 5
  return text.includes(".") ? text.replace(/0+$/, "").replace(/\.$/, "") : text;
}

// series: [{label, cls, points: [[t, value|null]]}]; unit labels the y axis ("tasks/s", "s", "messages")
function lineChart(container, series, { unit, yLabel, from, to }) {
  const width = Math.max(container.clientWidth || 600, 280);
  const height = 200;
  const m = { left: 64, right: 24, top: 10, bottom: 40 };
  const w = width - m.left - m.right;
  const h = height - m.top - m.bottom;
  const values = series.flatMap((s) => s.points.map((p) => p[1]).filter((v) => v != null));
  const peak = niceMax(Math.max(0, ...values));
  const x = (t) => m.left + ((t - from) / Math.max(to - from, 1)) * w;
  const y = (v) => m.top + h - (v / peak) * h;
  const svg = svgEl("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `${yLabel} over time`, "data-peak": peak, "data-points": values.length });
  for (let i = 0; i <= 4; i += 1) {
    const v = (peak * i) / 4;
    svg.append(svgEl("line", { x1: m.left, x2: m.left + w, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(svgEl("text", { x: m.left - 6, y: y(v) + 4, class: "tick y-tick", "data-value": v, "text-anchor": "end" }, axisValue(v, unit)));
  }
  const ticks = 5;
  for (let i = 0; i <= ticks; i += 1) {
    const t = from + ((to - from) * i) / ticks;
    svg.append(svgEl("text", { x: x(t), y: m.top + h + 16, class: "tick", "text-anchor": "middle" }, clock(t)));
  }
  svg.append(svgEl("line", { x1: m.left, x2: m.left, y1: m.top, y2: m.top + h, class: "axis" }));
  svg.append(svgEl("line", { x1: m.left, x2: m.left + w, y1: m.top + h, y2: m.top + h, class: "axis" }));
  svg.append(svgEl("text", { x: m.left + w / 2, y: height - 4, class: "label x-label", "text-anchor": "middle" }, "time (local)"));
  svg.append(svgEl("text", { x: 12, y: m.top + h / 2, class: "label y-label", "text-anchor": "middle",
    transform: `rotate(-90 12 ${m.top + h / 2})` }, `${yLabel} (${unit})`));
  for (const s of series) {
    let run = [];
    const flush = () => {
      if (run.length === 1) svg.append(svgEl("circle", { cx: run[0][0], cy: run[0][1], r: 2.5, class: `dot ${s.cls}` }));
      if (run.length > 1) svg.append(svgEl("polyline", { points: run.map((p) => p.join(",")).join(" "), class: `line ${s.cls}`, "data-series": s.label }));
      run = [];
    };
    for (const [t, v] of s.points) {
      if (v == null) flush(); else run.push([x(t).toFixed(1), y(v).toFixed(1)]);
    }
    flush();
  }
  const legend = el("p", { class: "legend" }, ...series.map((s) => el("span", { class: s.cls }, `■ ${s.label}`)));
  container.replaceChildren(svg, legend);
}

function barChart(container, counts, unit) {
  const entries = Object.entries(counts);
  if (!entries.length) {
    container.replaceChildren(el("p", { class: "empty" }, "no failures in this window"));
    return;
  }
  const width = Math.max(container.clientWidth || 600, 280);
  const row = 24;
  const m = { left: 170, right: 50, top: 6, bottom: 34 };
  const height = m.top + m.bottom + row * entries.length;
  const w = width - m.left - m.right;
  const peak = niceMax(Math.max(...entries.map((e) => e[1])));
  const svg = svgEl("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "failures by exception type" });
  entries.forEach(([name, n], i) => {
    const top = m.top + i * row;
    svg.append(svgEl("text", { x: m.left - 6, y: top + 16, class: "tick", "text-anchor": "end" }, name.length > 26 ? `${name.slice(0, 25)}…` : name));
    svg.append(svgEl("rect", { x: m.left, y: top + 4, width: Math.max((n / peak) * w, 1), height: row - 8, class: "bar bad", "data-type": name, "data-count": n }));
    svg.append(svgEl("text", { x: m.left + (n / peak) * w + 4, y: top + 16, class: "tick" }, String(n)));
  });
  const axisY = m.top + row * entries.length;
  svg.append(svgEl("line", { x1: m.left, x2: m.left + w, y1: axisY, y2: axisY, class: "axis" }));
  svg.append(svgEl("text", { x: m.left + w / 2, y: height - 6, class: "label x-label", "text-anchor": "middle" }, `failures (${unit})`));
  container.replaceChildren(svg);
}

async function pollCharts() {
  const form = new FormData($("#chart-filters"));
  const seconds = Number(form.get("seconds"));
  const task = form.get("task");
  const query = new URLSearchParams({ seconds });
  if (task) query.set("task", task);
  const data = await api(`/api/charts?${query}`);
  const select = $('#chart-filters select[name="task"]');
  const known = new Set([...select.options].map((o) => o.value));
  for (const name of data.tasks) if (!known.has(name)) select.append(el("option", { value: name }, name));
  const to = Date.now() / 1000;
  const from = to - seconds;
  const pts = data.points;
  const opts = (unit, yLabel) => ({ unit, yLabel, from, to });
  lineChart($("#chart-throughput"), [
    { label: "succeeded", cls: "ok", points: pts.map((p) => [p.t, p.succeeded]) },
    { label: "failed", cls: "bad", points: pts.map((p) => [p.t, p.failed]) },
  ], opts("tasks/s", "throughput"));
  const pct = (key) => ["p50", "p90", "p99"].map((p, i) => ({ label: p, cls: `p${i}`, points: pts.map((q) => [q.t, q[key][p]]) }));
  lineChart($("#chart-runtime"), pct("runtime"), opts("s", "runtime"));
  lineChart($("#chart-wait"), pct("wait"), opts("s", "queue wait"));
  lineChart($("#chart-queues"), Object.entries(data.queues).map(([name, points], i) =>
    ({ label: name, cls: `q${i % 6}`, points })), opts("messages", "queue depth"));
  barChart($("#chart-failures"), data.failures, "count");
  $("#history-note").textContent = `One point per ${data.step} s; rates are per second over each point.`;
}

// -- queues ------------------------------------------------------------------------------

async function pollQueues() {
  const queues = await api("/api/queues");
  $("#queue-table tbody").replaceChildren(...queues.map((q) =>
    el("tr", { "data-queue": q.name }, el("td", {}, q.name), el("td", { class: "num" }, count(q.length)),
      el("td", { class: "num", "data-unacked": q.unacked ?? "", title: q.unacked == null ? "this broker cannot count them" : "" },
        q.unacked == null ? "n/a" : count(q.unacked)),
      el("td", { "data-consumers": q.consumers.length }, q.consumers.length ? q.consumers.join(", ") : "none"))));
}

async function pollThroughput() {
  const points = await api("/api/throughput?seconds=120");
  const chart = $("#throughput");
  const total = (key) => points.reduce((sum, p) => sum + p[key], 0);
  chart.dataset.succeeded = total("succeeded");
  chart.dataset.failed = total("failed");
  const to = points.length ? points[points.length - 1].t : Date.now() / 1000;
  lineChart(chart, [
    { label: "succeeded", cls: "ok", points: points.map((p) => [p.t, p.succeeded]) },
    { label: "failed", cls: "bad", points: points.map((p) => [p.t, p.failed]) },
  ], { unit: "tasks/s", yLabel: "throughput", from: to - 120, to });
}

// -- dead letters -------------------------------------------------------------------------

let deadLetters = [];

async function loadDeadLetters() {
  deadLetters = await api("/api/dead-letters?limit=500");
  $("#no-dead").hidden = deadLetters.length > 0;
  $("#dead-all").checked = false;
  $("#dead-table tbody").replaceChildren(...deadLetters.map((d) => el("tr", { "data-dead-id": d.id },
    el("td", {}, el("input", { type: "checkbox", value: d.id, "aria-label": `select dead letter ${d.id}` })),
    el("td", {}, el("button", { type: "button", class: "link", onclick: () => showDeadLetter(d) }, d.id)),
    cell(d.queue), cell(d.task || "?"), cell(d.reason, { class: "clip reason" }), cell(when(d.failed_at)), cell(`${count(d.size)} B`))));
  $("#dead-detail").replaceChildren();
}

function showDeadLetter(d) {
  $("#dead-detail").replaceChildren(
    el("h3", {}, `Dead letter ${d.id}`),
    el("dl", {}, el("dt", {}, "reason"), el("dd", { "data-field": "reason" }, d.reason),
      el("dt", {}, "task"), el("dd", {}, `${d.task || "?"} [${d.task_id || "?"}]`),
      el("dt", {}, "content"), el("dd", {}, `${d.content_type} (${d.content_encoding})`)),
    el("h4", {}, "Headers"), el("pre", { class: "traceback", "data-field": "headers" }, JSON.stringify(d.headers, null, 2)),
    el("h4", {}, "Properties"), el("pre", { class: "traceback" }, JSON.stringify(d.properties, null, 2)),
    el("h4", {}, `Body${d.truncated ? " (cut)" : ""}`), el("pre", { class: "traceback", "data-field": "body" }, d.body));
  $("#dead-detail h3").scrollIntoView({ block: "nearest" });
}

async function deadAction(verb) {
  const ids = [...document.querySelectorAll("#dead-table tbody input:checked")].map((i) => i.value);
  if (!ids.length) { notice(`${verb}: select dead letters first`, true); return; }
  const what = verb === "replay" ? "Replay (publish back to their queues)" : "Discard for good";
  if (!(await confirmWith(`${what} ${ids.length} dead letter${ids.length === 1 ? "" : "s"}?`))) return;
  await act(`/api/dead-letters/${verb}`, { ids }, verb);
  await loadDeadLetters();
}

// -- periodic tasks ------------------------------------------------------------------------

async function loadBeat() {
  const beat = await api("/api/beat");
  const status = $("#beat-status");
  const leader = beat.leader
    ? `${beat.leader.node} (leading since ${when(beat.leader.since)}, lease renewed ${duration(beat.leader.age)} ago)`
    : "";
  status.textContent = beat.enabled
    ? `Leading node: ${leader}. Schedule time zone: ${beat.timezone || "UTC"}; times shown in this browser's.`
    : beat.reason;
  status.dataset.enabled = beat.enabled;
  const iso = (value) => (value ? Date.parse(value) / 1000 : null);
  $("#beat-table").hidden = beat.entries.length === 0;
  $("#beat-table tbody").replaceChildren(...beat.entries.map((e) => el("tr", { "data-entry": e.name },
    cell(e.name), cell(e.task), cell(e.schedule), cell(when(iso(e.last_run))), cell(when(iso(e.next_run))),
    cell(count(e.total_run_count)))));
}

// -- keyboard ------------------------------------------------------------------------------

function typing(target) { return target.closest("input, select, textarea, dialog"); }

function onKey(event) {
  if (event.target.getAttribute("role") === "tab" && ["ArrowLeft", "ArrowRight", "Home", "End"].includes(event.key)) {
    const keys = WORKER_TABS.map(([key]) => key);
    const at = keys.indexOf(state.workerTab);
    const next = { ArrowLeft: at - 1, ArrowRight: at + 1, Home: 0, End: keys.length - 1 }[event.key];
    selectTab(keys[(next + keys.length) % keys.length], true);
    event.preventDefault();
    return;
  }
  if (typing(event.target) || event.ctrlKey || event.metaKey || event.altKey) return;
  if ($("#tasks").hidden) return;
  const links = [...document.querySelectorAll("#task-table tbody td.uuid a")];
  const at = links.indexOf(document.activeElement);
  if (event.key === "/") { $('#filters input[name="search"]').focus(); event.preventDefault(); }
  else if (event.key === "j") { (links[at + 1] || links[0])?.focus(); event.preventDefault(); }
  else if (event.key === "k") { (links[at - 1] || links[0])?.focus(); event.preventDefault(); }
  else if (event.key === "]" && !$("#next").disabled) $("#next").click();
  else if (event.key === "[" && !$("#prev").disabled) $("#prev").click();
}

function every(ms, fn, visible) {
  const run = () => { if (!visible || !$(visible).hidden) fn().catch(fail); };
  run();
  setInterval(run, ms);
}

window.addEventListener("DOMContentLoaded", () => {
  drawColumnChoice();
  drawTaskHead();
  $("#filters").addEventListener("input", () => { state.offset = 0; loadTasks().catch(fail); });
  $("#filters").addEventListener("submit", (event) => event.preventDefault());
  $("#prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - pageSize()); loadTasks().catch(fail); });
  $("#next").addEventListener("click", () => { state.offset += pageSize(); loadTasks().catch(fail); });
  $("#chart-filters").addEventListener("input", () => pollCharts().catch(fail));
  $("#revoke").addEventListener("click", async () => {
    await act(`/api/tasks/${encodeURIComponent(state.detailId)}/revoke`, {}, "revoke");
    loadDetail();
  });
  $("#terminate").addEventListener("click", async () => {
    await act(`/api/tasks/${encodeURIComponent(state.detailId)}/terminate`, { signal: "SIGTERM" }, "terminate");
    loadDetail();
  });
  for (const button of document.querySelectorAll("#worker-actions button[data-action]")) {
    button.addEventListener("click", () => workerAction(button.dataset.action));
  }
  $("#dead-replay").addEventListener("click", () => deadAction("replay"));
  $("#dead-discard").addEventListener("click", () => deadAction("discard"));
  $("#dead-refresh").addEventListener("click", () => loadDeadLetters().catch(fail));
  $("#dead-all").addEventListener("change", (event) => {
    for (const box of document.querySelectorAll("#dead-table tbody input")) box.checked = event.target.checked;
  });
  document.addEventListener("keydown", onKey);
  let resize = null;
  window.addEventListener("resize", () => {
    clearTimeout(resize);
    resize = setTimeout(() => { if (!$("#charts").hidden) pollCharts().catch(fail); }, 200);
  });
  window.addEventListener("hashchange", show);
  show();
  connect();
  every(POLL_MS, pollWorkers, "#workers");
  every(POLL_MS, pollQueues, "#queues");
  every(POLL_MS, pollThroughput, "#queues");
  every(POLL_MS * 5, pollCharts, "#charts");
  every(POLL_MS, loadBeat, "#beat");
  every(POLL_MS, async () => { if (state.workerName) await loadWorker(true); }, "#worker");
});
