// tfinpaint serve: paint a hole mask over a photo and inpaint it through /api/v1/inpaint.
//
// The photo is shown on a scaled view; the mask is kept as a list of edits in image coordinates (strokes, a
// loaded mask file, clears), so that undo / redo replay them and the mask sent to the server is drawn at the
// photo's full resolution whatever the view's size. The photo's own file is sent, never a re-encoded copy, so the
// known pixels come back exactly as the server decodes them.
"use strict";

const $ = (id) => document.getElementById(id);
const OVERLAY_COLOUR = "#ff2a2a";
const STAGES_MAX_PIXELS = 4 * 1024 * 1024;

const state = {
  models: [],
  maxPixels: 0,        // the server's limit (GET /api/v1/models)
  source: null,        // Blob sent as the image: the opened file, or a previous result
  sourceName: "image",
  bitmap: null,        // the source decoded, full resolution
  width: 0,
  height: 0,
  scale: 1,            // view pixels per image pixel
  edits: [],           // {type: "stroke", erase, radius, points} | {type: "clear"} | {type: "mask", canvas}
  undone: [],
  stroke: null,        // the stroke being painted
  result: null,        // {blob, url, bitmap, stages: [{name, url}]}
  showingResult: false,
  busy: false,
};

// ---------------------------------------------------------------- models

async function loadModels() {
  try {
    const response = await fetch("/api/v1/models");
    const body = await response.json();
    state.models = body.models;
    state.maxPixels = body.max_pixels;
    const select = $("model");
    select.replaceChildren(...state.models.map((model) => new Option(`${model.name} (${model.model})`, model.name)));
    fillStrategies();
  } catch (error) {
    showMessage(`cannot list the models: ${error}`, "error");
  }
}

function fillStrategies() {
  const model = state.models.find((item) => item.name === $("model").value);
  const strategies = model ? model.hd_strategies : ["default"];
  $("hd-strategy").replaceChildren(...strategies.map((name) => new Option(name, name)));
}

// ---------------------------------------------------------------- opening images

// Browsers decode a photo upright (its EXIF orientation applied), as the server reads it, so the mask painted
// here lines up with the pixels the server inpaints.
async function openImage(blob, name) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob);
  } catch (error) {
    showMessage(`${name}: not an image this browser can decode`, "error");
    return;
  }
  state.source = blob;
  state.sourceName = name || "image";
  state.bitmap = bitmap;
  state.width = bitmap.width;
  state.height = bitmap.height;
  state.edits = [];
  state.undone = [];
  setResult(null);
  $("placeholder").hidden = true;
  $("view").hidden = false;
  layout();
  $("info").textContent = `${state.sourceName}: ${state.width} x ${state.height} pixels ` +
    `(${(state.width * state.height / 1e6).toFixed(1)} MP)`;
  if (state.maxPixels && state.width * state.height > state.maxPixels) {
    showMessage(`${state.sourceName} has more pixels than the server accepts (${state.maxPixels.toLocaleString("en")})`,
      "error");
  } else {
    showMessage("");
  }
  updateButtons();
}

function layout() {
  if (!state.bitmap) return;
  const main = $("drop-zone");
  const maxWidth = Math.max(200, main.clientWidth - 32);
  const maxHeight = Math.max(200, window.innerHeight * 0.72);
  state.scale = Math.min(1, maxWidth / state.width, maxHeight / state.height);
  const viewWidth = Math.max(1, Math.round(state.width * state.scale));
  const viewHeight = Math.max(1, Math.round(state.height * state.scale));
  for (const canvas of [$("photo"), $("overlay")]) {
    canvas.width = viewWidth;
    canvas.height = viewHeight;
  }
  drawPhoto();
  drawOverlay();
}

function drawPhoto() {
  const canvas = $("photo");
  const context = canvas.getContext("2d");
  const bitmap = state.showingResult && state.result ? state.result.bitmap : state.bitmap;
  context.imageSmoothingQuality = "high";
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
}

// ---------------------------------------------------------------- the mask

// Replays the edits since the last clear / loaded mask onto `context`, scaled by `scale`.
// Display mode: holes opaque (the overlay canvas itself is translucent), erasing removes paint.
// Full mode: an opaque black canvas on which holes are white and erasing paints black (what the server reads).
function replayMask(context, scale, full) {
  const { width, height } = context.canvas;
  let start = 0;
  for (let index = state.edits.length - 1; index >= 0; index--) {
    if (state.edits[index].type !== "stroke") { start = index; break; }
  }
  context.save();
  context.globalCompositeOperation = "source-over";
  if (full) {
    context.fillStyle = "#000";
    context.fillRect(0, 0, width, height);
  } else {
    context.clearRect(0, 0, width, height);
  }
  const first = state.edits[start];
  if (first && first.type === "mask") {
    context.imageSmoothingEnabled = false;
    context.drawImage(first.canvas, 0, 0, width, height);
    if (!full) {  // the mask canvas is white: colour it like the strokes
      context.globalCompositeOperation = "source-in";
      context.fillStyle = OVERLAY_COLOUR;
      context.fillRect(0, 0, width, height);
      context.globalCompositeOperation = "source-over";
    }
  }
  for (const edit of state.edits.slice(start)) {
    if (edit.type === "stroke") drawStroke(context, edit, scale, full);
  }
  if (state.stroke) drawStroke(context, state.stroke, scale, full);
  context.restore();
}

function strokeStyle(context, stroke, full) {
  if (full) {
    context.globalCompositeOperation = "source-over";
    context.strokeStyle = context.fillStyle = stroke.erase ? "#000" : "#fff";
  } else {
    context.globalCompositeOperation = stroke.erase ? "destination-out" : "source-over";
    context.strokeStyle = context.fillStyle = OVERLAY_COLOUR;
  }
  context.lineCap = "round";
  context.lineJoin = "round";
}

function drawStroke(context, stroke, scale, full, from = 0) {
  strokeStyle(context, stroke, full);
  const points = stroke.points;
  const radius = stroke.radius * scale;
  if (points.length === 1) {
    context.beginPath();
    context.arc(points[0][0] * scale, points[0][1] * scale, radius, 0, 2 * Math.PI);
    context.fill();
    return;
  }
  context.lineWidth = 2 * radius;
  context.beginPath();
  const begin = Math.max(0, from - 1);
  context.moveTo(points[begin][0] * scale, points[begin][1] * scale);
  for (let index = begin + 1; index < points.length; index++) {
    context.lineTo(points[index][0] * scale, points[index][1] * scale);
  }
  context.stroke();
}

function drawOverlay() {
  const canvas = $("overlay");
  replayMask(canvas.getContext("2d"), state.scale, false);
}

function pushEdit(edit) {
  state.edits.push(edit);
  state.undone = [];
  drawOverlay();
  updateButtons();
}

function hasHole() {
  return state.edits.length > 0 && state.edits[state.edits.length - 1].type !== "clear";
}

// The full-resolution mask as a PNG blob: white = hole.
function maskBlob() {
  const canvas = document.createElement("canvas");
  canvas.width = state.width;
  canvas.height = state.height;
  replayMask(canvas.getContext("2d"), 1, true);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

async function loadMaskFile(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { premultiplyAlpha: "none", colorSpaceConversion: "none" });
  } catch (error) {
    showMessage(`${file.name}: not an image this browser can decode`, "error");
    return;
  }
  const canvas = document.createElement("canvas");
  canvas.width = state.width;
  canvas.height = state.height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.imageSmoothingEnabled = false;  // nearest neighbour, as the server resizes masks
  context.drawImage(bitmap, 0, 0, state.width, state.height);
  const pixels = context.getImageData(0, 0, state.width, state.height);
  const data = pixels.data;
  // The mask is the max over the colour channels, or the alpha channel when only alpha varies.
  let constantColour = true;
  let alphaVaries = false;
  for (let index = 0; index < data.length; index += 4) {
    if (data[index] !== data[0] || data[index + 1] !== data[1] || data[index + 2] !== data[2]) constantColour = false;
    if (data[index + 3] !== data[3]) alphaVaries = true;
    if (!constantColour && alphaVaries) break;
  }
  const useAlpha = constantColour && alphaVaries;
  const whiteIsHole = $("mask-polarity").value === "hole";
  for (let index = 0; index < data.length; index += 4) {
    const value = useAlpha ? data[index + 3] : Math.max(data[index], data[index + 1], data[index + 2]);
    const hole = (value > 127) === whiteIsHole;
    data[index] = data[index + 1] = data[index + 2] = 255;
    data[index + 3] = hole ? 255 : 0;
  }
  context.putImageData(pixels, 0, 0);
  pushEdit({ type: "mask", canvas });
  const resized = bitmap.width !== state.width || bitmap.height !== state.height;
  showMessage(resized ? `mask ${file.name} is ${bitmap.width} x ${bitmap.height}, resized to the image's ` +
    `${state.width} x ${state.height} (nearest neighbour)` : `mask ${file.name} loaded`, resized ? "warning" : "");
}

// ---------------------------------------------------------------- painting

function imagePoint(event) {
  const rect = $("overlay").getBoundingClientRect();
  return [(event.clientX - rect.left) / rect.width * state.width,
          (event.clientY - rect.top) / rect.height * state.height];
}

function brushRadius() {
  return Number($("brush-size").value) / 2 / state.scale;  // the slider is in view pixels
}

function onPointerDown(event) {
  if (!state.bitmap || state.busy || state.showingResult || event.button !== 0) return;
  event.preventDefault();
  $("overlay").setPointerCapture(event.pointerId);
  state.stroke = { type: "stroke", erase: $("tool-eraser").checked, radius: brushRadius(), points: [imagePoint(event)] };
  const context = $("overlay").getContext("2d");
  context.save();
  drawStroke(context, state.stroke, state.scale, false);
  context.restore();
}

// A circle the brush's size follows the pointer over the view.
function moveBrushCursor(event) {
  const cursor = $("brush-cursor");
  const rect = $("overlay").getBoundingClientRect();
  const size = Number($("brush-size").value);
  cursor.hidden = false;
  cursor.style.width = cursor.style.height = `${size}px`;
  cursor.style.left = `${event.clientX - rect.left}px`;
  cursor.style.top = `${event.clientY - rect.top}px`;
}

function onPointerMove(event) {
  moveBrushCursor(event);
  if (!state.stroke) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  const from = state.stroke.points.length;
  for (const item of (events.length ? events : [event])) state.stroke.points.push(imagePoint(item));
  const context = $("overlay").getContext("2d");
  context.save();
  drawStroke(context, state.stroke, state.scale, false, from);
  context.restore();
}

function onPointerUp() {
  if (!state.stroke) return;
  const stroke = state.stroke;
  state.stroke = null;
  pushEdit(stroke);
}

function undo() {
  if (!state.edits.length) return;
  state.undone.push(state.edits.pop());
  drawOverlay();
  updateButtons();
}

function redo() {
  if (!state.undone.length) return;
  state.edits.push(state.undone.pop());
  drawOverlay();
  updateButtons();
}

// ---------------------------------------------------------------- running

async function run() {
  if (!state.source || state.busy) return;
  if (!hasHole()) {
    showMessage("paint the area to fill first (or load a mask)", "error");
    return;
  }
  setBusy(true);
  $("elapsed").textContent = "0.0 s";
  const started = performance.now();
  const timer = setInterval(() => {
    $("elapsed").textContent = `${((performance.now() - started) / 1000).toFixed(1)} s`;
  }, 100);
  try {
    const form = new FormData();
    form.append("image", state.source, state.sourceName);
    const maskStarted = performance.now();
    form.append("mask", await maskBlob(), "mask.png");
    const maskSeconds = (performance.now() - maskStarted) / 1000;
    form.append("model", $("model").value);
    form.append("hd_strategy", $("hd-strategy").value);
    form.append("mask_polarity", "hole");  // the page always sends white = hole
    // Stages are full-size images held in the server's memory: asked for only up to 4 MP.
    form.append("stages", String(state.width * state.height <= STAGES_MAX_PIXELS));
    const response = await fetch("/api/v1/inpaint", { method: "POST", body: form });
    if (!response.ok) {
      let detail = `${response.status} ${response.statusText}`;
      try { detail = (await response.json()).detail || detail; } catch (error) { /* not JSON */ }
      throw new Error(detail);
    }
    const blob = await response.blob();
    const bitmap = await createImageBitmap(blob);
    const resultId = response.headers.get("X-Tfinpaint-Result-Id");
    const stageNames = (response.headers.get("X-Tfinpaint-Stages") || "").split(",").filter(Boolean);
    const stages = stageNames.map((name) => ({ name, url: `/api/v1/results/${resultId}/${name}.png` }));
    setResult({ blob, bitmap, url: URL.createObjectURL(blob), stages });
    const total = (performance.now() - started) / 1000;
    const modelSeconds = Number(response.headers.get("X-Tfinpaint-Seconds") || 0);
    $("elapsed").textContent = `done in ${total.toFixed(2)} s (model ${modelSeconds.toFixed(2)} s)`;
    $("elapsed").title = `page: mask ${maskSeconds.toFixed(2)} s; server: ` +
      (response.headers.get("Server-Timing") || "").split(",").map((part) => {
        const [name, duration] = part.trim().split(";dur=");
        return `${name} ${(Number(duration) / 1000).toFixed(2)} s`;
      }).join(", ");
    const warning = response.headers.get("X-Tfinpaint-Warning");
    showMessage(warning || `${bitmap.width} x ${bitmap.height} result`, warning ? "warning" : "");
  } catch (error) {
    $("elapsed").textContent = "";
    showMessage(`inpainting failed: ${error.message || error}`, "error");
  } finally {
    clearInterval(timer);
    setBusy(false);
  }
}

function setBusy(busy) {
  state.busy = busy;
  document.body.classList.toggle("busy", busy);
  $("busy").hidden = !busy;
  $("run").textContent = busy ? "Inpainting…" : "Inpaint";
  updateButtons();
}

function setResult(result) {
  if (state.result) URL.revokeObjectURL(state.result.url);
  state.result = result;
  state.showingResult = Boolean(result);
  const link = $("download");
  if (result) {
    link.href = result.url;
    link.download = `${state.sourceName.replace(/\.[^.]*$/, "")}_inpainted.png`;
  } else {
    link.removeAttribute("href");
  }
  const stages = $("stages");
  stages.replaceChildren(...(result ? result.stages : []).map((stage) => {
    const figure = document.createElement("figure");
    const image = document.createElement("img");
    image.src = stage.url;
    image.alt = stage.name;
    const caption = document.createElement("figcaption");
    caption.textContent = stage.name === "flow" ? "attention flow" : `${stage.name} result`;
    figure.append(image, caption);
    return figure;
  }));
  stages.hidden = !(result && result.stages.length);
  showView();
}

function showView() {
  $("view").classList.toggle("showing-result", state.showingResult);
  $("before-after").textContent = !state.result ? "Before / after"
    : state.showingResult ? "Show before" : "Show after";
  if (state.bitmap) drawPhoto();
  updateButtons();
}

function toggleBeforeAfter() {
  if (!state.result) return;
  state.showingResult = !state.showingResult;
  showView();
}

async function continueFromResult() {
  if (!state.result) return;
  const name = state.sourceName.replace(/\.[^.]*$/, "") + "_inpainted.png";
  const blob = state.result.blob;
  await openImage(blob, name);
}

// ---------------------------------------------------------------- wiring

function showMessage(text, kind = "") {
  const message = $("message");
  message.textContent = text;
  message.className = `message ${kind}`;
}

function updateButtons() {
  const loaded = Boolean(state.bitmap);
  const editable = loaded && !state.busy && !state.showingResult;
  $("run").disabled = !loaded || state.busy || !state.models.length;
  $("undo").disabled = !editable || !state.edits.length;
  $("redo").disabled = !editable || !state.undone.length;
  $("clear").disabled = !editable || !hasHole();
  $("before-after").disabled = !state.result || state.busy;
  $("continue").disabled = !state.result || state.busy;
  const link = $("download");
  link.classList.toggle("disabled", !state.result);
  link.setAttribute("aria-disabled", String(!state.result));
}

function firstImage(files) {
  return Array.from(files || []).find((file) => file.type.startsWith("image/") || /\.(png|jpe?g|bmp|webp)$/i.test(file.name));
}

function wire() {
  $("image-input").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) openImage(file, file.name);
    event.target.value = "";
  });
  $("mask-input").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file && state.bitmap) loadMaskFile(file);
    else if (file) showMessage("open an image before its mask", "error");
    event.target.value = "";
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("drag-over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("drag-over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("drag-over");
    const file = firstImage(event.dataTransfer.files);
    if (file) openImage(file, file.name);
    else showMessage("drop an image file (PNG, JPEG, BMP, WebP)", "error");
  });
  const overlay = $("overlay");
  overlay.addEventListener("pointerdown", onPointerDown);
  overlay.addEventListener("pointermove", onPointerMove);
  overlay.addEventListener("pointerup", onPointerUp);
  overlay.addEventListener("pointercancel", onPointerUp);
  overlay.addEventListener("pointerleave", () => { $("brush-cursor").hidden = true; });
  $("brush-size").addEventListener("input", () => { $("brush-size-value").textContent = $("brush-size").value; });
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("clear").addEventListener("click", () => pushEdit({ type: "clear" }));
  $("model").addEventListener("change", fillStrategies);
  $("run").addEventListener("click", run);
  $("before-after").addEventListener("click", toggleBeforeAfter);
  $("continue").addEventListener("click", continueFromResult);
  document.addEventListener("keydown", (event) => {
    if (!(event.ctrlKey || event.metaKey) || state.busy || state.showingResult) return;
    const key = event.key.toLowerCase();
    if (key === "z" && !event.shiftKey) { event.preventDefault(); undo(); }
    else if (key === "y" || (key === "z" && event.shiftKey)) { event.preventDefault(); redo(); }
  });
  let resizeTimer = 0;
  window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(layout, 100); });
}

wire();
loadModels().then(updateButtons);
