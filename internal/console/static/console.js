// respawn console: polls the world manager's JSON API and draws it. The
// operator token lives in sessionStorage (this tab only) and goes out as
// "Authorization: Bearer" on the mutating calls; reads need none on a
// loopback admin port.
"use strict";
const KEY = "respawn-operator-token";
const $ = (id) => document.getElementById(id);
let detailScene = "";

function token() { return sessionStorage.getItem(KEY) || ""; }
function authHeaders() {
  const h = { "Content-Type": "application/json" };
  if (token()) h["Authorization"] = "Bearer " + token();
  return h;
}
async function api(method, path, body) {
  const opt = { method, headers: authHeaders() };
  if (body !== undefined) opt.body = JSON.stringify(body);
  const r = await fetch(path, opt);
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) throw new Error((data && data.error) || (r.status + " " + r.statusText));
  return data;
}
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
function stateClass(s) {
  return { running: "ok", starting: "warn", unknown: "warn", dead: "bad", failed: "bad", corrupt: "bad" }[s] || "dim";
}
function ago(t) {
  const d = (Date.now() - new Date(t).getTime()) / 1000;
  if (!isFinite(d) || d < 0) return "";
  return d < 90 ? d.toFixed(0) + "s" : (d / 60).toFixed(0) + "m";
}

async function act(what, id) {
  const out = $("action");
  if (!token()) { out.textContent = "set the operator token first"; out.className = "bad"; return; }
  const path = {
    kill: `/v1/scenes/${id}/kill?signal=KILL`,
    hang: `/v1/scenes/${id}/kill?signal=STOP`,
    restart: `/v1/scenes/${id}/restart`,
  }[what];
  try {
    const r = await api("POST", path);
    out.textContent = `${what} ${id}: ` + JSON.stringify(r);
    out.className = "ok";
  } catch (e) {
    out.textContent = `${what} ${id}: ${e.message}`;
    out.className = "bad";
  }
  refresh();
}

function drawScenes(rows) {
  const tb = $("scenes").tBodies[0];
  tb.replaceChildren();
  for (const r of rows) {
    const tr = el("tr");
    tr.id = "scene-" + r.id;
    tr.append(el("td", r.id), el("td", r.process), el("td", String(r.pid || "")), el("td", String(r.epoch)),
      el("td", r.state, stateClass(r.state)), el("td", r.reason || "", "dim"), el("td", String(r.players)),
      el("td", (r.events_per_s || 0).toFixed(1)), el("td", (r.tick_lag_ms || 0).toFixed(1) + " ms"),
      el("td", String(r.restarts)), el("td", ago(r.since)));
    const td = el("td");
    for (const [what, cls] of [["inspect", ""], ["kill", "danger"], ["hang", "danger"], ["restart", ""]]) {
      const b = el("button", what, cls);
      b.id = `${what}-${r.id}`;
      b.onclick = what === "inspect" ? () => { detailScene = r.id; refreshDetail(); } : () => act(what, r.id);
      td.append(b, " ");
    }
    tr.append(td);
    tb.append(tr);
  }
}

function drawCluster(c) {
  const d = c.datasvr, box = $("datasvr");
  box.replaceChildren();
  const head = el("div", d.up ? "up" : "down", d.up ? "ok" : "bad");
  head.id = "datasvr-state";
  box.append(head);
  if (d.info && d.info.degraded) box.append(el("div", "degraded: " + d.info.degraded, "warn"));
  if (d.error) box.append(el("div", d.error, "bad"));
  if (d.info && d.info.pid) box.append(el("div", `pid ${d.info.pid} · admin ${d.addr}`, "dim"));
  const m = d.metrics || {};
  const names = Object.keys(m).sort();
  if (names.length) {
    const t = el("table");
    t.id = "datasvr-metrics";
    for (let i = 0; i < names.length; i += 2) {
      const tr = el("tr");
      for (const n of names.slice(i, i + 2)) tr.append(el("td", n, "dim"), el("td", String(+m[n].toFixed(3))));
      t.append(tr);
    }
    box.append(t);
  }
  const tb = $("gateways").tBodies[0];
  tb.replaceChildren();
  for (const g of c.gateways) {
    const i = g.info || {};
    const tr = el("tr");
    tr.append(el("td", g.name), el("td", g.up ? "up" : (g.error || "down"), g.up ? "ok" : "bad"),
      el("td", String(i.sessions ?? "")), el("td", String(i.connections ?? "")), el("td", i.listen || ""));
    const tbl = i.scene_table;
    tr.append(el("td", tbl ? (tbl.synced ? "" : "syncing · ") + `p99 ${tbl.lag_p99_ms.toFixed(1)} · max ${tbl.lag_max_ms.toFixed(1)} ms` : "", tbl && tbl.synced ? "" : "warn"));
    const ws = el("td");
    if (i.websocket) {
      const a = el("a", "play ↗");
      a.href = "http://" + i.websocket + "/";
      a.target = "_blank";
      a.title = i.websocket;
      ws.append(a);
    }
    tr.append(ws);
    tb.append(tr);
  }
  const rb = $("replicas").tBodies[0];
  rb.replaceChildren();
  for (const r of c.replicas || []) {
    const tr = el("tr");
    tr.append(el("td", r.reader), el("td", r.module), el("td", r.synced ? "synced" : "syncing", r.synced ? "ok" : "warn"),
      el("td", String(r.keys)), el("td", `p99 ${r.lag_p99_ms.toFixed(1)} ms · max ${r.lag_max_ms.toFixed(1)} ms`), el("td", String(r.resyncs)));
    rb.append(tr);
  }
}

function drawTimeline(evs) {
  const ul = $("timeline");
  ul.replaceChildren();
  const max = Math.max(1, ...evs.map((e) => e.duration_ms || 0));
  for (const e of evs.slice().reverse()) {
    const li = el("li");
    const cls = { died: "bad", failed: "bad", stall: "warn", operator: "warn", handoff: "warn", recovered: "ok" }[e.kind] || "";
    li.append(el("span", new Date(e.at).toLocaleTimeString() + " ", "dim"), el("span", e.kind, cls),
      el("span", ` ${e.process}` + (e.pid ? ` pid ${e.pid}` : "") + (e.epoch ? ` epoch ${e.epoch}` : "") + " "));
    if (e.duration_ms) {
      const bar = el("span", "", "bar");
      bar.style.width = Math.max(2, 120 * e.duration_ms / max) + "px";
      li.append(bar, el("span", ` ${e.duration_ms.toFixed(0)} ms `));
    }
    if (e.reason) li.append(el("span", e.reason, "dim"));
    ul.append(li);
  }
  if (!evs.length) ul.append(el("li", "no faults yet", "dim"));
}

async function refreshDetail() {
  if (!detailScene) return;
  $("detail-id").textContent = detailScene;
  const box = $("detail");
  try {
    const v = await api("GET", `/v1/scenes/${detailScene}/inspect`);
    box.replaceChildren();
    box.className = "";
    box.append(el("div", `epoch ${v.epoch} · tick ${v.tick} · rooms ${(v.rooms || []).join(", ") || "none"}`, "dim"));
    const t = el("table");
    for (const m of v.monsters || []) {
      const tr = el("tr");
      const bar = el("span", "", "hpbar"), fill = el("span");
      fill.style.width = (100 * m.hp / Math.max(1, m.max_hp)) + "%";
      bar.append(fill);
      tr.append(el("td", m.id), el("td", m.name), el("td", `${m.hp}/${m.max_hp}`));
      const td = el("td"); td.append(bar); tr.append(td);
      t.append(tr);
    }
    for (const p of v.players || []) {
      const tr = el("tr");
      tr.append(el("td", p.id), el("td", "player"), el("td", `(${p.x},${p.y}) hp ${p.hp}`), el("td", `gold ${p.gold}`));
      t.append(tr);
    }
    for (const n of v.npcs || []) {
      const tr = el("tr");
      tr.append(el("td", n.id), el("td", n.name), el("td", `(${n.x},${n.y})`), el("td", "npc", "dim"));
      t.append(tr);
    }
    box.append(t);
    // The scene's last events (at most 50, newest first; the scene process
    // keeps them since it started), refreshed with the rest of the detail.
    box.append(el("h3", "recent events"));
    const ul = el("ul", undefined, "recent");
    ul.id = "recent-events";
    for (const e of v.recent_events || []) {
      const li = el("li");
      li.append(el("span", new Date(e.time).toLocaleTimeString() + " ", "dim"),
        el("span", e.kind + " ", "kind"),
        el("span", e.player ? e.player + " " : ""),
        el("span", e.summary, "dim"));
      ul.append(li);
    }
    if (!(v.recent_events || []).length) ul.append(el("li", "no events since the process started", "dim"));
    box.append(ul);
  } catch (e) {
    box.textContent = e.message;
    box.className = "bad";
  }
}

async function gmDamage() {
  const out = $("gm-result");
  if (!detailScene) { out.textContent = "inspect a scene first"; return; }
  const body = { req_id: "console-" + Date.now() + "-" + Math.floor(Math.random() * 1e6),
    monster: $("gm-monster").value.trim(), amount: parseInt($("gm-amount").value, 10) };
  try {
    out.textContent = JSON.stringify(await api("POST", `/v1/scenes/${detailScene}/gm/damage`, body));
    out.className = "ok";
  } catch (e) { out.textContent = e.message; out.className = "bad"; }
  refreshDetail();
}

let busy = false;
async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const [st, rows, tl] = await Promise.all([api("GET", "/v1/status"), api("GET", "/v1/scenes"), api("GET", "/v1/timeline")]);
    $("manager").textContent = `world manager pid ${st.pid}` + (st.recovering ? " · recovering" : "") + (st.stopping ? " · stopping" : "");
    $("manager").className = st.recovering ? "warn" : "ok";
    drawScenes(rows || []);
    drawTimeline(tl || []);
  } catch (e) {
    $("manager").textContent = "world manager unreachable: " + e.message;
    $("manager").className = "bad";
  } finally { busy = false; }
}
async function refreshCluster() {
  try { drawCluster(await api("GET", "/v1/cluster")); } catch (e) { $("datasvr").textContent = e.message; }
}

function showToken() { $("token-state").textContent = token() ? "token set (this tab)" : "no token: read-only"; }
$("save-token").onclick = () => { sessionStorage.setItem(KEY, $("token").value.trim()); $("token").value = ""; showToken(); };
$("gm-damage").onclick = gmDamage;
showToken();
refresh(); refreshCluster();
setInterval(refresh, 1000);
setInterval(refreshCluster, 2000);
setInterval(refreshDetail, 2000);
