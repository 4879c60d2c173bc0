// Strata swipe labeler page: keys / swipes / buttons -> POST /api/label, with a prefetched buffer.
// Requests that change state go through one promise chain, so an undo always follows the labels
// sent before it; every label carries a random request_id so a retried request counts once.
"use strict";

const $ = (id) => document.getElementById(id);
const SWIPE_PX = 70;
const ARROWS = { ArrowRight: "→", ArrowLeft: "←", ArrowDown: "↓" };

const state = {
  annotator: localStorage.getItem("strata.annotator") || "",
  config: null,
  current: null,        // {id, img}
  buffer: [],           // prefetched, leased items waiting to be shown
  fetching: false,
  flying: false,        // a labeled card is animating out; the next one is shown after it
  chain: Promise.resolve(),
  outstanding: 0,
};

function requestId() {
  // crypto.randomUUID needs a secure context; a shared LAN URL is plain http.
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const res = await fetch(path, init);
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (!res.ok) {
    const err = new Error((data && typeof data.detail === "string") ? data.detail : `HTTP ${res.status}`);
    err.status = res.status;
    throw err;
  }
  return data;
}

// Network failures and 5xx are retried with the same request_id; 4xx are final.
async function send(path, body, tries = 5) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await api(path, body);
    } catch (err) {
      if ((err.status && err.status < 500) || attempt + 1 >= tries) throw err;
      await new Promise((r) => setTimeout(r, 250 * 2 ** attempt));
    }
  }
}

function enqueueRequest(fn) {
  state.outstanding++;
  const run = state.chain.then(fn).finally(() => { state.outstanding--; });
  state.chain = run.catch(() => {});
  return run;
}

function toast(message) {
  const t = $("toast");
  t.textContent = message;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 3000);
}

function showProgress(p) {
  if (!p) return;
  const parts = Object.entries(p.by_label).map(([k, v]) => `${k} ${v}`).join(" · ");
  $("progress").textContent = `${p.labeled} / ${p.queued} labeled` + (p.status ? ` · ${p.status}` : "");
  $("progress").title = parts;
  $("progress").dataset.labeled = p.labeled;
}

function makeItem(id) {
  const img = new Image();
  img.decoding = "async";
  img.src = `/api/image?id=${encodeURIComponent(id)}`;  // starts the download now: prefetch
  return { id, img };
}

function show(item) {
  state.current = item;
  const card = $("card");
  card.className = "";
  card.style.transform = "";
  if (item) {
    $("image").hidden = false;
    $("image").src = item.img.src;
    $("item-id").textContent = item.id;
    $("empty").hidden = true;
  } else {
    $("image").hidden = true;
    $("image").removeAttribute("src");
    $("item-id").textContent = "";
    $("empty").hidden = false;
  }
  document.body.dataset.current = item ? item.id : "";
  for (const b of document.querySelectorAll("nav#buttons button[data-label]")) b.disabled = !item;
}

async function refill() {
  const want = state.config.prefetch - state.buffer.length;
  if (state.fetching || want <= 0 || !state.annotator) return;
  state.fetching = true;
  try {
    const known = new Set(state.buffer.map((x) => x.id));
    if (state.current) known.add(state.current.id);
    const n = Math.min(64, known.size + want);
    const data = await api("/api/next", { annotator: state.annotator, n });
    for (const { id } of data.items) if (!known.has(id)) state.buffer.push(makeItem(id));
    showProgress(data.progress);
    if (!state.current && !state.flying && state.buffer.length) show(state.buffer.shift());
  } catch (err) {
    toast(`could not fetch images: ${err.message}`);
  } finally {
    state.fetching = false;
  }
}

function advance() {
  state.flying = false;
  show(state.buffer.shift() || null);
  refill();
}

function label(value) {
  const item = state.current;
  if (!item || !state.config.labels.includes(value)) return;
  const card = $("card");
  card.className = `fly-${value}`;
  const body = { annotator: state.annotator, id: item.id, label: value, request_id: requestId() };
  enqueueRequest(() => send("/api/label", body))
    .then((data) => showProgress(data.progress))
    .catch((err) => toast(`label for ${item.id} not saved: ${err.message}`));
  state.current = null;  // no second label for the same card while it flies out
  state.flying = true;
  state.flyTimer = setTimeout(advance, 120);
}

function undo() {
  const body = { annotator: state.annotator, request_id: requestId() };
  enqueueRequest(() => send("/api/undo", body))
    .then((data) => {
      if (state.flying) { clearTimeout(state.flyTimer); state.flying = false; }
      if (state.current) state.buffer.unshift(state.current);
      show(makeItem(data.id));
      showProgress(data.progress);
    })
    .catch((err) => toast(err.status === 404 ? "nothing to undo" : `undo failed: ${err.message}`));
}

function buildControls() {
  const nav = $("buttons");
  const keyOf = {};
  for (const [key, value] of Object.entries(state.config.keys)) {
    if (!(value in keyOf) || key in ARROWS) keyOf[value] = ARROWS[key] || key;
  }
  const order = ["negative", "unsure", "positive"];
  const labels = [...state.config.labels].sort((a, b) => order.indexOf(a) - order.indexOf(b));
  for (const value of labels) {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.label = value;
    b.id = `btn-${value}`;
    b.textContent = `${keyOf[value] || ""} ${value}`;
    b.addEventListener("click", () => label(value));
    nav.appendChild(b);
  }
  const u = document.createElement("button");
  u.type = "button";
  u.id = "btn-undo";
  u.textContent = "⌫ undo";
  u.addEventListener("click", undo);
  nav.appendChild(u);
  $("help").textContent = "Keys: " + Object.values(state.config.labels)
    .map((v) => `${keyOf[v]} ${v}`).join(", ") + ", Backspace/u undo. Or swipe.";
}

function onKey(ev) {
  if (!$("name-form").hidden || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.key === "Backspace" || ev.key === "u") {
    ev.preventDefault();
    undo();
    return;
  }
  const value = state.config.keys[ev.key];
  if (value) {
    ev.preventDefault();
    if (!ev.repeat) label(value);
  }
}

function swipeLabel(dx, dy) {
  const has = (v) => state.config.labels.includes(v);
  if (Math.abs(dx) >= SWIPE_PX && Math.abs(dx) > Math.abs(dy)) return dx > 0 ? (has("positive") ? "positive" : null) : (has("negative") ? "negative" : null);
  if (dy >= SWIPE_PX && dy > Math.abs(dx) && has("unsure")) return "unsure";
  return null;
}

function setupSwipe() {
  const stage = $("stage");
  const card = $("card");
  let start = null;
  stage.addEventListener("touchstart", (ev) => {
    if (ev.touches.length !== 1) { start = null; return; }
    start = { x: ev.touches[0].clientX, y: ev.touches[0].clientY };
    card.classList.add("dragging");
  }, { passive: true });
  stage.addEventListener("touchmove", (ev) => {
    if (!start) return;
    const dx = ev.touches[0].clientX - start.x;
    const dy = ev.touches[0].clientY - start.y;
    card.style.transform = `translate(${dx}px, ${Math.max(0, dy)}px) rotate(${dx / 20}deg)`;
    const hint = swipeLabel(dx, dy);
    card.classList.remove("hint-positive", "hint-negative", "hint-unsure");
    if (hint) card.classList.add(`hint-${hint}`);
    ev.preventDefault();
  }, { passive: false });
  const end = (ev) => {
    if (!start) return;
    const t = ev.changedTouches[0];
    const value = swipeLabel(t.clientX - start.x, t.clientY - start.y);
    start = null;
    card.classList.remove("dragging", "hint-positive", "hint-negative", "hint-unsure");
    card.style.transform = "";
    if (value) label(value);
  };
  stage.addEventListener("touchend", end);
  stage.addEventListener("touchcancel", () => { start = null; card.className = ""; card.style.transform = ""; });
}

function askName() {
  const form = $("name-form");
  $("name-input").value = state.annotator;
  form.hidden = false;
  $("name-input").focus();
  return new Promise((resolve) => {
    form.onsubmit = (ev) => {
      ev.preventDefault();
      const name = $("name-input").value.trim();
      if (!name) return;
      if (state.annotator && state.annotator !== name) releaseAll();
      state.annotator = name;
      localStorage.setItem("strata.annotator", name);
      form.hidden = true;
      $("who").textContent = name;
      resolve(name);
    };
  });
}

function releaseAll() {
  const ids = state.buffer.map((x) => x.id);
  if (state.current) ids.push(state.current.id);
  if (!ids.length || !state.annotator) return;
  const blob = new Blob([JSON.stringify({ annotator: state.annotator, ids })], { type: "application/json" });
  navigator.sendBeacon("/api/release", blob);
  state.buffer = [];
  show(null);
}

async function main() {
  state.config = await api("/api/config");
  document.title = state.config.title;
  $("title").textContent = state.config.title;
  buildControls();
  setupSwipe();
  document.addEventListener("keydown", onKey);
  $("who").addEventListener("click", async () => { await askName(); refill(); });
  window.addEventListener("pagehide", releaseAll);
  show(null);
  if (!state.annotator) await askName();
  $("who").textContent = state.annotator;
  showProgress(await api("/api/progress"));
  await refill();
  // Poll while idle so images queued later (an active-learning round) show up by themselves.
  setInterval(() => { if (!state.current || state.buffer.length < state.config.prefetch) refill(); }, 3000);
}

main().catch((err) => toast(`labeler failed to start: ${err.message}`));
