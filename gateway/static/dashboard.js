// notiflow delivery dashboard: fetches /v1/dashboard/* and draws SVG charts (no library:
// nothing to vendor, nothing fetched from outside). Each chart sets data-points="N" (marks
// drawn with data) once drawn, which is what the browser test checks.
"use strict";

const KEY_STORE = "notiflow.dashboard.key";
const USER_STORE = "notiflow.dashboard.user";
const SVG_NS = "http://www.w3.org/2000/svg";
const CHANNELS = ["push", "email", "sms", "inapp", "(none)"];
const OUTCOMES = {
  sent: "#2e9d5b", suppressed: "#a7b0ba", duplicate: "#7fb3d5", rejected: "#8e6cc1",
  failed: "#d64541", no_target: "#f0a030", expired: "#9a6b3f", dead_lettered: "#7b1d1d",
  bundled: "#3aa6a0",
};
const params = new URLSearchParams(location.search);
const REFRESH_MS = refreshMs(params.get("refresh"));
const USER_REFRESH_MS = 2000;
const BADGE_SAMPLES = 60;

/** Chart refresh period: ?refresh= in whole seconds, 2..3600; anything else is 10 s. */
function refreshMs(raw) {
  if (!/^[0-9]{1,4}$/.test(raw || "")) return 10000;
  const s = Number(raw);
  return s >= 2 && s <= 3600 ? s * 1000 : 10000;
}

// ---- the API key: typed into the form, kept in this tab only --------------------------
// A key in the URL ends up in server logs, history and Referer headers: it is wiped from the
// address bar at once and not used.
let refusedUrlKey = false;
if (params.has("key")) {
  refusedUrlKey = true;
  params.delete("key");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + (rest ? "?" + rest : ""));
}
localStorage.removeItem(KEY_STORE); // older pages kept it here, for good

class ApiError extends Error {}

function showLogin(why) {
  sessionStorage.removeItem(KEY_STORE);
  document.getElementById("main").hidden = true;
  document.getElementById("kpis").hidden = true;
  const box = document.getElementById("login-why");
  box.hidden = !why;
  box.textContent = why || "";
  document.getElementById("login").hidden = false;
  document.getElementById("key").focus();
}

async function api(path) {
  const key = sessionStorage.getItem(KEY_STORE) || "";
  const r = await fetch(path, { headers: key ? { Authorization: "Bearer " + key } : {} });
  let body = null;
  try { body = await r.json(); } catch { /* not JSON: reported below */ }
  if (!r.ok) {
    let why = body && body.detail !== undefined ? body.detail : r.statusText;
    if (why && typeof why === "object" && typeof why.reason === "string") why = why.reason;
    if (typeof why !== "string") why = JSON.stringify(why);
    if (r.status === 401 || r.status === 403) {
      showLogin(`${r.status} ${why}: enter an API key with the admin scope`);
    }
    throw new ApiError(`${path.split("?")[0]}: ${r.status} ${why}`);
  }
  return body;
}

// ---- tiny SVG helpers -------------------------------------------------------------
function svg(tag, attrs = {}, parent = null, text = null) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== null) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
function tip(node, text) { svg("title", {}, node, text); return node; }
function fmt(n) {
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(0) + "k";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + "k";
  return String(Math.round(n * 10) / 10);
}
function ms(n) { return n >= 1000 ? (n / 1000).toFixed(2) + " s" : Math.round(n) + " ms"; }
function clock(t) { return new Date(t * 1000).toTimeString().slice(0, 5); }
function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}
function finish(fig, points) {
  fig.dataset.points = String(points);
  if (!points && !fig.querySelector(".empty")) {
    const d = document.createElement("div");
    d.className = "empty";
    d.textContent = "no data in this window yet";
    fig.appendChild(d);
  }
}

// ---- deliveries per minute: one small chart per channel, columns stacked by outcome --
function drawDeliveries(data) {
  const fig = document.getElementById("chart-deliveries");
  fig.replaceChildren();
  const step = data.bucket_minutes * 60;
  const slots = Math.ceil(data.minutes / data.bucket_minutes);
  const last = Math.floor(data.now / step) * step;
  const first = last - (slots - 1) * step;
  const byChannel = new Map();
  const seenOutcomes = new Set();
  for (const r of data.rows) {
    const i = Math.round((r.t - first) / step);
    if (i < 0 || i >= slots || r.receipts <= 0) continue;
    if (!byChannel.has(r.channel)) byChannel.set(r.channel, new Map());
    const slot = byChannel.get(r.channel);
    if (!slot.has(i)) slot.set(i, []);
    slot.get(i).push(r);
    seenOutcomes.add(r.outcome);
  }
  const channels = [...byChannel.keys()].sort(
    (a, b) => (CHANNELS.indexOf(a) + 1 || 99) - (CHANNELS.indexOf(b) + 1 || 99) || a.localeCompare(b));
  const outcomeOrder = Object.keys(OUTCOMES);
  let points = 0;
  for (const ch of channels) {
    const W = 320, H = 150, L = 34, B = 18, T = 6;
    const slotsOf = byChannel.get(ch);
    let top = 0;
    for (const rs of slotsOf.values()) top = Math.max(top, rs.reduce((s, r) => s + r.receipts, 0));
    const ymax = niceMax(top);
    const box = document.createElement("div");
    const h3 = document.createElement("h3");
    h3.textContent = ch;
    box.appendChild(h3);
    const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${ch} receipts per minute` }, box);
    for (const f of [0, 0.5, 1]) {
      const y = T + (H - B - T) * (1 - f);
      svg("line", { x1: L, x2: W, y1: y, y2: y, class: "grid" }, s);
      svg("text", { x: L - 4, y: y + 4, "text-anchor": "end" }, s, fmt(ymax * f));
    }
    const bw = (W - L) / slots;
    for (const [i, rs] of slotsOf) {
      rs.sort((a, b) => outcomeOrder.indexOf(a.outcome) - outcomeOrder.indexOf(b.outcome));
      let y = H - B;
      for (const r of rs) {
        const h = (H - B - T) * r.receipts / ymax;
        y -= h;
        tip(svg("rect", {
          x: L + i * bw + bw * 0.1, y, width: Math.max(1, bw * 0.8), height: Math.max(0.5, h),
          fill: OUTCOMES[r.outcome] || "#555",
        }, s), `${clock(r.t)} ${ch} ${r.outcome}: ${r.receipts}`);
        points += 1;
      }
    }
    svg("text", { x: L, y: H - 4 }, s, clock(first));
    svg("text", { x: W, y: H - 4, "text-anchor": "end" }, s, clock(last));
    fig.appendChild(box);
  }
  const legend = document.getElementById("legend-outcomes");
  legend.replaceChildren();
  for (const o of outcomeOrder.filter((o) => seenOutcomes.has(o)).concat(
    [...seenOutcomes].filter((o) => !(o in OUTCOMES)))) {
    const span = document.createElement("span");
    const sw = document.createElement("i");
    sw.className = "sw";
    sw.style.background = OUTCOMES[o] || "#555"; // CSSOM: the CSP forbids inline style attributes
    span.append(sw, o);
    legend.appendChild(span);
  }
  finish(fig, points);
  // the totals strip comes from the same rows
  const sum = (pred) => data.rows.filter(pred).reduce((s, r) => s + r.receipts, 0);
  const total = sum(() => true);
  const sent = sum((r) => r.outcome === "sent");
  const bad = sum((r) => r.outcome === "failed" || r.outcome === "dead_lettered");
  const deliverable = sent + bad + sum((r) => r.outcome === "no_target" || r.outcome === "expired");
  document.getElementById("kpi-receipts").textContent = fmt(total);
  document.getElementById("kpi-sent").textContent = fmt(sent);
  document.getElementById("kpi-failed").textContent = fmt(bad);
  document.getElementById("kpi-rate").textContent =
    deliverable ? (100 * sent / deliverable).toFixed(1) + " %" : "–";
}

// ---- latency: p50 and p99 bars per priority ------------------------------------------
function drawLatency(data) {
  const fig = document.getElementById("chart-latency");
  fig.replaceChildren();
  const rows = data.rows;
  const W = 460, L = 70, R = 70, rowH = 44, T = 4;
  const H = T + rows.length * rowH + 18;
  const xmax = niceMax(Math.max(0, ...rows.map((r) => r.p99_ms)));
  const s = svg("svg", { viewBox: `0 0 ${W} ${Math.max(H, 60)}`, role: "img", "aria-label": "latency per priority" });
  const x = (v) => L + (W - L - R) * v / xmax;
  for (const f of [0, 0.5, 1]) {
    svg("line", { x1: x(xmax * f), x2: x(xmax * f), y1: T, y2: H - 16, class: "grid" }, s);
    svg("text", { x: x(xmax * f), y: H - 3, "text-anchor": "middle" }, s, ms(xmax * f));
  }
  let points = 0;
  rows.forEach((r, i) => {
    const y = T + i * rowH;
    svg("text", { x: L - 6, y: y + 18, "text-anchor": "end", class: "value" }, s, r.priority || "(none)");
    svg("text", { x: L - 6, y: y + 32, "text-anchor": "end" }, s, fmt(r.sent) + " sent");
    for (const [k, dy, cls, color] of [["p50_ms", 4, "p50", "#8fb8e8"], ["p99_ms", 20, "p99", "#1f5fae"]]) {
      tip(svg("rect", { x: L, y: y + dy, width: Math.max(1, x(r[k]) - L), height: 14,
        fill: color }, s), `${r.priority} ${cls}: ${ms(r[k])} (${r.sent} sent)`);
      svg("text", { x: x(r[k]) + 4, y: y + dy + 11, class: "value" }, s, `${cls} ${ms(r[k])}`);
      points += 1;
    }
  });
  if (rows.length) fig.appendChild(s);
  finish(fig, points);
}

// ---- top failure reasons: horizontal bars ---------------------------------------------
function drawFailures(data) {
  const fig = document.getElementById("chart-failures");
  fig.replaceChildren();
  const rows = data.rows;
  const W = 460, rowH = 34, T = 2;
  const H = T + rows.length * rowH;
  const xmax = Math.max(1, ...rows.map((r) => r.receipts));
  const s = svg("svg", { viewBox: `0 0 ${W} ${Math.max(H, 40)}`, role: "img", "aria-label": "top failure reasons" });
  let points = 0;
  rows.forEach((r, i) => {
    const y = T + i * rowH;
    const who = [r.channel, r.provider].filter(Boolean).join("/");
    const label = `${who} · ${r.outcome}${r.reason ? ": " + r.reason : ""}`;
    svg("text", { x: 0, y: y + 11, class: "value" }, s, label.length > 80 ? label.slice(0, 79) + "…" : label);
    const w = Math.max(2, (W - 50) * r.receipts / xmax);
    tip(svg("rect", { x: 0, y: y + 15, width: w, height: 12, rx: 2,
      fill: OUTCOMES[r.outcome] || "#555" }, s), `${label}: ${r.receipts}`);
    svg("text", { x: w + 4, y: y + 25 }, s, fmt(r.receipts));
    points += 1;
  });
  if (rows.length) fig.appendChild(s);
  finish(fig, points);
}

// ---- live in-app for one user: badge, its recent history, newest inbox entries ------
const badgeSamples = [];
let shownIds = new Set();

function drawBadge() {
  const fig = document.getElementById("chart-badge");
  fig.replaceChildren();
  const W = 260, H = 80, L = 26, P = 6;
  const n = badgeSamples.length;
  if (n) {
    const vmax = niceMax(Math.max(...badgeSamples) * 1.1);
    const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "badge over time" }, fig);
    // newest sample on the right edge, one step per poll
    const px = (i) => W - P - (W - L - P) * (n - 1 - i) / (BADGE_SAMPLES - 1);
    const py = (v) => H - P - (H - 2 * P) * v / vmax;
    for (const v of [0, vmax]) {
      svg("line", { x1: L, x2: W - P, y1: py(v), y2: py(v), class: "grid" }, s);
      svg("text", { x: L - 4, y: py(v) + 4, "text-anchor": "end" }, s, fmt(v));
    }
    const pts = badgeSamples.map((v, i) => `${px(i)},${py(v)}`);
    svg("polygon", { points: `${px(0)},${py(0)} ${pts.join(" ")} ${px(n - 1)},${py(0)}`,
      fill: "#c0392b", "fill-opacity": 0.12 }, s);
    svg("polyline", { points: pts.join(" "), fill: "none", stroke: "#c0392b", "stroke-width": 2 }, s);
    tip(svg("circle", { cx: px(n - 1), cy: py(badgeSamples[n - 1]), r: 3, fill: "#c0392b" }, s),
      `badge now: ${badgeSamples[n - 1]}`);
  }
  finish(fig, n);
}

function drawInbox(data) {
  document.getElementById("badge").textContent = fmt(data.badge);
  document.getElementById("inbox-total").textContent = fmt(data.inbox_total);
  const list = document.getElementById("inbox");
  const fresh = new Set();
  list.replaceChildren();
  for (const e of data.inbox) {
    const li = document.createElement("li");
    const b = document.createElement("b");
    b.textContent = e.title || e.type || "(untitled)";
    const small = document.createElement("small");
    const age = e.created_ms ? Math.max(0, Math.round((Date.now() - e.created_ms) / 1000)) : null;
    small.textContent = `${e.type || ""}${age === null ? "" : " · " + age + " s ago"}`;
    li.append(b, e.body || "", small);
    if (e.read) li.classList.add("read");
    if (shownIds.size && !shownIds.has(e.id)) li.classList.add("fresh");
    fresh.add(e.id);
    list.appendChild(li);
  }
  shownIds = fresh;
  if (!data.inbox.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "inbox is empty";
    list.appendChild(li);
  }
}

// ---- refresh loops -------------------------------------------------------------------
const problems = new Map();
function report(part, err) {
  if (err) problems.set(part, err.message); else problems.delete(part);
  const box = document.getElementById("problem");
  box.hidden = problems.size === 0;
  box.textContent = [...problems.values()].join("\n");
}

async function refreshCharts() {
  const minutes = document.getElementById("window").value;
  const q = `?minutes=${minutes}`;
  const jobs = [
    ["deliveries", `/v1/dashboard/deliveries${q}`, drawDeliveries],
    ["latency", `/v1/dashboard/latency${q}`, drawLatency],
    ["failures", `/v1/dashboard/failures${q}&limit=8`, drawFailures],
  ];
  await Promise.all(jobs.map(async ([part, path, draw]) => {
    try { draw(await api(path)); report(part, null); } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      report(part, e);
    }
  }));
  document.getElementById("status").textContent = "updated " + new Date().toTimeString().slice(0, 8);
}

async function refreshUser() {
  const user = document.getElementById("user").value.trim();
  if (!user) { finish(document.getElementById("chart-badge"), badgeSamples.length); return; }
  try {
    const data = await api(`/v1/dashboard/users/${encodeURIComponent(user)}/inapp?limit=10`);
    badgeSamples.push(data.badge);
    if (badgeSamples.length > BADGE_SAMPLES) badgeSamples.shift();
    drawInbox(data);
    drawBadge();
    report("user", null);
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    report("user", e);
  }
}

function loop(fn, every) {
  const run = async () => {
    if (sessionStorage.getItem(KEY_STORE)) {
      try { await fn(); } catch (e) { console.error(e); report(fn.name, e); }
    }
    setTimeout(run, every);
  };
  run();
}

function start() {
  document.getElementById("login").hidden = true;
  document.getElementById("main").hidden = false;
  document.getElementById("kpis").hidden = false;
  for (const fn of [refreshCharts, refreshUser]) {
    fn().catch((e) => { console.error(e); report(fn.name, e); });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.body.dataset.refreshMs = String(REFRESH_MS);
  const windowSelect = document.getElementById("window");
  if (/^[1-9][0-9]{0,4}$/.test(params.get("minutes") || "")) {
    const want = params.get("minutes");
    if (![...windowSelect.options].some((o) => o.value === want)) windowSelect.add(new Option(`${want} min`, want));
    windowSelect.value = want;
  }
  const userInput = document.getElementById("user");
  userInput.value = params.get("user") || localStorage.getItem(USER_STORE) || "";
  userInput.addEventListener("change", () => {
    localStorage.setItem(USER_STORE, userInput.value.trim());
    badgeSamples.length = 0;
    shownIds = new Set();
    refreshUser();
  });
  windowSelect.addEventListener("change", refreshCharts);
  document.getElementById("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = document.getElementById("key");
    sessionStorage.setItem(KEY_STORE, input.value.trim());
    input.value = "";
    start();
  });
  if (refusedUrlKey) {
    showLogin("A key in the URL is refused (it would stay in logs, history and Referer " +
              "headers) and was removed from the address bar: enter it here instead.");
  } else if (sessionStorage.getItem(KEY_STORE)) {
    start();
  } else {
    showLogin("");
  }
  // the loops skip their work while no key is set; each runs at most once per period
  setTimeout(() => loop(refreshCharts, REFRESH_MS), REFRESH_MS);
  setTimeout(() => loop(refreshUser, USER_REFRESH_MS), USER_REFRESH_MS);
});
