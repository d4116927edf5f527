// Tansuo dashboard: plain JavaScript + plotly.js (served from the installed plotly wheel).
// Every number comes from the /v1 API, called with the read key kept in sessionStorage.
"use strict";

const KEY = "tansuo-key";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g,
  (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const fmt = (x, d = 4) => (x === null || x === undefined) ? "–"
  : (typeof x === "number" ? (Number.isInteger(x) ? x.toLocaleString() : x.toFixed(d)) : esc(x));
const PLOT = {responsive: true, displaylogo: false};
const LAYOUT = {margin: {l: 50, r: 20, t: 10, b: 40}, paper_bgcolor: "#fff",
                plot_bgcolor: "#fff", legend: {orientation: "h", y: -0.2}};

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path) {
  const key = sessionStorage.getItem(KEY);
  if (!key) throw new ApiError(401, "no key");
  const r = await fetch(path, {headers: {Authorization: "Bearer " + key}});
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    throw new ApiError(r.status, (body.error && body.error.message) || r.statusText);
  }
  return body;
}

function table(el, headers, rows) {
  const head = "<tr>" + headers.map((h) => `<th>${esc(h)}</th>`).join("") + "</tr>";
  el.innerHTML = head + (rows.length ? rows.join("")
    : `<tr><td colspan="${headers.length}" class="muted">nothing yet</td></tr>`);
}

function cards(el, pairs) {
  el.innerHTML = pairs.map(([k, v]) =>
    `<div class="card"><div class="v">${v}</div><div class="k">${esc(k)}</div></div>`).join("");
}

function itemLink(id, title) {
  return `<a class="item" href="#/items/${encodeURIComponent(id)}">${esc(id)}</a>` +
    (title ? ` <span class="muted">${esc(title)}</span>` : "");
}

// -- overview ---------------------------------------------------------------------------------
async function showOverview() {
  const o = await api("/v1/insights/overview");
  const h = o.health, m = o.model;
  cards($("overview-cards"), [
    ["users", fmt(h.users)], ["items", fmt(h.items)],
    ["events served by the API", fmt(o.counters.events_ingested || 0)],
    ["slots served", fmt(o.counters.slots_served || 0)],
    ["model", esc(m.model || "none")],
    ["yardstick NDCG@10", m.yardstick ? fmt(m.yardstick["ndcg@10"]) : "–"],
  ]);
  const act = o.activity;
  const traces = Object.entries(act.events_by_type).map(([type, byDay]) => ({
    type: "bar", name: type, x: act.days, y: act.days.map((d) => byDay[d] || 0)}));
  Plotly.newPlot("chart-activity", traces, {...LAYOUT, barmode: "stack"}, PLOT);
  Plotly.newPlot("chart-active", [{type: "scatter", mode: "lines", name: "active users",
    x: act.days, y: act.days.map((d) => act.active_users[d] || 0)}], LAYOUT, PLOT);
  // population counts are differentially private releases (OpenDP; see docs/privacy.md)
  const dp = o.private;
  const trendRow = (t) => `<tr><td>${esc(t.name)}</td><td class="trend-${t.trend}">` +
    `${esc(t.trend)}</td><td class="num">${fmt(t.earlier)}</td>` +
    `<td class="num">${fmt(t.recent)}</td></tr>`;
  const tHead = ["interest", "trend", "earlier events (DP)", "recent events (DP)"];
  const rows = dp.trends.rows || [];
  table($("table-rising"), tHead, rows.filter((t) => t.trend === "rising" || t.trend === "new")
    .slice(0, 10).map(trendRow));
  table($("table-fading"), tHead, rows.filter((t) => t.trend === "fading" || t.trend === "gone")
    .slice(0, 10).map(trendRow));
  const sizes = dp.segments.values || {}, segNames = dp.segments.names || {};
  const segIds = Object.keys(sizes);
  Plotly.newPlot("chart-segments", [{type: "bar", orientation: "h",
    y: segIds.map((k) => `#${k}: ${segNames[k] || ""}`), x: segIds.map((k) => sizes[k]),
    name: "users (DP)"}],
    {...LAYOUT, margin: {l: 260, r: 20, t: 10, b: 40}, xaxis: {title: "users (DP)"},
     yaxis: {type: "category", automargin: true}}, PLOT);
  table($("table-popular"), ["item", "shoppers in 7 days (DP)"], (dp.popular.items || [])
    .map((i) => `<tr><td>${itemLink(i.item_id, i.title)}</td>` +
      `<td class="num">${fmt(i.users)}</td></tr>`));
  const b = dp.budget;
  $("dp-note").textContent = `Segment sizes, trend counts and popular items are ` +
    `differentially private (OpenDP, ε = ${b.per_release} per release; ${fmt(b.spent, 1)} of ` +
    `${fmt(b.total, 1)} spent). ` + [dp.segments, dp.trends, dp.popular]
      .map((r) => r.note || "").filter((x) => x).join(" ");
  $("overview-model").innerHTML = m.version
    ? `<p><b>${esc(m.version)}</b> — trained on ${fmt(m.users)} users, ${fmt(m.items)} items` +
      ` (${esc(m.created_at || "")})</p>` : "<p class='muted'>no trained model: " +
      "recommendations come from interest-space scores</p>";
  const ev = o.evaluation;
  table($("table-eval-summary"), ["model", "NDCG@10", "95% CI", "HR@10"],
    ev ? Object.entries(ev.models).map(([name, r]) => `<tr><td>${esc(name)}</td>` +
      `<td class="num">${fmt(r["ndcg@10"])}</td><td class="num">` +
      `${r.ci ? fmt(r.ci[0]) + "–" + fmt(r.ci[1]) : "–"}</td>` +
      `<td class="num">${fmt(r["hr@10"])}</td></tr>`) : []);
}

// -- users ------------------------------------------------------------------------------------
async function searchUsers(prefix) {
  const r = await api("/v1/insights/users?limit=30&prefix=" + encodeURIComponent(prefix));
  $("user-matches").textContent = `${r.total.toLocaleString()} users match`;
  $("user-list").innerHTML = r.users.map((u) =>
    `<li><a href="#/users/${encodeURIComponent(u.user_id)}">${esc(u.user_id)}</a> ` +
    `<span class="muted">${fmt(u.events)} events</span></li>`).join("");
  return r;
}

function interestChart(doc) {
  const tl = doc.timeline;
  const names = new Set();
  tl.forEach((w) => Object.keys(w.interests).forEach((n) => names.add(n)));
  const x = tl.map((w) => w.start);
  const traces = [...names].map((n) => ({type: "scatter", mode: "lines", stackgroup: "one",
    name: n, x, y: tl.map((w) => w.interests[n] || 0), line: {width: 0.5}}));
  const shapes = doc.shifts.map((s) => ({type: "line", xref: "x", yref: "paper",
    x0: s.timestamp, x1: s.timestamp, y0: 0, y1: 1, line: {color: "#b3261e", dash: "dot"}}));
  const annotations = doc.shifts.map((s) => ({x: s.timestamp, y: 1, yref: "paper",
    text: "shift", showarrow: false, font: {color: "#b3261e", size: 10}, yanchor: "bottom"}));
  Plotly.newPlot("user-chart", traces, {...LAYOUT, shapes, annotations,
    yaxis: {title: "share of events", range: [0, 1]}}, PLOT);
}

async function showRecs(user) {
  const explore = $("explore-toggle").checked ? "" : "&explore=0";
  const r = await api(`/v1/users/${encodeURIComponent(user)}/recommendations?k=10${explore}`);
  $("recs-meta").textContent = `${r.strategy}, explore ${r.explore} · request ${r.request_id}`;
  table($("recs-table"), ["#", "item", "score", "propensity", "reason"], r.items.map((it) =>
    `<tr class="${it.reason.type === "exploring" ? "explored" : ""}">` +
    `<td>${it.position + 1}</td><td>${itemLink(it.item_id, it.title)}</td>` +
    `<td class="num">${fmt(it.score)}</td><td class="num">${fmt(it.propensity, 3)}</td>` +
    `<td>${esc(it.reason.text)}` + (it.reason.because && it.reason.because.length
      ? ` <span class="muted">(${it.reason.because.slice(0, 3).map(esc).join(", ")})</span>`
      : "") + "</td></tr>"));
}

async function showUser(user) {
  $("user-search").value = user;
  const [doc, events] = await Promise.all([
    api(`/v1/users/${encodeURIComponent(user)}/interests`),
    api(`/v1/users/${encodeURIComponent(user)}/events?limit=15`)]);
  $("user-detail").hidden = false;
  $("user-title").textContent = user;
  const st = doc.stats;
  cards($("user-stats"), [["events", fmt(st.events)], ["active days", fmt(st.active_days)],
    ["purchases / week", fmt(st.purchases_per_week, 2)], ["spend", fmt(st.spend, 2)],
    ["last seen", esc(st.last_seen || "–")]]);
  interestChart(doc);
  table($("user-interests"), ["interest", "tag (confidence)", "weight", "trend", "items"],
    doc.interests.map((i) => `<tr><td>${esc(i.name)}</td><td>${esc(i.tag)}` +
      (i.tags[0] ? ` <span class="muted">(${fmt(i.tags[0].confidence, 2)})</span>` : "") +
      `</td><td class="num">${fmt(i.weight, 3)}</td>` +
      `<td class="trend-${i.trend}">${esc(i.trend)}</td>` +
      `<td>${i.items.slice(0, 3).map((x) => itemLink(x)).join(", ")}</td></tr>`));
  table($("user-events"), ["when", "type", "item", "interest"], events.events.map((e) =>
    `<tr><td>${esc((e.timestamp || "").replace("T", " ").slice(0, 16))}</td>` +
    `<td>${esc(e.type)}</td><td>${e.item_id ? itemLink(e.item_id, e.title) : "–"}</td>` +
    `<td>${esc(e.interest || "")}</td></tr>`));
  await showRecs(user);
}

async function showUsers(user) {
  if (user) return showUser(user);
  $("user-detail").hidden = true;
  await searchUsers($("user-search").value || "");
}

// -- items ------------------------------------------------------------------------------------
async function showItem(id) {
  if (!id) { $("item-detail").hidden = true; return; }
  $("item-search").value = id;
  const r = await api(`/v1/items/${encodeURIComponent(id)}?k=10`);
  $("item-detail").hidden = false;
  $("item-title").textContent = `${r.item.item_id} · ${r.item.title || ""}`;
  cards($("item-facts"), [["category", esc(r.item.category || "–")],
    ["brand", esc(r.item.brand || "–")], ["price", fmt(r.item.price, 2)],
    ["interest", esc(r.interest || "–")], ["events", fmt(r.events)]]);
  table($("item-similar"), ["item", "similarity", "interest"], r.similar.map((s) =>
    `<tr><td>${itemLink(s.item_id, s.title)}</td><td class="num">${fmt(s.similarity, 3)}` +
    `</td><td>${esc(s.interest || "")}</td></tr>`));
  table($("item-complementary"), ["item", "bought together"], r.complementary.map((c) =>
    `<tr><td>${itemLink(c.item_id, c.title)}</td><td class="num">${fmt(c.together)}</td></tr>`));
  Plotly.newPlot("item-segments", [{type: "bar", orientation: "h",
    y: r.segments.map((s) => `#${s.segment}: ${s.label}`),
    x: r.segments.map((s) => s.users), name: "users who engaged"}],
    {...LAYOUT, margin: {l: 260, r: 20, t: 10, b: 40}, xaxis: {title: "users"},
     yaxis: {type: "category", automargin: true}}, PLOT);
}

// -- exploration ------------------------------------------------------------------------------
async function showExploration() {
  const r = await api("/v1/insights/exploration");
  Plotly.newPlot("chart-ctr", r.series.map((s) => ({type: "scatter", mode: "lines+markers",
    name: s.policy, x: s.times, y: s.ctr, text: s.shown.map((n, i) =>
      `${s.clicks[i]} clicks / ${n} shown`)})),
    {...LAYOUT, yaxis: {title: `click-through per shown slot (per ${r.bucket || "day"})`,
                        rangemode: "tozero"}}, PLOT);
  const bars = [];
  for (const [target, ests] of Object.entries(r.estimates)) {
    const names = Object.keys(ests);
    bars.push({type: "bar", name: target + " policy", x: names,
      y: names.map((n) => ests[n].value),
      error_y: {type: "data", symmetric: false,
        array: names.map((n) => ests[n].high - ests[n].value),
        arrayminus: names.map((n) => ests[n].value - ests[n].low)}});
  }
  Plotly.newPlot("chart-ope", bars, {...LAYOUT, barmode: "group",
    xaxis: {type: "category"}, yaxis: {title: "estimated click-through per slot"}}, PLOT);
  $("exploration-note").textContent = r.note ||
    `${fmt(r.requests)} served slates, ${fmt(r.slots)} slots, ${fmt(r.clicks)} clicks ` +
    "joined by request id and position.";
}

// -- evaluation -------------------------------------------------------------------------------
async function showEvaluation() {
  const {report} = await api("/v1/insights/evaluation");
  if (!report) {
    $("eval-note").textContent = "No report yet: run `tansuo evaluate` on this data " +
      "directory (it keeps its latest report for this page).";
    table($("table-eval"), ["model"], []);
    Plotly.purge("chart-eval");
    return;
  }
  $("eval-title").textContent = `Latest evaluation: ${report.dataset}, ${report.protocol}`;
  // our models, then peers (other libraries on the same split), side by side
  const rows = Object.entries(report.models).map(([n, r]) => ({name: n, ...r, peer: false}))
    .concat(Object.entries(report.peers || {}).map(([n, r]) =>
      ({name: `${n} (peer: ${r.library || ""})`, ...r, peer: true})));
  const metrics = Object.keys(rows[0].metrics).filter((m) =>
    rows.every((r) => m in r.metrics));
  const ci = (r, m, i) => (r.ci && r.ci[m]) ? r.ci[m][i] : r.metrics[m];
  Plotly.newPlot("chart-eval", [false, true].map((peer) => {
    const rs = rows.filter((r) => r.peer === peer && "ndcg@10" in r.metrics);
    return {type: "bar", name: peer ? "peers" : "Tansuo", x: rs.map((r) => r.name),
      y: rs.map((r) => r.metrics["ndcg@10"]),
      error_y: {type: "data", symmetric: false,
        array: rs.map((r) => ci(r, "ndcg@10", 1) - r.metrics["ndcg@10"]),
        arrayminus: rs.map((r) => r.metrics["ndcg@10"] - ci(r, "ndcg@10", 0))}};
  }), {...LAYOUT, xaxis: {type: "category"}, yaxis: {title: "NDCG@10 (95% CI)"}}, PLOT);
  table($("table-eval"), ["model", ...metrics, "train s"], rows.map((r) =>
    `<tr><td>${esc(r.name)}</td>` + metrics.map((m) => `<td class="num">${fmt(r.metrics[m])}` +
      `<br><span class="muted">${fmt(ci(r, m, 0))}–${fmt(ci(r, m, 1))}</span></td>`).join("") +
    `<td class="num">${r.train_seconds === null || r.train_seconds === undefined ? "–"
      : r.train_seconds.toFixed(1)}</td></tr>`));
  $("eval-note").textContent = "";
}

// -- routing ----------------------------------------------------------------------------------
const PAGES = {overview: showOverview, users: showUsers, items: showItem,
               exploration: showExploration, evaluation: showEvaluation};

function takeKeyFromUrl() {
  const m = location.hash.match(/key=([^&]+)/);
  if (m) {
    sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + "#/overview");
  }
}

async function route() {
  takeKeyFromUrl();
  const [page, arg] = (location.hash.replace(/^#\/?/, "") || "overview").split("/");
  const name = PAGES[page] ? page : "overview";
  document.querySelectorAll(".page").forEach((s) => { s.hidden = true; });
  document.querySelectorAll("nav a").forEach((a) =>
    a.classList.toggle("active", a.dataset.page === name));
  $("status").textContent = "";
  if (!sessionStorage.getItem(KEY)) { $("login").hidden = false; return; }
  $("page-" + name).hidden = false;
  try {
    await PAGES[name](arg ? decodeURIComponent(arg) : undefined);
  } catch (e) {
    if (e.status === 401 || e.status === 403) {
      sessionStorage.removeItem(KEY);
      $("page-" + name).hidden = true;
      $("login").hidden = false;
      $("login-error").textContent = e.message;
    } else {
      $("status").textContent = e.message;
    }
  }
}

async function badge() {
  try {
    const h = await (await fetch("/v1/health")).json();
    $("model-badge").textContent = `model ${h.model_version || "none"} · ` +
      `${h.users.toLocaleString()} users · ${h.items.toLocaleString()} items`;
  } catch (e) { $("model-badge").textContent = "service unreachable"; }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("key-input").value.trim());
    $("login-error").textContent = "";
    route();
  });
  $("user-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = $("user-search").value.trim();
    searchUsers(q).then((r) => {
      if (r.users.length === 1 || r.users.some((u) => u.user_id === q)) {
        location.hash = "#/users/" + encodeURIComponent(
          r.users.some((u) => u.user_id === q) ? q : r.users[0].user_id);
      } else {
        $("user-detail").hidden = true;
      }
    }).catch((e) => { $("status").textContent = e.message; });
  });
  $("item-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    location.hash = "#/items/" + encodeURIComponent($("item-search").value.trim());
  });
  $("explore-toggle").addEventListener("change", () => {
    const user = $("user-title").textContent;
    if (user) showRecs(user).catch((e) => { $("status").textContent = e.message; });
  });
  badge();
  route();
});
