// The operator page: reads /api/rollouts and /api/nodes, follows
// /api/events (Server-Sent Events) to refresh without reloading, and sends
// pause/resume/abort/rollback with the bearer token kept in sessionStorage.
"use strict";

const TOKEN_KEY = "edgectl-serve-token";
const state = {q: "", filter: "", offset: 0, limit: 100, total: 0, node: null, commands: false, updates: 0};
const results = {}; // rollout id -> {text, bad}: the last command's result

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
}

async function getJSON(url) {
  const res = await fetch(url, {cache: "no-store"});
  const body = await res.json().catch(() => ({error: res.statusText}));
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

function showError(err) {
  const p = document.getElementById("error");
  p.hidden = !err;
  p.textContent = err ? String(err.message || err) : "";
}

function fmtTime(s) {
  if (!s || s.startsWith("0001-")) return "";
  const d = new Date(s);
  return isNaN(d) ? s : d.toISOString().slice(11, 19) + " UTC";
}

// The commands the rollout's phase allows (the store's own rule).
function allowed(cmd, phase) {
  switch (cmd) {
    case "pause": return phase === "running" || phase === "watching";
    case "resume": return phase === "paused";
    case "abort": return phase === "running" || phase === "paused" || phase === "watching";
    case "rollback": return phase !== "rolled_back";
  }
  return false;
}

function bar(w, rolledBack) {
  const c = w.live, t = c.total || 1, pct = n => (100 * n / t) + "%";
  const bad = c.failed + c.rolled_back + c.timed_out;
  const segs = [["a", c.active], ["c", c.canary], ["d", c.downloading], ["b", bad]];
  if (rolledBack) segs.push(["r", w.reverted]);
  return el("div", {class: "bar", title: `${c.active} active, ${c.canary} canary, ${c.downloading} downloading, ${bad} bad` + (rolledBack ? `, ${w.reverted} back on previous` : "")},
    ...segs.map(([k, n]) => {
      // Through the CSSOM: the page's CSP refuses style attributes.
      const d = el("div", {class: k});
      d.style.width = pct(n);
      return d;
    }));
}

function confirmLine(r) {
  if (r.rollback) {
    const b = r.rollback;
    const cls = b.confirmed ? "confirm confirmed" : "confirm waiting";
    let text = b.written ? "rollback written" : "rollback asked for, not written yet";
    text += `; ${b.reverted} of ${b.of} nodes report their previous version`;
    text += b.confirmed ? " — rollback confirmed by node status" : (b.waiting && b.waiting.length ? ` — waiting for ${b.waiting.slice(0, 5).join(", ")}${b.of - b.reverted > 5 ? ", …" : ""}` : "");
    return el("div", {class: cls, id: "confirm-" + r.id, text});
  }
  if (r.hold) {
    const h = r.hold;
    const text = h.settled ? "held — settled: no node of the started waves is still downloading or in its canary"
      : `held — ${h.in_flight} nodes still downloading or in their canary (they keep what they were given)`;
    return el("div", {class: h.settled ? "confirm confirmed" : "confirm waiting", id: "confirm-" + r.id, text});
  }
  return null;
}

// tally says a wave's recorded counts: "1 pending, 3 downloading, 5 active".
function tally(c) {
  const parts = [["pending", c.pending], ["downloading", c.downloading], ["canary", c.canary], ["active", c.active],
    ["failed", c.failed], ["rolled back", c.rolled_back], ["timed out", c.timed_out || 0]].filter(([, n]) => n > 0).map(([k, n]) => `${n} ${k}`);
  return parts.join(", ");
}

function rolloutCard(r, detail) {
  const back = !!r.rollback;
  const rows = r.waves.map(w => el("tr", {class: "wave"},
    el("td", {text: w.n}), el("td", {text: w.percent + "%"}), el("td", {}, bar(w, back)),
    ...[w.live.total, w.live.pending, w.live.downloading, w.live.canary, w.live.active, w.live.failed, w.live.rolled_back,
      w.recorded.timed_out || 0, back && w.started ? w.reverted : "", w.recorded.p99_ms ? w.recorded.p99_ms.toFixed(1) : "", tally(w.recorded)].map(v => el("td", {text: v}))));
  const table = el("table", {},
    el("tr", {}, ...["wave", "cum. %", "progress (node status now)", "nodes", "pending", "downloading", "canary", "active", "failed", "rolled back", "timed out", "back on previous", "p99 ms", "controller's tally (last tick)"].map(h => el("th", {text: h}))),
    ...rows);
  const buttons = el("div", {class: "buttons"},
    ...["pause", "resume", "abort", "rollback"].map(cmd => el("button", {type: "button", "data-cmd": cmd, id: `${cmd}-${r.id}`,
      disabled: !state.commands || !allowed(cmd, r.phase), title: state.commands ? "" : "read-only: served without a token",
      onclick: () => command(r.id, cmd)}, cmd)));
  const res = results[r.id];
  if (res) buttons.append(el("span", {class: res.bad ? "result bad" : "result", id: "result-" + r.id, text: res.text}));
  const ctl = r.controller ? `controller ${r.controller.owner}` + (r.controller.live ? ` (lease until ${fmtTime(r.controller.expires)})` : " (lease expired)") : "no controller";
  const card = el("div", {class: "card rollout", id: "rollout-" + r.id},
    el("div", {},
      el("b", {text: r.id}), `  ${r.model} → ${r.version}  `, el("span", {class: "phase " + r.phase, id: "phase-" + r.id, text: r.phase}),
      `  wave ${r.wave} of ${r.waves.length}  ${r.nodes} nodes` + (r.command ? `  command pending: ${r.command}` : ""),
      r.reason ? el("i", {text: "  " + r.reason}) : null),
    el("div", {class: "criteria", text: "criteria: " + r.criteria + `; on abort: ${r.on_abort}`}),
    el("div", {class: "muted", text: ctl + `; updated ${fmtTime(r.updated)}`}),
    (r.continuous || r.joined) ? el("div", {class: "joined", text: `joined after start: ${r.joined || 0} nodes` + (r.phase === "watching" ? " (every wave finished; watching for nodes that join)" : "")}) : null,
    r.outside ? el("div", {class: "outside", text: `not in this rollout: ${r.outside} nodes match the target but ` + (r.continuous ? "wait for another rollout of the model" : "joined after start")}) : null,
    r.retried ? el("div", {class: "retried", text: `retried: ${r.retried} nodes (up to ${r.retries} retries each)`}) : null,
    confirmLine(r), buttons, table,
    el("div", {class: "key muted"}, "bar:", el("span", {class: "a"}), "active", el("span", {class: "c"}), "canary", el("span", {class: "d"}), "downloading",
      el("span", {class: "b"}), "failed / rolled back / timed out", el("span", {class: "r"}), "back on previous version"));
  if (detail && detail.bad_nodes.length) {
    card.append(el("h3", {text: `failed, rolled back and timed-out nodes (${detail.bad_total})`}),
      el("table", {class: "bad", id: "bad-" + r.id},
        el("tr", {}, ...["node", "wave", "state", "reason", "attempts", "reports now"].map(h => el("th", {text: h}))),
        ...detail.bad_nodes.map(b => el("tr", {onclick: () => showNode(b.node)},
          ...[b.node, b.wave, b.state, b.reason, b.attempts, b.reports || ""].map(v => el("td", {text: v}))))));
  }
  return card;
}

let rolloutsBusy = false, rolloutsAgain = false;
async function refreshRollouts() {
  if (rolloutsBusy) { rolloutsAgain = true; return; }
  rolloutsBusy = true;
  try {
    const data = await getJSON("/api/rollouts");
    state.commands = data.commands_allowed;
    renderAuth();
    const details = {};
    await Promise.all(data.rollouts.filter(r => r.bad > 0).slice(0, 10).map(async r => {
      details[r.id] = await getJSON("/api/rollouts/" + encodeURIComponent(r.id)).catch(() => null);
    }));
    const box = document.getElementById("rollouts");
    box.replaceChildren(...(data.rollouts.length ? data.rollouts.map(r => rolloutCard(r, details[r.id])) : [el("p", {text: "No rollouts."})]));
    document.getElementById("updated").textContent = fmtTime(data.now);
    showError(null);
  } catch (err) {
    showError(err);
  } finally {
    rolloutsBusy = false;
    if (rolloutsAgain) { rolloutsAgain = false; refreshRollouts(); }
  }
}

function nodeRow(n) {
  const online = n.online === null ? "?" : String(n.online);
  const labels = Object.entries(n.labels || {}).sort().map(([k, v]) => k + "=" + v).join(", ");
  const models = n.models.map(m => `${m.model}@${m.version}:${m.state}` + (m.reason ? `(${m.reason})` : "")).join(" ");
  return el("tr", {id: "node-" + n.id, class: state.node === n.id ? "sel" : null, onclick: () => showNode(n.id)},
    ...[n.id, online, fmtTime(n.last_seen), labels, models + (n.error ? " ! " + n.error : "")].map(v => el("td", {text: v})));
}

let nodesBusy = false, nodesAgain = false;
async function refreshNodes() {
  if (nodesBusy) { nodesAgain = true; return; }
  nodesBusy = true;
  try {
    const p = new URLSearchParams({limit: state.limit, offset: state.offset});
    if (state.q) p.set("q", state.q);
    if (state.filter) p.set("state", state.filter);
    const data = await getJSON("/api/nodes?" + p);
    state.total = data.total;
    document.getElementById("nodes-total").textContent = data.all;
    document.getElementById("nodes-online").textContent = data.online;
    document.querySelector("#nodes tbody").replaceChildren(...data.nodes.map(nodeRow));
    const last = Math.min(data.offset + data.nodes.length, data.total);
    document.getElementById("page-info").textContent = data.total ? `${data.offset + 1}–${last} of ${data.total}` : "no node matches";
    document.getElementById("prev").disabled = data.offset === 0;
    document.getElementById("next").disabled = last >= data.total;
    if (state.node) await showNode(state.node, true);
  } catch (err) {
    showError(err);
  } finally {
    nodesBusy = false;
    if (nodesAgain) { nodesAgain = false; refreshNodes(); }
  }
}

async function showNode(id, quiet) {
  const box = document.getElementById("node-detail");
  state.node = id;
  document.querySelectorAll("#nodes tbody tr").forEach(tr => tr.classList.toggle("sel", tr.id === "node-" + id));
  let n;
  try {
    n = await getJSON("/api/nodes/" + encodeURIComponent(id));
  } catch (err) {
    if (!quiet) box.replaceChildren(el("p", {class: "err", text: String(err.message)}));
    box.hidden = false;
    return;
  }
  const kv = (k, v) => el("tr", {}, el("th", {text: k}), el("td", {text: v}));
  box.replaceChildren(
    el("h3", {text: "node " + n.id}),
    el("table", {},
      kv("online", n.online === null ? "no presence published" : String(n.online)),
      kv("last seen", fmtTime(n.last_seen)),
      kv("status time", n.status_time || ""), kv("presence time", n.presence_time || ""),
      kv("agent", n.agent || ""),
      kv("labels", Object.entries(n.labels || {}).sort().map(([k, v]) => k + "=" + v).join(", ")),
      kv("groups", (n.groups || []).map(g => `${g} (generation ${n.desired.groups[g]})`).join(", ")),
      kv("node desired generation", n.desired.node || 0),
      kv("error rate", "not in the node's status message (its gates judge it on the device)"),
      n.error ? kv("bad message", n.error) : null),
    el("h3", {text: "models"}),
    el("table", {},
      el("tr", {}, ...["model", "version", "state", "reason", "serving", "p99 ms", "bytes", "rollout"].map(h => el("th", {text: h}))),
      ...n.models.map(m => el("tr", {}, ...[m.model, m.version, m.state, m.reason || "", m.serving || "", m.p99_ms ? m.p99_ms.toFixed(1) : "",
        m.bytes_total ? `${m.bytes_done}/${m.bytes_total}` : "", m.rollout ? `${m.rollout.id} wave ${m.rollout.wave}` : ""].map(v => el("td", {text: v}))))),
    el("h3", {text: "rollouts"}),
    n.rollouts.length ? el("table", {},
      el("tr", {}, ...["rollout", "version", "phase", "wave", "now", "previous", "recorded"].map(h => el("th", {text: h}))),
      ...n.rollouts.map(r => el("tr", {}, ...[r.id, r.version, r.phase, r.wave, r.live, r.previous || "(none)", (r.recorded || "") + (r.reason ? ": " + r.reason : "")].map(v => el("td", {text: v})))))
      : el("p", {class: "muted", text: "in no rollout"}));
  box.hidden = false;
}

function renderAuth() {
  const a = document.getElementById("auth");
  if (!state.commands) { a.textContent = "read-only (served without a token)"; return; }
  if (sessionStorage.getItem(TOKEN_KEY)) {
    a.replaceChildren("token set ", el("button", {type: "button", id: "forget", onclick: () => { sessionStorage.removeItem(TOKEN_KEY); renderAuth(); }}, "forget token"));
  } else {
    a.textContent = "commands ask for the token";
  }
}

async function command(id, cmd) {
  let token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) {
    token = window.prompt("Token for rollout commands (edgectl serve --token-file):");
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
  }
  if ((cmd === "abort" || cmd === "rollback") && !window.confirm(`${cmd} rollout ${id}?`)) return;
  try {
    const res = await fetch(`/api/rollouts/${encodeURIComponent(id)}/${cmd}`, {method: "POST", headers: {"Authorization": "Bearer " + token}});
    const body = await res.json().catch(() => ({error: res.statusText}));
    if (res.status === 401) sessionStorage.removeItem(TOKEN_KEY);
    results[id] = res.ok ? {text: body.message} : {text: `${cmd} refused (${res.status}): ${body.error}`, bad: true};
  } catch (err) {
    results[id] = {text: `${cmd}: ${err.message}`, bad: true};
  }
  renderAuth();
  refreshRollouts();
}

function follow() {
  const live = document.getElementById("live");
  const es = new EventSource("/api/events");
  es.addEventListener("hello", () => { live.className = "live on"; live.textContent = `live (${state.updates} updates)`; });
  es.addEventListener("change", ev => {
    const c = JSON.parse(ev.data);
    state.updates++;
    live.className = "live on";
    live.textContent = `live (${state.updates} updates)`;
    if (c.nodes) refreshNodes();
    if (c.rollouts || c.nodes) refreshRollouts(); // the bars follow node status
  });
  es.onerror = () => { live.className = "live off"; live.textContent = "reconnecting…"; };
}

function init() {
  let timer = null;
  document.getElementById("q").addEventListener("input", ev => {
    clearTimeout(timer);
    timer = setTimeout(() => { state.q = ev.target.value.trim(); state.offset = 0; refreshNodes(); }, 200);
  });
  document.getElementById("state").addEventListener("change", ev => { state.filter = ev.target.value; state.offset = 0; refreshNodes(); });
  document.getElementById("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); refreshNodes(); });
  document.getElementById("next").addEventListener("click", () => { state.offset += state.limit; refreshNodes(); });
  refreshRollouts();
  refreshNodes();
  follow();
}

init();
