// The tenure operator dashboard: a client of the server's own API.
//
// - /v1/overview (services, routes, shares, workloads, accounts) is read
//   every few seconds, and soon after an event that may change it;
// - /v1/overview/leases is read a window at a time: the list is virtual
//   (only the rows in view exist), so 10,000 or 1,000,000 leases cost the
//   same to show;
// - /v1/events/stream (server-sent events) is read with fetch, so that the
//   bearer token can go in a header, and resumed with Last-Event-ID; events
//   are kept in a bounded buffer and drawn at most once per animation frame;
// - remaining times count down in the page between reads, from the
//   server's `remaining_ms` and the moment it was read.

const TOKEN_KEY = "tenure-token";
const ROW_PX = 24;
const OVERVIEW_EVERY_MS = 3000;
const EVENTS_KEPT = 5000;
const LEASE_WINDOW_EXTRA = 20;

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

let token = sessionStorage.getItem(TOKEN_KEY) || "";

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(path, { ...options, headers });
  if (res.status === 401) throw new Unauthorized("401");
  return res;
}

async function getJson(path) {
  const res = await api(path);
  const body = await res.json();
  if (!res.ok) throw new Error(body.message || `${res.status}`);
  return body;
}

// ---------- countdowns ----------

// A cell that counts down: `data-deadline` is a local Date.now() value.
function left(remainingMs, readAt) {
  if (remainingMs === null || remainingMs === undefined) return `<span class="muted">–</span>`;
  const deadline = readAt + remainingMs;
  return `<span class="left" data-deadline="${deadline}">${secondsLeft(deadline)}</span>`;
}

function secondsLeft(deadline) {
  const s = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
  return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m` : `${s}s`;
}

function tick() {
  for (const el of document.querySelectorAll("[data-deadline]")) {
    const text = secondsLeft(Number(el.dataset.deadline));
    if (el.textContent !== text) el.textContent = text;
  }
}

// ---------- overview ----------

const entity = (kind, name, account, text) =>
  `<span data-entity="${esc(kind)}/${esc(name)}" data-account="${esc(account)}">${esc(text ?? name)}</span>`;

// A table body's rows, or one saying there is nothing.
function fill(table, items, row, columns) {
  $(table).tBodies[0].innerHTML = items.length ? items.map(row).join("") : `<tr><td colspan="${columns}" class="muted">none</td></tr>`;
}

function renderOverview(o, readAt) {
  const counts = [
    ["live leases", o.live_leases],
    ["services", o.services.length],
    ["instances", o.services.reduce((n, s) => n + s.instances.length, 0)],
    ["shares", o.shares.length],
    ["workloads", o.workloads.length],
  ];
  if (o.accounts) counts.push(["accounts", o.accounts.length]);
  counts.push(["log position", o.position]);
  $("counts").innerHTML = counts.map(([k, v]) => `<div><b>${esc(v)}</b>${esc(k)}</div>`).join("");

  $("services-count").textContent = `(${o.services.length})`;
  fill(
    "services",
    o.services,
    (s) => {
      const ports = s.ports.map((p) => `${p.port}:${p.destination_port}/${p.handlers.join("+")}`).join(" ");
      const head = `<td rowspan="${Math.max(1, s.instances.length)}">${entity("service", s.name, s.account)}${s.auto ? ' <span class="muted">(auto)</span>' : ""}</td>
        <td rowspan="${Math.max(1, s.instances.length)}" class="mono">${esc(s.fqdn)}<br><span class="muted">${esc(ports)}</span></td>`;
      if (s.instances.length === 0) return `<tr data-service="${esc(s.name)}">${head}<td colspan="5" class="muted">no instance</td></tr>`;
      return s.instances
        .map(
          (i, n) => `<tr data-service="${esc(s.name)}" data-instance="${esc(i.name)}">${n === 0 ? head : ""}
          <td>${entity("instance", i.name, s.account)}</td><td class="mono">${esc(i.address)}</td>
          <td>${entity("lease", i.lease, s.account)} <span class="${i.live ? "live" : "dead"}">${i.live ? "live" : "ended"}</span></td>
          <td>${left(i.remaining_ms, readAt)}</td><td class="in-flight">${i.in_flight}</td></tr>`,
        )
        .join("");
    },
    7,
  );

  fill(
    "routes",
    o.routes,
    (r) => `<tr data-host="${esc(r.host)}"><td class="mono">${esc(r.host)}</td><td>${esc(r.kind)}${r.private ? " (private)" : ""}</td>
        <td class="mono">${r.backends.length ? r.backends.map(esc).join(", ") : '<span class="dead">none: 503</span>'}</td></tr>`,
    3,
  );

  $("shares-count").textContent = `(${o.shares.length})`;
  fill(
    "shares",
    o.shares,
    (s) => {
      const session = s.session
        ? `<span class="${s.session.live ? "live" : "dead"}">${s.session.live ? "live" : "ended"}</span>`
        : '<span class="muted">none</span>';
      return `<tr data-share="${esc(s.token)}"><td>${entity("share", s.token, s.account)}</td><td>${esc(s.mode)} ${esc(s.backend_mode)}</td>
        <td class="mono">${esc(s.target)}</td><td>${session}</td><td>${left(s.session?.remaining_ms, readAt)}</td><td>${s.access_grants}</td></tr>`;
    },
    6,
  );

  const byNode = [...o.workloads].sort((a, b) => a.node.localeCompare(b.node) || a.id - b.id);
  fill(
    "workloads",
    byNode,
    (w) => {
      const state = w.to_delete ? `to delete (${w.to_delete})` : "deployed";
      const result = w.result ? `${esc(w.result.state)}${w.result.error ? `: ${esc(w.result.error)}` : ""}` : '<span class="muted">none yet</span>';
      return `<tr data-workload="${w.id}"><td class="mono">${esc(w.node)}</td><td>${entity("workload", w.id, w.account)}</td><td>${esc(w.type)}</td>
        <td>${esc(state)}</td><td>${result}</td><td>${left(w.to_delete ? null : w.remaining_ms, readAt)}</td></tr>`;
    },
    6,
  );

  $("accounts-section").hidden = !o.accounts;
  if (o.accounts) {
    const none = o.accounts.length ? "" : `<tr><td colspan="7" class="muted">none: local mode has the one account "default"</td></tr>`;
    $("accounts").tBodies[0].innerHTML = none + o.accounts
      .map(
        (a) => `<tr data-account-row="${esc(a.name)}"><td>${entity("account", a.name, a.name)}</td><td>${a.tokens}</td><td>${a.live_leases}</td>
          <td>${a.services}</td><td>${a.shares}</td><td>${a.workloads}</td><td>${esc(a.created_at)}</td></tr>`,
      )
      .join("");
  }
  $("who").textContent = o.accounts ? "all accounts" : me ? `account ${me}` : "";
}

let overviewBusy = false;
let overviewAgain = false;

async function refreshOverview() {
  if (overviewBusy) {
    overviewAgain = true;
    return;
  }
  overviewBusy = true;
  try {
    const readAt = Date.now();
    const o = await getJson("/v1/overview");
    renderOverview(o, readAt);
    $("status").textContent = `position ${o.position}`;
    $("status").className = "muted";
  } catch (e) {
    failed(e);
  } finally {
    overviewBusy = false;
    if (overviewAgain) {
      overviewAgain = false;
      setTimeout(refreshOverview, 200);
    }
  }
}

// ---------- leases: a virtual list ----------

const leaseView = { total: 0, busy: false, again: false, rows: new Map() };

async function refreshLeases() {
  if (leaseView.busy) {
    leaseView.again = true;
    return;
  }
  leaseView.busy = true;
  try {
    const box = $("leases");
    const first = Math.max(0, Math.floor(box.scrollTop / ROW_PX) - LEASE_WINDOW_EXTRA);
    const count = Math.ceil(box.clientHeight / ROW_PX) + 2 * LEASE_WINDOW_EXTRA;
    const readAt = Date.now();
    const page = await getJson(`/v1/overview/leases?offset=${first}&limit=${Math.min(count, 1000)}`);
    leaseView.total = page.total;
    $("leases-count").textContent = `(${page.total})`;
    box.firstElementChild.style.height = `${page.total * ROW_PX}px`;
    // Rows are kept by lease and updated in place: a refresh moves and
    // retexts them, it does not rebuild the list.
    const seen = new Set();
    page.leases.forEach((l, n) => {
      const key = `${l.account}/${l.id}`;
      seen.add(key);
      let row = leaseView.rows.get(key);
      if (!row) {
        row = document.createElement("div");
        row.className = "row lease-row";
        row.dataset.lease = l.id;
        row.innerHTML = `<span>${entity("lease", l.id, l.account)}</span><span>${esc(l.account)}</span><span>${l.ttl}s</span>
          <span class="left"></span><span class="mono"></span>`;
        box.appendChild(row);
        leaseView.rows.set(key, row);
      }
      row.style.top = `${(page.offset + n) * ROW_PX}px`;
      const deadline = readAt + l.remaining_ms;
      row.children[3].dataset.deadline = deadline;
      row.children[3].textContent = secondsLeft(deadline);
      const keys = l.keys.map((k) => (typeof k === "string" ? k : `base64:${k.base64}`)).join(" ");
      if (row.children[4].textContent !== keys) row.children[4].textContent = keys;
    });
    for (const [key, row] of leaseView.rows) {
      if (!seen.has(key)) {
        row.remove();
        leaseView.rows.delete(key);
      }
    }
  } catch (e) {
    failed(e);
  } finally {
    leaseView.busy = false;
    if (leaseView.again) {
      leaseView.again = false;
      setTimeout(refreshLeases, 100);
    }
  }
}

// ---------- live events ----------

const events = { all: [], shown: [], rows: new Map(), paused: false, unseen: 0, drawPending: false, last: null, filter: "" };

function matches(e) {
  const f = events.filter;
  return !f || e.type.toLowerCase().includes(f) || e.stream.toLowerCase().includes(f) || e.account.toLowerCase().includes(f);
}

// The entity an event's stream names, for its audit trail.
function streamEntity(stream) {
  const parts = stream.split("/");
  if (parts[0] === "lease" || parts[0] === "service" || parts[0] === "instance") return [`${parts[0]}/${parts[2]}`, parts[1]];
  if (parts[0] === "share" || parts[0] === "account") return [`${parts[0]}/${parts[1]}`, parts[0] === "account" ? parts[1] : ""];
  return null;
}

function addEvents(batch) {
  for (const e of batch) events.all.push(e);
  if (events.all.length > EVENTS_KEPT) events.all.splice(0, events.all.length - EVENTS_KEPT);
  const fresh = batch.filter(matches);
  if (events.paused) {
    events.unseen += fresh.length;
    $("resume").hidden = events.unseen === 0;
    $("resume").textContent = `${events.unseen} new events: back to the top`;
  } else {
    scheduleDraw();
  }
  $("events-count").textContent = `(${events.all.length} kept)`;
  // Key writes (and the keep-alive events of logs written before
  // keep-alives left the log) change no table; anything else may, so read
  // again soon.
  if (batch.some((e) => e.type !== "LeaseKeptAlive" && !e.stream.startsWith("keyspace/"))) {
    scheduleRefresh();
  }
}

function scheduleDraw() {
  if (events.drawPending) return;
  events.drawPending = true;
  requestAnimationFrame(() => {
    events.drawPending = false;
    drawEvents();
  });
}

function drawEvents() {
  if (!events.paused) {
    events.shown = events.all.filter(matches).reverse();
    events.unseen = 0;
    $("resume").hidden = true;
  }
  const box = $("events");
  box.firstElementChild.style.height = `${events.shown.length * ROW_PX}px`;
  const first = Math.max(0, Math.floor(box.scrollTop / ROW_PX) - 10);
  const last = Math.min(events.shown.length, first + Math.ceil(box.clientHeight / ROW_PX) + 20);
  // Rows are kept by position: an event's row is built once, then only
  // moved while it stays in view.
  const seen = new Set();
  for (let n = first; n < last; n++) {
    const e = events.shown[n];
    seen.add(e.position);
    let row = events.rows.get(e.position);
    if (!row) {
      const target = streamEntity(e.stream);
      const stream = target
        ? `<span data-entity="${esc(target[0])}" data-account="${esc(target[1] || e.account)}">${esc(e.stream)}</span>`
        : esc(e.stream);
      row = document.createElement("div");
      row.className = "row event-row";
      row.dataset.position = e.position;
      row.innerHTML = `<span>${e.position}</span><span>${esc(e.time.slice(11, 23))}</span><span>${esc(e.account)}</span>
        <span>${stream}</span><span class="event-type">${esc(e.type)}</span><span>${esc(e.summary)}</span>`;
      box.appendChild(row);
      events.rows.set(e.position, row);
    }
    row.style.top = `${n * ROW_PX}px`;
  }
  for (const [position, row] of events.rows) {
    if (!seen.has(position)) {
      row.remove();
      events.rows.delete(position);
    }
  }
}

async function follow() {
  for (;;) {
    try {
      const headers = { Accept: "text/event-stream" };
      if (events.last !== null) headers["Last-Event-ID"] = String(events.last);
      // Start with what is recent, then follow.
      const path = events.last === null ? await recentStart() : "/v1/events/stream";
      const res = await api(path, { headers });
      if (!res.ok) throw new Error(`events: ${res.status}`);
      $("stream-status").textContent = "following";
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        const batch = [];
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let data = "";
          for (const line of frame.split("\n")) {
            if (line.startsWith("id: ")) events.last = Number(line.slice(4));
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (data) batch.push(JSON.parse(data));
        }
        if (batch.length) addEvents(batch);
      }
    } catch (e) {
      if (e instanceof Unauthorized) return failed(e);
      $("stream-status").textContent = `reconnecting (${e.message})`;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// The stream from the last 200 events on.
async function recentStart() {
  const health = await getJson("/healthz");
  const from = Math.max(1, health.position - 199);
  return `/v1/events/stream?from=${from}`;
}

// ---------- refresh pacing ----------

// After a change, read again 150 ms later, but not more than twice a
// second however many events arrive.
const REFRESH_AFTER_MS = 150;
const REFRESH_EVERY_MS = 500;
let refreshTimer = null;
let refreshedAt = 0;

function scheduleRefresh() {
  if (refreshTimer) return;
  const wait = Math.max(REFRESH_AFTER_MS, refreshedAt + REFRESH_EVERY_MS - Date.now());
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    refreshedAt = Date.now();
    refreshOverview();
    refreshLeases();
  }, wait);
}

// ---------- audit ----------

async function openAudit(entityRef, account) {
  const params = new URLSearchParams({ entity: entityRef });
  if (account && $("who").textContent === "all accounts") params.set("account", account);
  $("audit").hidden = false;
  $("audit-title").textContent = `audit: ${entityRef}`;
  $("audit-rows").innerHTML = `<tr><td colspan="5" class="muted">loading…</td></tr>`;
  try {
    const audit = await getJson(`/v1/audit?${params}`);
    $("audit-rows").innerHTML =
      audit.events
        .map(
          (e) => `<tr><td>${e.position}</td><td>${esc(e.time)}</td><td>${esc(e.type)}</td><td>${esc(e.summary)}</td>
            <td>${e.caused_by ?? ""}</td></tr>`,
        )
        .join("") + (audit.truncated ? `<tr><td colspan="5" class="muted">truncated</td></tr>` : "");
  } catch (e) {
    $("audit-rows").innerHTML = `<tr><td colspan="5" class="error">${esc(e.message)}</td></tr>`;
  }
}

// ---------- start ----------

function failed(e) {
  if (e instanceof Unauthorized) {
    $("main").hidden = true;
    $("login").hidden = false;
    $("signout").hidden = true;
    if (token) $("login-error").textContent = "that token was refused";
    return;
  }
  $("status").textContent = `error: ${e.message}`;
  $("status").className = "error";
}

let started = false;
// The caller's account name, when it is one account.
let me = "";

async function start() {
  try {
    await getJson("/v1/overview");
  } catch (e) {
    return failed(e);
  }
  try {
    me = (await getJson("/v1/account")).name || "";
  } catch {
    me = "";
  }
  $("login").hidden = true;
  $("main").hidden = false;
  $("signout").hidden = !token;
  if (started) return;
  started = true;
  refreshOverview();
  refreshLeases();
  follow();
  setInterval(refreshOverview, OVERVIEW_EVERY_MS);
  setInterval(refreshLeases, OVERVIEW_EVERY_MS);
  setInterval(tick, 250);
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  start();
});

$("signout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
});

let leaseScroll = null;
$("leases").addEventListener("scroll", () => {
  clearTimeout(leaseScroll);
  leaseScroll = setTimeout(refreshLeases, 60);
});

// Only the user's scrolling pauses the list (the style sheet turns the
// browser's scroll anchoring off, so new rows never scroll it by themselves).
$("events").addEventListener("scroll", () => {
  const paused = $("events").scrollTop > 0;
  if (paused !== events.paused) {
    events.paused = paused;
    $("stream-status").textContent = paused ? "paused while scrolled" : "following";
  }
  scheduleDraw();
});

$("resume").addEventListener("click", () => {
  $("events").scrollTop = 0;
  events.paused = false;
  scheduleDraw();
});

$("event-filter").addEventListener("input", (ev) => {
  events.filter = ev.target.value.trim().toLowerCase();
  events.paused = false;
  $("events").scrollTop = 0;
  scheduleDraw();
});

document.addEventListener("click", (ev) => {
  const target = ev.target.closest("[data-entity]");
  if (target) openAudit(target.dataset.entity, target.dataset.account);
});

$("audit-close").addEventListener("click", () => {
  $("audit").hidden = true;
});

start();
