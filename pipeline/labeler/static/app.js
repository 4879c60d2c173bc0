// Strata swipe labeler page: keys / swipes / buttons -> POST /api/label, with a prefetched buffer.
// Grid mode (config.mode === "grid"): a page of similar images pre-marked with a guess; clicks or
// Space flip the exceptions, Enter sends the page (POST /api/page/label), Backspace undoes a page.
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
  page: [],             // grid mode: [{id, label, guess}] shown now
  focus: 0,             // grid mode: the tile keys act on
  loading: false,       // grid mode: a page request or a page label is in flight
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
    if (state.config.show_ids) $("item-id").textContent = item.id;
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

// ---- grid mode ------------------------------------------------------------------------------
function gridColumns(n) { return Math.max(1, Math.ceil(Math.sqrt(n))); }

function paintTile(k) {
  const tile = $("grid").children[k];
  const item = state.page[k];
  tile.dataset.label = item.label;
  tile.classList.toggle("flipped", item.label !== item.guess);
  tile.querySelector(".mark").textContent = item.label;
  tile.setAttribute("aria-label", item.label);
}

function setFocus(k) {
  if (!state.page.length) return;
  state.focus = Math.max(0, Math.min(state.page.length - 1, k));
  for (const [j, tile] of Array.from($("grid").children).entries()) tile.classList.toggle("focus", j === state.focus);
}

function renderPage(items) {
  state.page = items.map(({ id, guess }) => ({ id, guess, label: guess }));
  const grid = $("grid");
  grid.replaceChildren();
  const cols = gridColumns(state.config.grid_size);
  grid.style.setProperty("--cols", cols);
  grid.style.setProperty("--rows", Math.ceil(state.config.grid_size / cols));
  for (const [k, item] of state.page.entries()) {
    const tile = document.createElement("div");
    tile.className = "tile";
    tile.setAttribute("role", "gridcell");
    tile.dataset.id = item.id;
    const img = document.createElement("img");
    img.decoding = "async";
    img.alt = "image to label";
    img.src = `/api/image?id=${encodeURIComponent(item.id)}`;
    const mark = document.createElement("span");
    mark.className = "mark";
    tile.append(img, mark);
    if (state.config.show_ids) {
      const caption = document.createElement("span");
      caption.className = "tile-id";
      caption.textContent = item.id;
      tile.append(caption);
    }
    tile.addEventListener("click", () => { setFocus(k); flip(k); });
    grid.append(tile);
    paintTile(k);
  }
  const any = state.page.length > 0;
  grid.hidden = !any;
  $("card").hidden = any;
  $("empty").hidden = any;
  $("image").hidden = true;
  setFocus(0);
  document.body.dataset.page = state.page.map((x) => x.id).join("\n");
  for (const b of document.querySelectorAll("nav#buttons button.page")) b.disabled = !any;
}

function flip(k) {
  const labels = state.config.labels;
  const item = state.page[k];
  if (!item) return;
  item.label = labels[(labels.indexOf(item.label) + 1) % labels.length];
  paintTile(k);
}

function markAll(value) {
  for (const [k, item] of state.page.entries()) { item.label = value; paintTile(k); }
}

async function loadPage() {
  if (state.loading || !state.annotator || state.page.length) return;
  state.loading = true;
  try {
    const data = await api("/api/page", { annotator: state.annotator });
    showProgress(data.progress);
    renderPage(data.items);
  } catch (err) {
    toast(`could not fetch images: ${err.message}`);
  } finally {
    state.loading = false;
  }
}

function confirmPage() {
  if (!state.page.length || state.loading) return;
  const page = state.page;
  const labels = Object.fromEntries(page.map((x) => [x.id, x.label]));
  const body = { annotator: state.annotator, labels, request_id: requestId() };
  state.loading = true;
  renderPage([]);
  $("empty").hidden = true;
  enqueueRequest(() => send("/api/page/label", body))
    .then((data) => { showProgress(data.progress); state.loading = false; loadPage(); })
    .catch((err) => {
      state.loading = false;
      toast(`page not saved: ${err.message}`);
      renderPage(page.map(({ id, label }) => ({ id, guess: label })));
    });
}

function undoPage() {
  const body = { annotator: state.annotator, request_id: requestId() };
  enqueueRequest(() => send("/api/page/undo", body))
    .then(async (data) => {
      const shown = state.page.map((x) => x.id);
      renderPage(data.items);  // the page comes back marked as it was sent
      showProgress(data.progress);
      if (shown.length) await api("/api/release", { annotator: state.annotator, ids: shown });
    })
    .catch((err) => toast(err.status === 404 ? "nothing to undo" : `undo failed: ${err.message}`));
}

function onGridKey(ev) {
  const cols = gridColumns(state.page.length || 1);
  const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: cols, ArrowUp: -cols };
  const digit = /^[1-9]$/.test(ev.key) ? state.config.labels[Number(ev.key) - 1] : undefined;
  if (ev.key in moves) setFocus(state.focus + moves[ev.key]);
  else if (ev.key === " " || ev.key === "x") flip(state.focus);
  else if (digit) { state.page[state.focus] && (state.page[state.focus].label = digit); paintTile(state.focus); }
  else if (ev.key === "Enter") { if (!ev.repeat) confirmPage(); }
  else if (ev.key === "Backspace" || ev.key === "u") undoPage();
  else return;
  ev.preventDefault();
}

// ---- single mode ----------------------------------------------------------------------------
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

function buildGridControls() {
  const nav = $("buttons");
  const button = (id, text, onClick) => {
    const b = document.createElement("button");
    b.type = "button";
    b.id = id;
    b.className = "page";
    b.textContent = text;
    b.addEventListener("click", onClick);
    nav.appendChild(b);
    return b;
  };
  for (const value of state.config.labels) button(`btn-all-${value}`, `all ${value}`, () => markAll(value)).dataset.label = value;
  button("btn-confirm", "⏎ confirm page", confirmPage);
  button("btn-undo", "⌫ undo page", undoPage).classList.remove("page");
  const digits = state.config.labels.slice(0, 9).map((v, k) => `${k + 1} ${v}`).join(", ");
  $("help").textContent = `Click or Space flips an image (arrows move), ${digits}; Enter confirms the page, Backspace/u undoes the last page.`;
}

function buildControls() {
  if (state.config.mode === "grid") { buildGridControls(); return; }
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
  if (state.config.mode === "grid") { onGridKey(ev); return; }
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
  document.body.classList.add("naming");
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
      document.body.classList.remove("naming");
      $("who").textContent = name;
      resolve(name);
    };
  });
}

function releaseAll() {
  const ids = [...state.buffer.map((x) => x.id), ...state.page.map((x) => x.id)];
  if (state.current) ids.push(state.current.id);
  if (!ids.length || !state.annotator) return;
  const blob = new Blob([JSON.stringify({ annotator: state.annotator, ids })], { type: "application/json" });
  navigator.sendBeacon("/api/release", blob);
  state.buffer = [];
  if (state.config.mode === "grid") renderPage([]);
  else show(null);
}

function applyConfig(config) {
  document.title = config.title;
  $("title").textContent = config.title;
  $("prompt").hidden = !config.prompt;
  $("prompt").textContent = config.prompt || "";
  $("item-id").hidden = !config.show_ids;
  if (config.reference) {
    $("reference-image").src = `/api/image?id=${encodeURIComponent(config.reference)}`;
    $("reference").hidden = false;
    document.body.classList.add("has-reference");
  }
  document.body.dataset.mode = config.mode;
}

async function main() {
  state.config = await api("/api/config");
  applyConfig(state.config);
  buildControls();
  const grid = state.config.mode === "grid";
  const fill = grid ? loadPage : refill;
  setupSwipe();
  document.addEventListener("keydown", onKey);
  $("who").addEventListener("click", async () => { await askName(); fill(); });
  window.addEventListener("pagehide", releaseAll);
  if (grid) renderPage([]);
  else show(null);
  if (!state.annotator) await askName();
  $("who").textContent = state.annotator;
  showProgress(await api("/api/progress"));
  await fill();
  // Poll while idle so images queued later (an active-learning round) show up by themselves.
  setInterval(() => {
    if (grid) loadPage();
    else if (!state.current || state.buffer.length < state.config.prefetch) refill();
  }, 3000);
}

main().catch((err) => toast(`labeler failed to start: ${err.message}`));
