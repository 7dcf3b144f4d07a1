// trigger-mesh dispatch console. Plain script, no libraries: it is served by the app itself
// so that the page works on a closed network. Everything shown comes from /events
// (server-sent events): a snapshot first, then one message per change. Text is always set
// with textContent, never as HTML: payloads come from cars and cameras.
"use strict";

const state = {
  activations: new Map(), // activation_id -> view
  cameras: new Map(),     // camera_id -> view
  escalations: [],
  missedCameras: new Set(), // cameras missed by a recent activation
  role: "viewer",
  csrfToken: "",          // sent with every POST (X-CSRF-Token); comes with "hello"
  units: [],              // units to choose from (bounded by the server)
  // The camera table shows one page, fetched from /api/state: a fleet may be huge.
  cameraOffset: 0,
  cameraTotal: 0,
  map: { tiles: null, attribution: "" }, // the basemap, if the console has one; from "hello"
};
const CAMERA_PAGE = 200;
const CAMERA_FETCH_EVERY_MS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";
const PLOT = { w: 600, h: 420, pad: 24 };
const MISSED_HIGHLIGHT_MS = 15 * 60 * 1000;
let plotFrame = null; // the view drawn last (world centre, px per world unit), for clicks

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function utcTime(ms) {
  if (ms === null || ms === undefined) return "–";
  return new Date(ms).toISOString().slice(11, 23);
}

function ago(ms) {
  if (!ms) return "–";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 90 ? `${s} s ago` : `${Math.round(s / 60)} min ago`;
}

// --- filters -------------------------------------------------------------------------------
function filters() {
  return {
    unit: $("filter-unit").value,
    kind: $("filter-kind").value,
    since: Number($("filter-time").value),
  };
}

function shown(a, f) {
  if (f.unit && a.unit_id !== f.unit) return false;
  if (f.kind && a.kind !== f.kind) return false;
  if (f.since > 0 && a.decided_at_ms < Date.now() - f.since * 1000) return false;
  return true;
}

function fillSelect(select, values, keepFirst) {
  const current = select.value;
  // Units no longer offered go (the list is bounded by the server), but not the one chosen.
  for (const option of [...select.options]) {
    if (option.value && option.value !== current && !values.has(option.value)) option.remove();
  }
  const have = new Set([...select.options].map((o) => o.value));
  for (const v of [...values].sort()) {
    if (!have.has(v)) select.appendChild(el("option", { value: v }, v));
  }
  if (!keepFirst && !current && select.options.length) select.selectedIndex = 0;
}

function refreshChoices() {
  const units = new Set(state.units);
  for (const c of state.cameras.values()) units.add(c.unit_id);
  for (const a of state.activations.values()) units.add(a.unit_id);
  const kinds = new Set([...state.activations.values()].map((a) => a.kind));
  fillSelect($("filter-unit"), units, true);
  fillSelect($("filter-kind"), kinds, true);
  fillSelect($("activate-unit"), units, false);
}

// --- activation feed -----------------------------------------------------------------------
function activationRow(a) {
  const tr = el("tr", {
    "data-activation-id": a.activation_id,
    class: `state-${a.state}` + (a.missed.length ? " has-missed" : ""),
  });
  const latency = a.latency_ms === null || a.latency_ms === undefined ? "–" : `${a.latency_ms.toFixed(1)} ms`;
  tr.appendChild(el("td", {}, utcTime(a.decided_at_ms)));
  tr.appendChild(el("td", {}, a.kind));
  tr.appendChild(el("td", {}, a.unit_id));
  tr.appendChild(el("td", {}, String(a.priority)));
  tr.appendChild(el("td", { class: "state" }, a.state));
  tr.appendChild(el("td", { class: "recording" }, `${a.recording} / ${a.expected}`));
  tr.appendChild(el("td", { class: "missed-list" }, a.missed.concat(a.rejected).join(", ")));
  tr.appendChild(el("td", {}, latency));
  const actions = el("td");
  if (state.role === "dispatcher" && a.state !== "cancelled") {
    const button = el("button", { type: "button", class: "cancel" }, "cancel");
    button.addEventListener("click", () => cancelActivation(a));
    actions.appendChild(button);
  }
  tr.appendChild(actions);
  tr.title = `${a.source} — ${a.reason}` + (a.cancelled_by ? ` — cancelled by ${a.cancelled_by}` : "");
  return tr;
}

function renderFeed(flashId) {
  const f = filters();
  const body = document.querySelector("#feed tbody");
  const rows = [...state.activations.values()]
    .filter((a) => shown(a, f))
    .sort((x, y) => y.decided_at_ms - x.decided_at_ms)
    .slice(0, 200)
    .map((a) => {
      const tr = activationRow(a);
      if (a.activation_id === flashId) tr.classList.add("fresh");
      return tr;
    });
  body.replaceChildren(...rows);
}

function renderEscalations() {
  const f = filters();
  const items = state.escalations
    .filter((e) => (!f.unit || e.unit_id === f.unit || e.camera_unit_id === f.unit)
      && (!f.kind || e.kind === f.kind))
    .slice(-50)
    .reverse()
    .map((e) => {
      const who = e.officer ? `${e.camera_id} (${e.officer}, ${e.camera_unit_id})`
        : `${e.camera_id} (${e.camera_unit_id})`;
      return el("li", { "data-camera-id": e.camera_id, "data-reason": e.reason },
        `${utcTime(e.at_ms)} ${e.kind} on ${e.unit_id}: ${who} — ${e.reason}: ${e.detail}`);
    });
  $("escalations").replaceChildren(...items);
}

// --- cameras -------------------------------------------------------------------------------
function recomputeMissed() {
  state.missedCameras.clear();
  const since = Date.now() - MISSED_HIGHLIGHT_MS;
  for (const a of state.activations.values()) {
    if (a.state === "cancelled" || (a.finished_at_ms || a.decided_at_ms) < since) continue;
    for (const id of a.missed.concat(a.rejected)) state.missedCameras.add(id);
  }
  for (const e of state.escalations) {
    if (e.at_ms >= since) state.missedCameras.add(e.camera_id);
  }
  // A camera that has since confirmed a recording is no longer a worry.
  for (const id of [...state.missedCameras]) {
    const c = state.cameras.get(id);
    if (c && c.recording && c.online) state.missedCameras.delete(id);
  }
}

function cameraState(c) {
  if (!c.online) return "offline";
  if (c.recording) return "recording";
  return c.asleep ? "asleep" : "online";
}

function renderCameras() {
  const f = filters();
  const first = state.cameraTotal ? state.cameraOffset + 1 : 0;
  const last = Math.min(state.cameraOffset + CAMERA_PAGE, state.cameraTotal);
  $("cameras-range").textContent = `${first}–${last} of ${state.cameraTotal}`;
  $("cameras-prev").disabled = state.cameraOffset === 0;
  $("cameras-next").disabled = last >= state.cameraTotal;
  const rows = [...state.cameras.values()]
    .filter((c) => !f.unit || c.unit_id === f.unit)
    .sort((x, y) => x.unit_id.localeCompare(y.unit_id) || x.camera_id.localeCompare(y.camera_id))
    .map((c) => {
      const missed = state.missedCameras.has(c.camera_id);
      const tr = el("tr", {
        "data-camera-id": c.camera_id,
        class: `cam-${cameraState(c)}` + (missed ? " missed" : ""),
      });
      tr.appendChild(el("td", {}, c.camera_id));
      tr.appendChild(el("td", {}, c.unit_id));
      tr.appendChild(el("td", {}, c.officer || ""));
      tr.appendChild(el("td", {}, c.role));
      tr.appendChild(el("td", { class: "state" }, cameraState(c) + (missed ? " · missed" : "")));
      tr.appendChild(el("td", {}, ago(c.last_seen_ms)));
      return tr;
    });
  document.querySelector("#cameras tbody").replaceChildren(...rows);
}

// --- position plot (Web Mercator, static/mapmath.js; tiles only from the agency's server) --
// 12 px on screen; a label's box, in em: per character (generous), and its line's height
// (a text's box runs from the font's ascent to its descent, ~1.17 em in DejaVu Sans).
const LABEL = { px: 12, charW: 0.62, lineH: 1.25, ascent: 0.98, max: 80 };

function overlaps(a, b) {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

// Puts each label beside its marker where it covers no marker and no label placed
// before it (right, left, above, below); a label with no free place is left out (the
// marker's tooltip still names it). Markers are {x, y, r}; returns [{text, x, y, cls}].
// `size` is the font size in the plot's units (12 px on screen however wide the plot is).
function placeLabels(markers, wanted, size) {
  const taken = markers.map((m) => ({ x: m.x - m.r, y: m.y - m.r, w: 2 * m.r, h: 2 * m.r }));
  const placed = [];
  for (const { marker: m, text, cls } of wanted) {
    if (placed.length >= LABEL.max) break;
    const w = text.length * LABEL.charW * size;
    const h = LABEL.lineH * size;
    const gap = m.r + 3;
    const candidates = [
      { x: m.x + gap, y: m.y - h / 2 },
      { x: m.x - gap - w, y: m.y - h / 2 },
      { x: m.x - w / 2, y: m.y - gap - h },
      { x: m.x - w / 2, y: m.y + gap },
    ];
    const box = candidates
      .map((c) => ({ ...c, w, h }))
      .find((b) => b.x >= 0 && b.y >= 0 && b.x + b.w <= PLOT.w && b.y + b.h <= PLOT.h
        && !taken.some((t) => overlaps(b, t)));
    if (!box) continue;
    taken.push(box);
    placed.push({ text, cls, x: box.x, y: box.y + LABEL.ascent * size }); // the baseline
  }
  return placed;
}

let tilesDrawn = ""; // the tile set on screen: not fetched again while the view stays

function renderTiles(view) {
  const g = $("plot-tiles");
  const template = state.map.tiles;
  const tiles = template && view ? MapMath.tilesFor(view) : [];
  const key = tiles.map((t) => `${t.z}/${t.x}/${t.y}@${t.px.toFixed(1)},${t.py.toFixed(1)}`).join(" ");
  if (key === tilesDrawn) return;
  tilesDrawn = key;
  g.replaceChildren(...tiles.map((t) => svg("image", {
    href: MapMath.tileUrl(template, t),
    x: t.px, y: t.py, width: t.size + 0.5, height: t.size + 0.5, // +0.5: no hairline seams
    preserveAspectRatio: "none",
    "data-tile": `${t.z}/${t.x}/${t.y}`,
  })));
  $("plot-attribution").textContent = tiles.length ? state.map.attribution : "";
}

function renderPlot() {
  const f = filters();
  const cams = [...state.cameras.values()].filter((c) => c.position && (!f.unit || c.unit_id === f.unit));
  const acts = [...state.activations.values()].filter((a) => a.origin && shown(a, f)).slice(-30);
  const points = cams.map((c) => c.position).concat(acts.map((a) => a.origin));
  const groups = ["plot-cameras", "plot-activations", "plot-scale", "plot-labels"].map($);
  if (!points.length) {
    plotFrame = null;
    for (const g of groups) g.replaceChildren();
    renderTiles(null);
    return;
  }
  const world = points.map((p) => MapMath.project(p.lat, p.lon));
  const xs = world.map((w) => w.x);
  const ys = world.map((w) => w.y);
  const [minX, maxX, minY, maxY] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const centre = MapMath.unproject((minX + maxX) / 2, (minY + maxY) / 2);
  const mPerWorld = MapMath.metresPerWorld(centre.lat);
  // At least 400 m across, so a single car is not a blow-up of GPS noise; circles fit.
  const ring = 2 * Math.max(0, ...acts.map((a) => a.radius_m));
  const spanM = Math.max(
    400,
    (maxX - minX) * mPerWorld * 1.15 + ring,
    (maxY - minY) * mPerWorld * 1.15 + ring,
  );
  const scale = Math.min(PLOT.w, PLOT.h) / (spanM / mPerWorld); // px per world unit
  const pxPerM = scale / mPerWorld;
  plotFrame = { cx: (minX + maxX) / 2, cy: (minY + maxY) / 2, scale };
  const at = (p) => {
    const w = MapMath.project(p.lat, p.lon);
    return { x: PLOT.w / 2 + (w.x - plotFrame.cx) * scale, y: PLOT.h / 2 + (w.y - plotFrame.cy) * scale };
  };
  renderTiles({ ...plotFrame, w: PLOT.w, h: PLOT.h });

  const markers = [];
  const wanted = [];
  const [gCams, gActs, gScale, gLabels] = groups;
  gActs.replaceChildren(...acts.flatMap((a) => {
    const o = at(a.origin);
    const circle = svg("circle", { cx: o.x, cy: o.y, r: Math.max(2, a.radius_m * pxPerM), class: "act-circle" });
    const dot = svg("circle", { cx: o.x, cy: o.y, r: 4, class: "act-origin", "data-unit-id": a.unit_id });
    const title = svg("title");
    title.textContent = `${a.kind} ${a.unit_id} ${utcTime(a.decided_at_ms)}`;
    dot.appendChild(title);
    markers.push({ x: o.x, y: o.y, r: 4 });
    wanted.push({ marker: markers[markers.length - 1], text: a.unit_id, cls: "label unit" });
    return [circle, dot];
  }));
  gCams.replaceChildren(...cams.flatMap((c) => {
    const p = at(c.position);
    const missed = state.missedCameras.has(c.camera_id);
    const kind = cameraState(c) === "recording" ? "recording" : c.online ? "online" : "offline";
    const nodes = [svg("circle", { cx: p.x, cy: p.y, r: 5, class: `cam-${kind}`, "data-camera-id": c.camera_id })];
    const title = svg("title");
    title.textContent = `${c.camera_id} (${c.unit_id}) ${cameraState(c)}`;
    nodes[0].appendChild(title);
    if (missed) nodes.push(svg("circle", { cx: p.x, cy: p.y, r: 9, class: "cam-missed" }));
    markers.push({ x: p.x, y: p.y, r: missed ? 10 : 6 });
    wanted.push({ marker: markers[markers.length - 1], text: c.camera_id, cls: "label camera" });
    return nodes;
  }));
  // Units first (fewer, and what a dispatcher looks for), then cameras.
  const shownWidth = $("plot").clientWidth;
  const size = LABEL.px * Math.max(1, PLOT.w / Math.max(1, shownWidth));
  $("plot").dataset.width = String(shownWidth); // what the labels were sized for
  gLabels.replaceChildren(...placeLabels(markers, wanted, size).map((l) => {
    const text = svg("text", { x: l.x, y: l.y, class: l.cls, "font-size": size.toFixed(1) });
    text.textContent = l.text;
    return text;
  }));
  // A scale bar of a round length.
  const steps = [50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];
  const barM = steps.find((m) => m * pxPerM >= 60) || steps[steps.length - 1];
  const bar = svg("g", { class: "scale label" });
  bar.appendChild(svg("line", { x1: PLOT.pad, y1: PLOT.h - PLOT.pad, x2: PLOT.pad + barM * pxPerM, y2: PLOT.h - PLOT.pad }));
  const label = svg("text", { x: PLOT.pad, y: PLOT.h - PLOT.pad - 4, "font-size": size.toFixed(1) });
  label.textContent = barM >= 1000 ? `${barM / 1000} km` : `${barM} m`;
  bar.appendChild(label);
  gScale.replaceChildren(bar);
}

function plotClick(event) {
  if (!plotFrame) return;
  const box = $("plot").getBoundingClientRect();
  const px = ((event.clientX - box.left) / box.width) * PLOT.w;
  const py = ((event.clientY - box.top) / box.height) * PLOT.h;
  const { lat, lon } = MapMath.unproject(
    plotFrame.cx + (px - PLOT.w / 2) / plotFrame.scale,
    plotFrame.cy + (py - PLOT.h / 2) / plotFrame.scale,
  );
  $("activate-lat").value = lat.toFixed(6);
  $("activate-lon").value = lon.toFixed(6);
}

// --- rendering, batched to one frame ------------------------------------------------------
let pending = null;
let flash = null;
function render(flashId) {
  if (flashId) flash = flashId;
  if (pending) return;
  pending = requestAnimationFrame(() => {
    pending = null;
    recomputeMissed();
    refreshChoices();
    renderFeed(flash);
    renderEscalations();
    renderCameras();
    renderPlot();
    flash = null;
  });
}

// --- the camera page ----------------------------------------------------------------------
function takeCameras(answer) {
  state.cameras = new Map(answer.cameras.map((c) => [c.camera_id, c]));
  state.cameraTotal = answer.cameras_total;
  state.cameraOffset = answer.cameras_offset;
  if (answer.units) state.units = answer.units;
}

let cameraFetch = { running: false, again: false, last: 0 };
// Fetches the page shown again: at most once per CAMERA_FETCH_EVERY_MS, however many
// cameras change (a fleet's heartbeats must not make the page fetch without end).
function fetchCameras() {
  if (cameraFetch.running) {
    cameraFetch.again = true;
    return;
  }
  cameraFetch.running = true;
  const wait = Math.max(0, cameraFetch.last + CAMERA_FETCH_EVERY_MS - Date.now());
  setTimeout(async () => {
    cameraFetch.last = Date.now();
    const query = new URLSearchParams({
      camera_offset: String(state.cameraOffset),
      camera_limit: String(CAMERA_PAGE),
      unit: $("filter-unit").value,
    });
    try {
      const response = await fetch(`/api/state?${query}`, { headers: { Accept: "application/json" } });
      if (response.ok) {
        takeCameras(await response.json());
        render();
      }
    } catch (err) {
      console.error("camera page", err);
    } finally {
      cameraFetch.running = false;
      if (cameraFetch.again) {
        cameraFetch.again = false;
        fetchCameras();
      }
    }
  }, wait);
}

function showCameraPage(offset) {
  state.cameraOffset = Math.max(0, offset);
  cameraFetch.last = 0; // the dispatcher asked: now
  fetchCameras();
}

// --- the live feed -----------------------------------------------------------------------
function apply(msg) {
  switch (msg.type) {
    case "hello":
      state.role = msg.role;
      state.csrfToken = msg.csrf_token;
      $("who").textContent = `${msg.user} (${msg.role})`;
      $("activate-submit").disabled = msg.role !== "dispatcher";
      if (msg.map) state.map = msg.map;
      break;
    case "snapshot":
      state.activations = new Map(msg.activations.map((a) => [a.activation_id, a]));
      state.escalations = msg.escalations;
      state.units = msg.units;
      // The snapshot holds the first page of all cameras; another page is fetched.
      if (state.cameraOffset === 0 && !$("filter-unit").value) takeCameras(msg);
      else fetchCameras();
      break;
    case "activation":
      state.activations.set(msg.activation.activation_id, msg.activation);
      return render(msg.activation.activation_id);
    case "camera":
      // One on the page shown is updated in place; any other may change the page.
      if (state.cameras.has(msg.camera.camera_id)) state.cameras.set(msg.camera.camera_id, msg.camera);
      else return fetchCameras();
      break;
    case "camera_removed":
      if (!state.cameras.delete(msg.camera_id)) return undefined;
      fetchCameras();
      break;
    case "escalation":
      state.escalations.push(msg.escalation);
      if (state.escalations.length > 500) state.escalations.shift();
      break;
    default:
      return undefined; // gateway status and future types: nothing drawn yet
  }
  return render();
}

function connect() {
  const source = new EventSource("/events");
  source.onopen = () => {
    $("conn").textContent = "live";
    $("conn").className = "conn up";
  };
  source.onerror = () => {
    // EventSource reconnects by itself; the server sends a fresh snapshot when it does.
    $("conn").textContent = "reconnecting…";
    $("conn").className = "conn down";
  };
  source.onmessage = (event) => {
    try {
      apply(JSON.parse(event.data));
    } catch (err) {
      console.error("bad update", err);
    }
  };
}

// --- dispatcher actions ------------------------------------------------------------------
async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": state.csrfToken },
    body: JSON.stringify(body),
  });
  let answer = {};
  try { answer = await response.json(); } catch (err) { answer = { detail: response.statusText }; }
  return { ok: response.ok, answer };
}

function showResult(text, ok) {
  const out = $("activate-result");
  out.textContent = text;
  out.className = ok ? "ok" : "bad";
}

async function activate(event) {
  event.preventDefault();
  const body = { unit_id: $("activate-unit").value, note: $("activate-note").value };
  const lat = $("activate-lat").value;
  const lon = $("activate-lon").value;
  if (lat !== "") body.lat = Number(lat);
  if (lon !== "") body.lon = Number(lon);
  $("activate-submit").disabled = true;
  try {
    const { ok, answer } = await post("/api/activate", body);
    if (ok && answer.outcome === "accepted") {
      showResult(`accepted: ${answer.activation_id}`, true);
    } else {
      showResult(`${answer.outcome || "error"}: ${answer.reason || answer.detail || ""}`, false);
    }
  } catch (err) {
    showResult(`could not reach the console: ${err}`, false);
  } finally {
    $("activate-submit").disabled = state.role !== "dispatcher";
  }
}

async function cancelActivation(a) {
  const reason = window.prompt(`Cancel ${a.kind} on ${a.unit_id}? Reason:`, "false trigger");
  if (reason === null) return;
  const { ok, answer } = await post("/api/cancel", { unit_id: a.unit_id, activation_id: a.activation_id, reason });
  showResult(ok ? `cancel ${answer.outcome}: ${answer.reason || ""}` : `cancel failed: ${answer.reason || answer.detail || ""}`, ok && answer.outcome === "accepted");
}

for (const id of ["filter-unit", "filter-kind", "filter-time"]) $(id).addEventListener("change", () => render());
$("filter-unit").addEventListener("change", () => showCameraPage(0));
$("cameras-prev").addEventListener("click", () => showCameraPage(state.cameraOffset - CAMERA_PAGE));
$("cameras-next").addEventListener("click", () => showCameraPage(state.cameraOffset + CAMERA_PAGE));
$("plot").addEventListener("click", plotClick);
window.addEventListener("resize", () => render()); // labels keep their size on screen
$("activate-form").addEventListener("submit", activate);
// "last seen" ages and the time filter move on their own; everything drawn is bounded (one
// page of cameras, at most 200 activations), so this stays cheap with any fleet.
setInterval(() => render(), 5000);
connect();
