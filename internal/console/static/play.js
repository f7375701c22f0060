// respawn browser play client: the client protocol of docs/protocol.md
// over WebSocket binary messages (15-byte big-endian header + JSON body),
// read and written with DataView.
"use strict";
const SHUTTING_DOWN = 15; // CLOSE code: the gateway is draining, resume elsewhere
const T = { HELLO: 1, WELCOME: 2, LOGIN: 3, RESUME: 4, SESSION: 5, REQUEST: 6, REPLY: 7, PUSH: 8, PING: 9, PONG: 10, CLOSE: 11, LOGOUT: 12 };
const HDR = 15, MAX_LOG = 200, TILE = 5, MAX_LAT = 100;
const $ = (id) => document.getElementById(id);
const enc = new TextEncoder(), dec = new TextDecoder();

const st = {
  ws: null, buf: new Uint8Array(0), seq: 0, pending: new Map(), resume: "", player: "", scene: "",
  me: { x: 0, y: 0, hp: 0 }, others: new Map(), lats: [], maxFrame: 65536, lastLat: 0, maxLat: 0, pinger: 0, closing: false,
};

function log(text, cls) {
  const li = document.createElement("li");
  li.textContent = new Date().toLocaleTimeString() + " " + text;
  if (cls) li.className = cls;
  const ul = $("log");
  ul.prepend(li);
  while (ul.children.length > MAX_LOG) ul.lastChild.remove();
}

function frame(type, id, body) {
  const b = body === undefined ? new Uint8Array(0) : enc.encode(JSON.stringify(body));
  const out = new Uint8Array(HDR + b.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, 11 + b.length);
  dv.setUint8(4, type);
  dv.setUint16(5, 0);
  dv.setBigUint64(7, BigInt(id));
  out.set(b, HDR);
  return out;
}
function send(type, id, body) {
  if (st.ws && st.ws.readyState === WebSocket.OPEN) st.ws.send(frame(type, id, body));
}

// The payloads are one byte stream: a message may hold several frames and
// a frame may span messages.
function onBytes(chunk) {
  const all = new Uint8Array(st.buf.length + chunk.length);
  all.set(st.buf); all.set(chunk, st.buf.length);
  let off = 0;
  while (all.length - off >= 4) {
    const dv = new DataView(all.buffer, all.byteOffset + off);
    const len = dv.getUint32(0);
    if (len < 11 || len + 4 > st.maxFrame) { log("bad frame from the gateway", "bad"); st.ws.close(); return; }
    if (all.length - off < 4 + len) break;
    const type = dv.getUint8(4), code = dv.getUint16(5), id = dv.getBigUint64(7);
    const raw = all.subarray(off + HDR, off + 4 + len);
    let body = {};
    if (raw.length) { try { body = JSON.parse(dec.decode(raw)); } catch (e) { body = {}; } }
    handle(type, code, Number(id), body);
    off += 4 + len;
  }
  st.buf = all.slice(off);
}

function handle(type, code, id, body) {
  switch (type) {
    case T.WELCOME:
      st.maxFrame = body.max_frame || st.maxFrame;
      clearInterval(st.pinger);
      st.pinger = setInterval(() => send(T.PING, Date.now(), undefined), Math.max(1000, (body.idle_ms || 30000) / 3));
      break;
    case T.SESSION: {
      st.player = body.player; st.resume = body.resume_token; st.scene = body.scene;
      if (body.state) st.me = { x: body.state.x, y: body.state.y, hp: body.state.hp, known: true };
      status(`playing in ${st.scene} as ${st.player}` + (body.resumed ? " (resumed)" : ""), "ok");
      log(body.resumed ? `resumed session, last applied ${body.last_seq}` : `logged in as ${st.player}`, "ok");
      if (!body.resumed) st.seq = Math.max(st.seq, body.last_seq || 0);
      for (const [seq, p] of st.pending) send(T.REQUEST, seq, p.op); // resent with their original numbers
      draw();
      break;
    }
    case T.REPLY: reply(code, id, body); break;
    case T.PUSH: push(body); break;
    case T.PING: send(T.PONG, id, undefined); break;
    case T.CLOSE:
      if (code === SHUTTING_DOWN && st.resume) {
        // The gateway is draining: resume at the one it names (or here,
        // once it is back); the session and its pending requests carry over.
        st.moveTo = /^wss?:\/\//.test(body.move_to || "") ? body.move_to : "";
        status("gateway stopping: moving" + (st.moveTo ? " to " + st.moveTo : ""), "warn");
        log("gateway is shutting down; moving" + (st.moveTo ? " to " + st.moveTo : ""), "warn");
        break;
      }
      st.closing = true;
      status("closed: " + (body.error || "code " + code), code ? "bad" : "dim");
      log("gateway closed the session: " + (body.error || code), "bad");
      break;
  }
}

function reply(code, id, body) {
  const p = st.pending.get(id);
  if (!p) return; // a duplicate: the first answer counted
  st.pending.delete(id);
  const lat = performance.now() - p.t;
  st.lastLat = lat; st.maxLat = Math.max(st.maxLat, lat);
  $("latency").textContent = lat.toFixed(0) + " ms";
  $("latency").className = lat > 250 ? "warn" : "ok";
  $("latency-max").textContent = st.maxLat.toFixed(0) + " ms";
  $("pending").textContent = String(st.pending.size);
  st.lats.push(lat);
  if (st.lats.length > MAX_LAT) st.lats.shift();
  drawLatency();
  if (code !== 0) { log(`${p.op.op} #${id}: ${body.reason || code}: ${body.error || ""}`, "bad"); return; }
  switch (p.op.op) {
    case "move": st.me.x = body.x; st.me.y = body.y; st.me.known = true; break;
    case "attack":
      bossHP(body.hp, body.max_hp);
      if (body.player_hp !== undefined) st.me.hp = body.player_hp;
      log(`hit ${body.monster} for ${body.damage}: ${body.hp}/${body.max_hp}` + (body.killed ? " (killed)" : "") + (body.hit_back ? `, it hit back ${body.hit_back}` : ""));
      break;
    // Pushes leave out our own position, and the travel reply has none:
    // the new scene's spawn is unknown here until the next move answers.
    case "travel": st.scene = body.to; st.others.clear(); st.me.known = false; status(`playing in ${st.scene} as ${st.player}`, "ok"); log("travelled to " + body.to); break;
  }
  draw();
}

function push(m) {
  const d = m.data || {};
  switch (m.kind) {
    case "positions":
      for (const p of d.players || []) if (p.id !== st.player) st.others.set(p.id, { x: p.x, y: p.y });
      for (const g of d.gone || []) st.others.delete(g);
      draw();
      break;
    case "chat": log(`${d.name || d.from}: ${d.text}`); break;
    case "notice": log(`${d.type} ${d.name || d.id || ""}` + (d.by ? ` by ${d.by}` : ""), "dim"); break;
    case "resume_token": st.resume = d.token; break;
    case "kick": log("the scene dropped us: " + d.reason + " (the gateway re-routes)", "warn"); break;
    case "notify": log("notify: " + JSON.stringify(d), "dim"); break;
  }
}

function request(op) {
  if (!st.player) { log("log in first", "bad"); return; }
  const seq = ++st.seq;
  st.pending.set(seq, { op, t: performance.now() });
  $("pending").textContent = String(st.pending.size);
  send(T.REQUEST, seq, op);
}

function status(text, cls) { $("status").textContent = text; $("status").className = cls || ""; }
function bossHP(hp, max) {
  $("boss-hp").textContent = `${hp}/${max}`;
  $("boss-bar").style.width = (100 * hp / Math.max(1, max)) + "%";
}

// drawLatency: one bar per recent request, scaled to the slowest; a
// scene's death and respawn shows as a tall bar, and nothing else.
function drawLatency() {
  const c = $("lat-chart"), g = c.getContext("2d");
  g.fillStyle = "#0b0f14"; g.fillRect(0, 0, c.width, c.height);
  const top = Math.max(50, ...st.lats), w = c.width / MAX_LAT;
  st.lats.forEach((l, i) => {
    const h = Math.max(1, (c.height - 12) * l / top);
    g.fillStyle = l > 250 ? "#e6c15a" : "#5fd38d";
    g.fillRect(i * w, c.height - h, Math.max(1, w - 1), h);
  });
  g.fillStyle = "#8a94a6"; g.font = "10px monospace";
  g.fillText(`max ${top.toFixed(0)} ms`, 4, 10);
}

function draw() {
  const c = $("map"), g = c.getContext("2d");
  g.fillStyle = "#0b0f14"; g.fillRect(0, 0, c.width, c.height);
  g.strokeStyle = "#161d28";
  for (let i = 0; i <= c.width; i += TILE * 10) { g.beginPath(); g.moveTo(i, 0); g.lineTo(i, c.height); g.moveTo(0, i); g.lineTo(c.width, i); g.stroke(); }
  g.fillStyle = "#6cb6ff";
  for (const p of st.others.values()) g.fillRect(p.x * TILE, p.y * TILE, TILE, TILE);
  if (st.me.known) {
    g.fillStyle = "#5fd38d";
    g.fillRect(st.me.x * TILE - 1, st.me.y * TILE - 1, TILE + 2, TILE + 2);
  }
  $("pos").textContent = st.me.known ? `(${st.me.x},${st.me.y})` : "(move to see where you are)";
  $("scene").textContent = st.scene;
  $("players").textContent = String(st.others.size + (st.player ? 1 : 0));
  $("me").textContent = st.player ? `${st.player} hp ${st.me.hp}` : "";
}

function connect(first) {
  const here = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;
  if (st.moveTo) st.url = st.moveTo;
  st.moveTo = "";
  const ws = new WebSocket(st.url || here);
  let opened = false;
  ws.binaryType = "arraybuffer";
  st.ws = ws; st.buf = new Uint8Array(0);
  ws.onopen = () => {
    opened = true;
    send(T.HELLO, 0, { version: 1, client: "browser/1" });
    if (first) send(T.LOGIN, 0, { token: $("token").value.trim() });
    else send(T.RESUME, 0, { token: st.resume });
  };
  ws.onmessage = (ev) => onBytes(new Uint8Array(ev.data));
  ws.onclose = () => {
    clearInterval(st.pinger);
    if (st.ws !== ws || st.closing || !st.resume) return;
    if (!opened) st.url = ""; // the gateway we moved to is gone too: try this page's own
    // The gateway went away: resume the session, here or elsewhere.
    status("reconnecting…", "warn");
    if (st.moveTo) connect(false); // told where to go: no reason to wait
    else setTimeout(() => connect(false), 500);
  };
}

$("login").onclick = () => {
  if (st.ws) { st.closing = true; st.ws.close(); }
  Object.assign(st, { closing: false, player: "", resume: "", seq: 0, url: "", moveTo: "" });
  st.pending.clear(); st.others.clear();
  status("logging in…", "dim");
  connect(true);
};
const step = (dx, dy) => request({ op: "move", x: st.me.x + dx, y: st.me.y + dy });
$("left").onclick = () => step(-1, 0); $("right").onclick = () => step(1, 0);
$("up").onclick = () => step(0, -1); $("down").onclick = () => step(0, 1);
document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT") return;
  const d = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] }[e.key];
  if (d) { e.preventDefault(); step(d[0], d[1]); }
});
$("map").onclick = (e) => {
  const r = e.target.getBoundingClientRect();
  request({ op: "move", x: Math.floor((e.clientX - r.left) / TILE), y: Math.floor((e.clientY - r.top) / TILE) });
};
$("attack").onclick = () => request({ op: "attack", monster: $("monster").value.trim() });
$("travel").onclick = () => request({ op: "travel", to: $("travel-to").value.trim() });
$("chat").onclick = () => { const t = $("chat-text").value; if (t) { request({ op: "chat", text: t }); $("chat-text").value = ""; } };
draw();
