// The dashboard page: polls /api/overview every interval and redraws; dead letters, replay,
// purge and request look-up through the JSON API. The queues table shows the summary (the
// served queues and those holding most) unless the user asks for all or searches by name. Text goes in with textContent only: a
// payload, reason or name is never parsed as HTML.
"use strict";

const state = {
  session: { writable: false, logged_in: false, csrf: null, interval_ms: 2000 },
  expanded: new Set(),
  chartQueue: "",
  deadQueue: "",
  deadSeen: null, // the dead count the shown list was loaded at
  watching: null, // a request id looked up again on every refresh until it finished
  match: "", // the queues listed: those whose name holds this, ...
  all: false, // ... or every queue; neither: the summary
  timer: null,
  running: false,
  again: false, // the listing changed while a refresh ran: refresh once more at its end
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") n.className = v;
    else if (k.startsWith("data-")) n.setAttribute(k, v);
    else if (k === "title") n.title = v;
    else n[k] = v;
  }
  for (const c of children) n.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return n;
}

// -- formats (as `redbatch status` prints them) ---------------------------------------------

const NONE = "-";
function count(n) { return n === null || n === undefined ? NONE : n.toLocaleString("en-US"); }
function age(ms) {
  if (ms === null || ms === undefined) return NONE;
  if (ms < 1000) return `${ms}ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.floor(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
}
function latency(ms) { return ms === null || ms === undefined ? NONE : ms < 10 ? ms.toFixed(1) : Math.round(ms).toLocaleString("en-US"); }
function pair(p) { return p.p50 === null && p.p99 === null ? NONE : `${latency(p.p50)}/${latency(p.p99)}`; }
function rate(r) { return r < 100 ? r.toFixed(1) : Math.round(r).toLocaleString("en-US"); }
function sizeLabel(le) { return le <= 2 ? String(le) : `${le / 2 + 1}-${le}`; }
function when(ms) { return ms ? `${new Date(ms).toLocaleString()} (${age(Date.now() - ms)} ago)` : NONE; }

// -- API ------------------------------------------------------------------------------------

async function api(path, body) {
  const options = { credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    if (state.session.csrf) options.headers["X-CSRF-Token"] = state.session.csrf;
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

function problem(text) {
  $("problem").hidden = !text;
  $("problem").textContent = text || "";
}

// -- queues ---------------------------------------------------------------------------------

function sizesCell(sizes) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "mini");
  const td = el("td", { "data-col": "batch_sizes" }, svg);
  td.title = sizes.map((b) => `${sizeLabel(b.le)}: ${b.batches}`).join(", ") || "no batches in the last minute";
  return [td, () => RBCharts.bars(svg, sizes.map((b) => ({ label: sizeLabel(b.le), value: b.batches })), true)];
}

function queueRow(q, sub, label) {
  const m = q.last_minute;
  const cells = {
    waiting: count(q.waiting), in_flight: count(q.in_flight), delayed: count(q.delayed), dead: count(q.dead),
    consumers: `${q.consumers.alive}/${q.consumers.dead}`, oldest: age(q.oldest_waiting_age_ms), lag: count(q.lag),
    items_per_s: rate(m.items_per_s), wait: pair(m.wait_ms), service: pair(m.service_ms),
  };
  const tr = el("tr", { class: sub ? "sub" : "", "data-queue": sub ? "" : q.name, "data-part": sub ? q.name : "" });
  const name = el("td", { class: "name", "data-col": "name" });
  if (!sub) {
    const open = state.expanded.has(q.name);
    name.append(el("button", { class: "toggle", title: "lanes and shards", textContent: open ? "▾" : "▸", onclick: () => toggle(q.name) }));
  }
  name.append(label || q.name);
  tr.append(name);
  for (const [col, text] of Object.entries(cells)) tr.append(el("td", { "data-col": col }, text));
  const draws = [];
  if (q.batch_sizes) {
    const [td, draw] = sizesCell(q.batch_sizes);
    tr.append(td);
    draws.push(draw);
  } else tr.append(el("td"));
  return [tr, draws];
}

function laneRow(priority, lane) {
  const tr = el("tr", { class: "sub" }, el("td", { class: "name" }, `lane ${priority}`));
  const cells = [count(lane.waiting), count(lane.in_flight), "", "", "", age(lane.oldest_waiting_age_ms), count(lane.lag), "", "", "", ""];
  for (const c of cells) tr.append(el("td", {}, c));
  return tr;
}

function toggle(name) {
  if (state.expanded.has(name)) state.expanded.delete(name);
  else state.expanded.add(name);
  if (state.overview) renderQueues(state.overview);
}

function renderQueues(o) {
  const body = el("tbody");
  const draws = [];
  for (const q of o.queues) {
    const [tr, d] = queueRow(q, false);
    body.append(tr);
    draws.push(...d);
    if (!state.expanded.has(q.name)) continue;
    for (const [priority, lane] of Object.entries(q.lanes)) body.append(laneRow(priority, lane));
    for (const part of q.parts) {
      const [sub, d2] = queueRow(part, true, `shard ${part.name}`);
      body.append(sub);
      draws.push(...d2);
    }
  }
  $("queues").replaceChild(body, $("queues").tBodies[0]);
  draws.forEach((draw) => draw());
  // Past 20 queues a summary may list none (all idle): the namespace is not empty then.
  $("no-queues").hidden = o.queues.length > 0 || o.summary.queues > 0 || Boolean(state.match);
  renderSummary(o);
}

function renderSummary(o) {
  const s = o.summary;
  const held = `${count(s.length)} entries, ${count(s.delayed)} delayed, ${count(s.dead)} dead`;
  let text;
  if (state.match) text = `${count(o.queues.length)} queues named *${state.match}*: ${held}`;
  else if (s.complete) text = `${count(s.queues)} queues: ${held}`;
  else text = `${count(s.queues)} queues hold ${held}; shown: the ${count(o.queues.length)} served or holding most`;
  $("queue-summary").textContent = text;
  $("show-all").textContent = state.all ? "show the summary" : "show all";
}

function listing() {
  if (state.match) return `/api/overview?q=${encodeURIComponent(state.match)}`;
  return state.all ? "/api/overview?all=1" : "/api/overview";
}

function relist(match, all) {
  state.match = match;
  state.all = all;
  if (state.running) state.again = true;
  else {
    clearTimeout(state.timer);
    refresh();
  }
}

// -- charts ---------------------------------------------------------------------------------

function choose(select, names, current) {
  const wanted = names.includes(current) ? current : names[0] || "";
  const now = Array.from(select.options).map((opt) => opt.value);
  if (now.join("\n") !== names.join("\n")) {
    select.replaceChildren(...names.map((n) => el("option", { value: n, textContent: n })));
  }
  select.value = wanted;
  return wanted;
}

function renderCharts(o) {
  if (!state.chartQueue && o.queues.length) {
    // At first the busiest queue of the last minute; then whichever one is picked.
    state.chartQueue = o.queues.reduce((a, b) => (b.last_minute.items > a.last_minute.items ? b : a)).name;
  }
  state.chartQueue = choose($("chart-queue"), o.queues.map((q) => q.name), state.chartQueue);
  const points = o.history.queues[state.chartQueue] || [];
  const at = (key) => points.map((p) => [p.t_ms, p[key]]);
  RBCharts.lines($("chart-throughput"), [{ name: "items/s", points: at("items_per_s") }]);
  RBCharts.lines($("chart-latency"), [
    { name: "wait p50", points: at("wait_p50_ms") }, { name: "wait p99", points: at("wait_p99_ms") },
    { name: "service p50", points: at("service_p50_ms") }, { name: "service p99", points: at("service_p99_ms") },
  ], true);
  RBCharts.lines($("chart-batch"), [{ name: "items per batch", points: at("mean_batch") }]);
  const q = o.queues.find((x) => x.name === state.chartQueue);
  RBCharts.bars($("chart-sizes"), (q ? q.batch_sizes : []).map((b) => ({ label: sizeLabel(b.le), value: b.batches })));
}

// -- workers --------------------------------------------------------------------------------

function renderWorkers(o) {
  const body = el("tbody");
  for (const w of o.workers) {
    const busy = w.busy_ratio === null || w.busy_ratio === undefined ? NONE : `${Math.round(w.busy_ratio * 100)}%`;
    body.append(el("tr", { "data-worker": w.name },
      el("td", { class: "name" }, w.name), el("td", { class: `state-${w.state}`, "data-col": "state" }, w.state),
      el("td", {}, w.host || NONE), el("td", {}, w.pid === null ? NONE : String(w.pid)),
      el("td", { class: "name" }, w.queues.join(" ")), el("td", {}, count(w.in_flight)),
      el("td", {}, count(w.batches)), el("td", {}, count(w.items)), el("td", {}, age(w.last_batch_age_ms)),
      el("td", { "data-col": "busy" }, busy)));
  }
  $("workers").replaceChild(body, $("workers").tBodies[0]);
  $("no-workers").hidden = o.workers.length > 0;
}

// -- the refresh loop -----------------------------------------------------------------------

async function refresh() {
  state.running = true;
  state.again = false;
  try {
    const o = await api(listing());
    state.overview = o;
    $("where").textContent = `${o.redis} · namespace ${o.namespace}`;
    renderQueues(o);
    renderCharts(o);
    renderWorkers(o);
    await RBDead.refresh(o);
    if (state.watching) await lookUp(state.watching);
    $("updated").textContent = `updated ${new Date(o.time_ms).toLocaleTimeString()}`;
    problem("");
  } catch (error) {
    problem(`${error.message} (trying again)`);
  } finally {
    state.running = false;
    state.timer = setTimeout(refresh, state.again ? 0 : state.session.interval_ms);
  }
}

// -- request look-up ------------------------------------------------------------------------

async function lookUp(id) {
  const out = $("search-result");
  out.hidden = false;
  try {
    const found = await api(`/api/requests/${encodeURIComponent(id)}`);
    out.textContent = found.lines.length ? found.lines.join("\n") : `no request ${id} in any queue of this namespace`;
    const done = found.found.some((s) => s.state === "finished" && s.status !== "dead");
    if (done && state.watching === id) state.watching = null;
  } catch (error) {
    out.textContent = error.message;
  }
}

function watch(id) {
  state.watching = id;
  $("search-id").value = id;
  return lookUp(id);
}

// -- session: read-only, log in, log out ----------------------------------------------------

function renderSession() {
  const s = state.session;
  const mode = $("mode");
  mode.textContent = s.writable ? "writes allowed" : "read-only";
  mode.className = `badge ${s.writable ? "writable" : "readonly"}`;
  const auth = $("auth");
  auth.replaceChildren();
  if (s.writable && !s.logged_in) auth.append(el("a", { href: "/login", id: "login-link" }, "log in to replay or purge"));
  if (s.logged_in) {
    auth.append(el("form", { method: "post", action: "/logout" }, el("button", { type: "submit", id: "logout" }, "log out")));
  }
}

async function start() {
  try {
    state.session = await api("/api/session");
  } catch (error) {
    problem(error.message);
  }
  renderSession();
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("search-id").value.trim();
    if (id) watch(id);
  });
  $("queue-list").addEventListener("submit", (event) => {
    event.preventDefault();
    relist($("queue-match").value.trim(), false);
  });
  $("show-all").addEventListener("click", () => {
    $("queue-match").value = "";
    relist("", !state.all);
  });
  $("chart-queue").addEventListener("change", (e) => { state.chartQueue = e.target.value; if (state.overview) renderCharts(state.overview); });
  $("dead-queue").addEventListener("change", (e) => { state.deadQueue = e.target.value; state.deadSeen = null; if (state.overview) RBDead.refresh(state.overview); });
  refresh();
}

document.addEventListener("DOMContentLoaded", start);
