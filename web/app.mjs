// The page: opens a model, decodes audio and mixes it to mono, runs the model in worker.mjs, shows the
// results. Every default comes from the model's metadata ("defaults"); none is written here.
import { SAMPLE_RATE, encodeWav, prepareAudio, restoreAudio } from "./audio.mjs";

// What `vampnet-onnx demo` builds: tiny shapes and random weights. Found when the page is served
// from the repository (by `vampnet-onnx web`, or any static server at the repository's root).
const DEMO_MODEL = new URL("../artifacts/demo/vampnet-tiny.onnx", location.href).href;
// wasm32 addresses at most 4 GiB, and the weights must all be in the wasm memory.
const WASM_MEMORY_LIMIT = 4 * 2 ** 30;
const CONTROLS = [
  ["seed", "seed"], ["periodic_prompt", "periodic prompt"], ["upper_codebook_mask", "upper codebook mask"],
  ["onset_mask_width", "onset mask width"], ["beat_mask_ms", "beat mask (ms)"], ["dropout", "dropout"],
  ["pitch_shift", "pitch shift (semitones)"],
  ["prefix_s", "prefix (s)"], ["suffix_s", "suffix (s)"], ["sampling_steps", "sampling steps"],
  ["temperature", "temperature"], ["top_p", "top-p"],
];
// Inputs the page sets itself; every other input of the model with a default gets a control
// ("more controls" for those not in CONTROLS).
const NOT_CONTROLS = new Set(["audio", "mask", "sample_rate", "generate", "adapter"]);
// The controls that change the mask: the preview runs again when one of them changes.
const MASK_CONTROLS = new Set(["seed", "periodic_prompt", "upper_codebook_mask", "onset_mask_width",
  "beat_mask_ms", "dropout", "prefix_s", "suffix_s", "rand_mask_intensity", "periodic_prompt_width", "ncc",
  "time_stretch_factor", "pitch_shift"]);
// WGSL's sin and cos are accurate only near [-π, π]; the pitch shift's phase vocoder feeds them
// phases of 10^4 rad and more (docs/browser.md, "WebGPU").
const PITCH_ON_WEBGPU = "; the pitch shift is only approximate on WebGPU: run on WebAssembly for the exact one";
const PREVIEW_DELAY_MS = 250; // wait for a pause in typing
const MAX_VARIATIONS = 16;

const $ = (id) => document.getElementById(id);
const state = { worker: null, queue: Promise.resolve(), source: null, model: null, audio: null, result: null,
  outputUrls: [], preview: null, previews: 0 };

function setState(name) {
  document.body.dataset.state = name;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = false;
  setState("error");
}

function clearError() {
  $("error").hidden = true;
}

const gb = (bytes) => `${(bytes / 1e9).toFixed(2)} GB`;
const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;
const firstLine = (e) => String(e?.message ?? e).split("\n").find((s) => s.trim()) ?? String(e);

// ---------------------------------------------------------------------------------- the model

function startWorker() {
  state.worker?.terminate();
  state.queue = Promise.resolve();
  state.worker = new Worker(new URL("./worker.mjs", import.meta.url), { type: "module" });
  state.worker.onerror = (event) => {
    event.preventDefault();
    showError(`the model's worker failed: ${event.message || "it could not start"}`);
    setBusy(false);
  };
  return state.worker;
}

// One request to the worker; resolves with its reply, rejects with its error. Requests wait for
// the one before (a preview and a vamp share the worker).
function ask(message, transfer = []) {
  const worker = state.worker;
  const reply = state.queue.catch(() => {}).then(() => new Promise((resolve, reject) => {
    if (worker !== state.worker) return reject({ stage: "cancelled", message: "cancelled" });
    worker.onmessage = ({ data }) => (data.type === "error" ? reject(data) : resolve(data));
    worker.postMessage(message, transfer);
  }));
  state.queue = reply;
  return reply;
}

function memoryText(size) {
  return `the model (${gb(size)}) does not fit in the browser's memory: WebAssembly memory holds at most ` +
    `4 GiB and the model's weights must all be in it (see the README on model sizes)`;
}

/** source: {label, demo, model: File | URL, data: File | null, size: bytes (for a URL), fetchMs: by address}. */
async function loadModel(source) {
  clearError();
  state.model = null;
  $("notice").hidden = true;
  updateRunButton();
  setState("loading-model");
  $("model-status").textContent = `loading ${source.label} ...`;
  const size = source.size ?? source.model.size + (source.data?.size ?? 0);
  if (size > WASM_MEMORY_LIMIT) {
    $("model-status").textContent = "no model loaded";
    return showError(`cannot load ${source.label}: ${memoryText(size)}`);
  }
  const message = { type: "load", backend: $("backend").value, threads: REQUESTED_THREADS };
  const transfer = [];
  const reading = performance.now();
  try {
    if (source.model instanceof File) {
      message.model = await source.model.arrayBuffer();
      transfer.push(message.model);
    } else {
      message.model = source.model;
    }
    // The weights go as the File itself (a handle: nothing is read or copied here); the worker
    // reads them.
    if (source.data) message.data = { name: source.data.name, blob: source.data };
  } catch (e) {
    $("model-status").textContent = "no model loaded";
    return showError(e instanceof RangeError || /memory/i.test(firstLine(e))
      ? `cannot load ${source.label}: ${memoryText(size)} (${firstLine(e)})`
      : `cannot read ${source.label}: ${firstLine(e)}`);
  }
  const readMs = performance.now() - reading;
  startWorker();
  let loaded;
  try {
    loaded = await ask(message, transfer);
  } catch (e) {
    $("model-status").textContent = "no model loaded";
    return showError(e.memory
      ? `cannot load ${source.label}: ${memoryText(size)} (${e.message})`
      : /external data path could not be canonicalized/.test(e.message)
        ? `cannot load ${source.label}: it keeps weights of its loops in its .data file, which onnxruntime-web ` +
          `cannot read (build the browser's variant with \`vampnet-onnx build --weights web\`; ${e.message})`
        : `cannot load the model ${source.label}: ${e.message}`);
  }
  let defaults;
  try {
    defaults = JSON.parse(loaded.metadata.defaults);
  } catch {
    defaults = null;
  }
  if (!loaded.inputs.some((i) => i.name === "audio") || !defaults) {
    $("model-status").textContent = "no model loaded";
    return showError(`${source.label} is not a vampnet-onnx model (no "audio" input or no "defaults" in its metadata)`);
  }
  state.source = source;
  state.model = { ...loaded, defaults, size };
  // ms: fetching a model by address (downloading it, or finding it in the cache), reading the .onnx
  // here, then the worker's parts (worker.mjs)
  state.loadMs = { fetch: source.fetchMs ?? null, read: readMs, ...loaded.ms };
  $("backend-status").textContent = backendText(loaded);
  $("model-status").textContent = `${source.label}${source.cached ? " (from this browser's cache)" : ""}: ` +
    `${gb(size)}, ${loaded.inputs.length} inputs, ` +
    `${loaded.metadata.n_codebooks ?? "?"} codebooks, ${loaded.metadata.sample_rate ?? "?"} Hz`;
  $("notice").hidden = !source.demo;
  $("notice").textContent = source.demo
    ? "This is the demo model: VampNet's architecture with tiny shapes and RANDOM weights, so its output is " +
      "noise-like, not music. Open a real model (built with `vampnet-onnx build`) for music."
    : "";
  buildControls();
  setState("ready");
  updateRunButton();
  schedulePreview();
}

function backendText({ backend, threads, isolated }) {
  if (backend === "webgpu") return "running on WebGPU (WebAssembly for the ops WebGPU lacks)";
  if (isolated) return `running on WebAssembly, ${threads} thread${threads > 1 ? "s" : ""}`;
  return "running on WebAssembly, one thread: the page is not cross-origin isolated (its server sends no " +
    "COOP/COEP headers, see docs/browser.md), so the browser allows no threads";
}

function buildControls() {
  const names = new Set(state.model.inputs.map((i) => i.name));
  const box = $("controls");
  box.replaceChildren();
  for (const [name, label] of CONTROLS) {
    if (!names.has(name) || !(name in state.model.defaults)) continue;
    box.append(control(name, label, state.model.defaults[name]));
  }
  box.append(control("variations", "variations", 1));
  const shown = new Set(CONTROLS.map(([name]) => name));
  const more = state.model.inputs.map((i) => i.name)
    .filter((name) => !shown.has(name) && !NOT_CONTROLS.has(name) && name in state.model.defaults);
  $("more-controls").replaceChildren(...more.map((name) => control(name, name.replaceAll("_", " "), state.model.defaults[name])));
  $("more").hidden = more.length === 0;
  let presets = {};
  try {
    presets = JSON.parse(state.model.metadata.presets ?? "{}");
  } catch {}
  const select = $("preset");
  select.replaceChildren(new Option("(none)", ""), ...Object.keys(presets).map((name) => new Option(name, name)));
  state.model.presets = presets;
  // the fine-tunes built into the model (metadata `adapters`): input `adapter` k picks the k-th
  let adapters = [];
  try {
    adapters = JSON.parse(state.model.metadata.adapters ?? "[]");
  } catch {}
  const fineTunes = $("adapter");
  fineTunes.replaceChildren(...["base model", ...adapters].map((name, k) => new Option(name, String(k))));
  $("adapter-choice").hidden = !names.has("adapter") || adapters.length === 0;
}

// A preset fills the controls it names that this model has (one without beat_mask_ms ignores it).
$("preset").addEventListener("change", (event) => {
  for (const [name, value] of Object.entries(state.model?.presets[event.target.value] ?? {})) {
    const input = $(`input-${name}`);
    if (input) input.value = String(value);
  }
  schedulePreview();
});
for (const box of [$("controls"), $("more-controls")]) {
  box.addEventListener("input", (event) => {
    if (MASK_CONTROLS.has(event.target.id.slice("input-".length))) schedulePreview();
  });
}

function control(name, label, value) {
  const wrap = document.createElement("label");
  const input = document.createElement("input");
  input.type = "number";
  input.id = `input-${name}`;
  input.value = String(value);
  input.step = "any";
  wrap.append(label, input);
  return wrap;
}

// ?threads=N in the address: at most N threads (default: every core, where the page is isolated)
const REQUESTED_THREADS = Number(new URLSearchParams(location.search).get("threads")) || null;

// ?backend=wasm in the address picks WebAssembly from the start
$("backend").value = new URLSearchParams(location.search).get("backend") === "wasm" ? "wasm" : "auto";
$("backend").addEventListener("change", () => state.source && loadModel(state.source));

$("model-file").addEventListener("change", (event) => {
  const files = [...event.target.files];
  const model = files.find((f) => !f.name.endsWith(".data"));
  const data = files.find((f) => f.name.endsWith(".data")) ?? null;
  if (!model) return showError("choose the .onnx file (and its .data file with it, when there is one)");
  loadModel({ label: model.name, demo: false, model, data });
});

// ---------------------------------------------------------------------------------- models by address

// A model opened by its address is downloaded once and kept in Cache Storage (its weights, when
// apart, at the address + ".data", as `vampnet-onnx build` writes them): the next visit opens it
// from there without a request.
const MODEL_CACHE = "vampnet-onnx models";
const baseName = (url) => decodeURIComponent(new URL(url).pathname.split("/").pop() || "model.onnx");

/** Downloads url into the cache (progress in the page), streamed: the file goes to the cache's
 * disk as it arrives, never whole into this page's memory. Returns false when `optional` and the
 * server has no such file. */
async function download(cache, url, optional = false) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) {
    if (optional && response.status === 404) return false;
    throw new Error(`cannot download ${url}: HTTP ${response.status}`);
  }
  const total = Number(response.headers.get("Content-Length")) || 0;
  let received = 0;
  const counted = response.body.pipeThrough(new TransformStream({ transform(chunk, controller) {
    received += chunk.length;
    $("download-status").textContent = `downloading ${baseName(url)}: ${mb(received)}${total ? ` of ${mb(total)}` : ""}`;
    controller.enqueue(chunk);
  } }));
  const headers = { "Content-Type": "application/octet-stream", ...(total ? { "Content-Length": String(total) } : {}) };
  await cache.put(url, new Response(counted, { headers }));
  return true;
}

async function openUrl(address) {
  clearError();
  let url;
  try {
    url = new URL(address, location.href).href;
  } catch {
    return showError(`"${address}" is not an address`);
  }
  let model, data, cached;
  setState("loading-model");
  const started = performance.now();
  try {
    const cache = await caches.open(MODEL_CACHE);
    cached = Boolean(await cache.match(url));
    // the .data first: a kept .onnx means its .data (if any) was kept whole before it
    if (!cached) {
      await download(cache, `${url}.data`, true);
      await download(cache, url);
    }
    // the kept files, read back as Blobs (the browser keeps large ones on disk, not in memory);
    // no request at all: a model kept without its .data has none
    model = { blob: await (await cache.match(url)).blob() };
    const keptData = await cache.match(`${url}.data`);
    data = keptData ? { blob: await keptData.blob() } : null;
  } catch (e) {
    $("download-status").textContent = "";
    return showError(firstLine(e));
  }
  $("download-status").textContent = cached ? `${baseName(url)}: opened from this browser's cache, nothing downloaded`
    : `downloaded ${baseName(url)}: ${mb(model.blob.size + (data?.blob.size ?? 0))}, kept in this browser`;
  await listCached();
  const name = baseName(url);
  await loadModel({ label: name, url, cached, demo: false, model: new File([model.blob], name),
    data: data ? new File([data.blob], `${name}.data`) : null, fetchMs: performance.now() - started });
}

/** The kept models, each with an Open and a Remove button. */
async function listCached() {
  if (!globalThis.caches) return;
  const cache = await caches.open(MODEL_CACHE);
  const urls = (await cache.keys()).map((r) => r.url);
  const items = [];
  for (const url of urls.filter((u) => !u.endsWith(".data"))) {
    const size = (await Promise.all([url, `${url}.data`].map((u) => cache.match(u))))
      .reduce((sum, r) => sum + Number(r?.headers.get("Content-Length") ?? 0), 0);
    const item = document.createElement("li");
    const open = Object.assign(document.createElement("button"), { textContent: "open", className: "open" });
    const remove = Object.assign(document.createElement("button"), { textContent: "remove", className: "remove" });
    open.addEventListener("click", () => openUrl(url));
    remove.addEventListener("click", async () => {
      await cache.delete(url);
      await cache.delete(`${url}.data`);
      await listCached();
    });
    item.append(`${url} (${mb(size)}) `, open, " ", remove);
    items.push(item);
  }
  $("cached-list").replaceChildren(...items);
  $("cached").hidden = items.length === 0;
}

$("url-form").addEventListener("submit", (event) => {
  event.preventDefault();
  openUrl($("model-url").value.trim());
});

// ---------------------------------------------------------------------------------- the audio

async function openAudio(file) {
  clearError();
  state.audio = null;
  updateRunButton();
  $("audio-status").textContent = `decoding ${file.name} ...`;
  try {
    // The browser decodes at its context's rate (audio.mjs: SAMPLE_RATE); the model takes that rate.
    const decoded = await new OfflineAudioContext(1, 1, SAMPLE_RATE).decodeAudioData(await file.arrayBuffer());
    const channels = Array.from({ length: decoded.numberOfChannels }, (_, c) => decoded.getChannelData(c));
    state.audio = { samples: prepareAudio(channels), rate: decoded.sampleRate, name: file.name,
                    frames: decoded.length, channels: channels.length };
  } catch (e) {
    $("audio-status").textContent = "no audio";
    const why = e?.name === "EncodingError" ? "not an audio file this browser can decode" : firstLine(e);
    return showError(`cannot use ${file.name} as audio: ${why}`);
  }
  const a = state.audio;
  $("audio-status").textContent = `${file.name}: ${(a.frames / a.rate).toFixed(2)} s, ${a.channels} channel(s)`;
  $("input-audio").src = URL.createObjectURL(file);
  $("input-audio").hidden = false;
  updateRunButton();
  schedulePreview();
}

$("audio-file").addEventListener("change", (event) => event.target.files[0] && openAudio(event.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const file = event.dataTransfer.files[0];
  if (file) openAudio(file);
});

// ---------------------------------------------------------------------------------- running

function updateRunButton() {
  $("run").disabled = !(state.model && state.audio) || document.body.dataset.state === "running";
}

function setBusy(busy) {
  clearInterval(state.timer);
  $("cancel").disabled = !busy;
  setState(busy ? "running" : state.result ? "done" : "ready");
  updateRunButton();
}

function readValues() {
  const values = { ...state.model.defaults };
  for (const input of document.querySelectorAll("#controls input, #more-controls input")) {
    const name = input.id.slice("input-".length);
    const text = input.value.trim();
    const meta = state.model.inputs.find((i) => i.name === name);
    const isInt = name === "variations" || meta?.type === "int64";
    if (isInt ? !/^-?\d+$/.test(text) : !Number.isFinite(Number(text)) || text === "") {
      throw new Error(`${name}: "${input.value}" is not ${isInt ? "an integer" : "a number"}`);
    }
    values[name] = isInt ? text : Number(text); // integers as text: int64 seeds exceed 2^53
  }
  if (!$("adapter-choice").hidden) values.adapter = $("adapter").value;
  const rows = Number(values.variations);
  if (rows < 1 || rows > MAX_VARIATIONS) throw new Error(`variations: from 1 to ${MAX_VARIATIONS}`);
  delete values.variations;
  return { values, rows };
}

async function vamp() {
  clearError();
  let request;
  try {
    request = readValues();
  } catch (e) {
    return showError(firstLine(e));
  }
  state.result = null;
  setBusy(true);
  const started = performance.now();
  const work = workOf(request.values, request.rows, state.audio.samples.length / state.audio.rate);
  const eta = estimate(work);
  state.eta = eta;
  state.timer = setInterval(() => {
    const elapsed = (performance.now() - started) / 1000, total = eta.ms / 1000;
    $("run-status").textContent = `running ... ${elapsed.toFixed(1)} s, ` + (elapsed < total
      ? `about ${(total - elapsed).toFixed(1)} s left (${eta.source})`
      : `longer than the ${total.toFixed(1)} s expected (${eta.source})`);
  }, 100);
  try {
    request.values.sample_rate = String(state.audio.rate); // int64 inputs travel as text
    const { outputs, ms } = await ask({ type: "run", audio: state.audio.samples, ...request });
    state.result = { outputs, values: request.values, rows: request.rows, ms };
    remember(work, ms);
    $("run-status").textContent = `done in ${(ms / 1000).toFixed(1)} s (expected ${(eta.ms / 1000).toFixed(1)} s)` +
      (state.model.backend === "webgpu" && Number(request.values.pitch_shift ?? 0) !== 0 ? PITCH_ON_WEBGPU : "");
    showResult();
    setBusy(false);
  } catch (e) {
    setBusy(false);
    $("run-status").textContent = "";
    if (e.stage === undefined) return showError(`cannot show the result: ${firstLine(e)}`);
    showError(e.memory
      ? `the run ran out of the browser's memory (try a shorter clip or fewer variations): ${e.message}`
      : `the model failed: ${e.message}`);
  }
}

$("run").addEventListener("click", vamp);
$("cancel").addEventListener("click", async () => {
  // onnxruntime-web cannot stop a run: the worker goes, and the model is loaded again.
  state.result = null;
  setBusy(false);
  $("run-status").textContent = "cancelled";
  await loadModel(state.source);
});

// ---------------------------------------------------------------------------------- how long a run takes

// A run's work, in units its time is about proportional to: each coarse step (times the feedback
// passes) and each coarse-to-fine step runs a transformer over the clip's frames, and the codec's
// encode and decode are about one step more; all of it for each variation.
function workOf(values, rows, seconds) {
  const number = (name, fallback) => Number(values[name] ?? fallback);
  const steps = number("sampling_steps", 12) * number("feedback_steps", 1) + number("c2f_sampling_steps", 2) + 1;
  return rows * seconds * number("time_stretch_factor", 1) * steps;
}

// This device's speed for this model (ms per unit of work), kept in localStorage from the last run.
const speedKey = () => `vampnet-onnx speed: ${state.source.label}, ${state.model.backend}, ${state.model.threads} threads`;

/** {ms, source}: from the last run's speed here, or a first-run guess from the model's size (a
 * 13 MB model takes about 0.1 s, a 2.6 GB one about 3 s per unit, on one thread of a laptop). */
function estimate(work) {
  const measured = Number(localStorage.getItem(speedKey()));
  if (measured > 0) return { ms: work * measured, source: "measured on this device" };
  return { ms: work * (100 + state.model.size / 1e6), source: "a first guess: no run here yet" };
}

function remember(work, ms) {
  try {
    localStorage.setItem(speedKey(), String(ms / work));
  } catch {} // storage may be off or full: the next estimate is a guess again
}

function showResult() {
  const { outputs, rows } = state.result;
  const audioOut = outputs.audio_out;
  const length = audioOut.dims[1];
  state.outputUrls.forEach((url) => URL.revokeObjectURL(url));
  state.outputUrls = [];
  const box = $("outputs");
  box.replaceChildren();
  const base = state.audio.name.replace(/\.[^.]*$/, "");
  for (let r = 0; r < rows; r++) {
    const mono = audioOut.data.subarray(r * length, (r + 1) * length);
    const channels = restoreAudio(mono, length, state.audio.channels);
    const url = URL.createObjectURL(new Blob([encodeWav(channels, state.audio.rate)], { type: "audio/wav" }));
    state.outputUrls.push(url);
    const row = document.createElement("div");
    row.className = "output";
    const player = document.createElement("audio");
    player.controls = true;
    player.src = url;
    const link = document.createElement("a");
    link.href = url;
    link.download = `${base}-vamped${rows > 1 ? `-${r + 1}` : ""}.wav`;
    link.textContent = `download ${link.download}`;
    row.append(player, link);
    box.append(row);
  }
  const note = rows > 1 ? " (variation 1)" : "";
  $("waveforms").hidden = false;
  drawWaveforms($("waveforms"), state.audio.samples, audioOut.data.subarray(0, length), state.audio.rate,
                outputs.mask_out, note);
  drawCodes($("codes"), outputs.codes, outputs.mask_out, outputs.codes_out, note);
}

// ---------------------------------------------------------------------------------- the waveforms

const WAVE = "#333333", KEPT_SHADE = "#cfe0f5";

/** Input and output over time in seconds, the frames the mask keeps (codebook 0) shaded. */
function drawWaveforms(canvas, input, output, rate, mask, note) {
  const left = 60, plotW = 730, laneH = 80, top = 4, gap = 10, axisH = 32;
  canvas.width = left + plotW + 10;
  canvas.height = top + 2 * laneH + gap + axisH;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const seconds = Math.max(input.length, output.length) / rate;
  const x = (s) => left + (s / seconds) * plotW;
  const T = mask.dims[2], maskSeconds = output.length / rate; // the mask's frames span the output
  const lanes = [["input", input, top], ["output" + note, output, top + laneH + gap]];
  for (const [label, samples, y0] of lanes) {
    ctx.fillStyle = KEPT_SHADE;
    for (const [a, b] of keptRuns(mask)) {
      ctx.fillRect(x((a / T) * maskSeconds), y0, x(((b + 1) / T) * maskSeconds) - x((a / T) * maskSeconds), laneH);
    }
    let peak = 1e-9;
    for (const v of samples) peak = Math.max(peak, Math.abs(v));
    ctx.fillStyle = WAVE;
    const width = x(samples.length / rate) - left;
    for (let px = 0; px < width; px++) { // each column: the min and max of its samples
      const i0 = Math.floor((px / width) * samples.length), i1 = Math.max(i0 + 1, Math.floor(((px + 1) / width) * samples.length));
      let lo = Infinity, hi = -Infinity;
      for (let i = i0; i < i1 && i < samples.length; i++) { lo = Math.min(lo, samples[i]); hi = Math.max(hi, samples[i]); }
      const mid = y0 + laneH / 2, scale = laneH / 2 / peak;
      ctx.fillRect(left + px, mid - hi * scale, 1, Math.max(1, (hi - lo) * scale));
    }
    ctx.fillStyle = "#222";
    ctx.font = "11px sans-serif";
    ctx.textAlign = "right";
    ctx.fillText(label.split(" ")[0], left - 6, y0 + laneH / 2 + 4);
  }
  const bottom = top + 2 * laneH + gap;
  ctx.textAlign = "center";
  const step = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120].find((s) => seconds / s <= 12) ?? 300;
  for (let s = 0; s <= seconds + 1e-9; s += step) {
    ctx.fillRect(x(s), bottom, 1, 4);
    ctx.fillText(`${Number(s.toFixed(1))}`, x(s), bottom + 14);
  }
  ctx.fillText(`time (s); shaded: kept from the input${note}`, left + plotW / 2, bottom + 28);
}

// ---------------------------------------------------------------------------------- the mask preview

// The mask Vamp would use, from the model's run with generate 0 (no codec, no generation: milliseconds),
// with the onsets and beats read back from mask-only runs that isolate one prompt each, as
// vampnet_onnx/preview.py does (docs/mask-preview.md says why that is exact).
const KEPT = "#1f5fa8", GENERATED = "#f2b25c", ONSET = "#111111", BEAT = "#c0231b";
const hasInput = (name) => state.model.inputs.some((i) => i.name === name);

function schedulePreview() {
  clearTimeout(state.previewTimer);
  state.previewTimer = setTimeout(() => preview().catch(() => {}), PREVIEW_DELAY_MS);
}

/** Runs [a, b] (b inclusive) of kept frames (0) in codebook 0 of a (1, K, T) mask. */
function keptRuns(mask) {
  const row = mask.data.subarray(0, mask.dims[2]);
  const runs = [];
  for (let t = 0; t < row.length; t++) {
    if (row[t] !== 0n) continue;
    const a = t;
    while (t + 1 < row.length && row[t + 1] === 0n) t++;
    runs.push([a, t]);
  }
  return runs;
}

async function preview() {
  const box = $("preview-box");
  box.hidden = !(state.model && state.audio && hasInput("generate"));
  if (box.hidden) return;
  let values;
  try {
    ({ values } = readValues());
  } catch (e) {
    $("preview-status").textContent = `no preview: ${firstLine(e)}`;
    return;
  }
  const serial = ++state.previews;
  document.body.dataset.preview = "running";
  let ms = 0; // the worker's time for the preview's runs (not the wait behind a vamp)
  const maskOf = async (extra) => {
    const reply = await ask({ type: "run", audio: state.audio.samples, rows: 1, values: { ...values, ...extra, generate: 0 } });
    ms += reply.ms;
    return reply.outputs.mask_out;
  };
  const K = Number(state.model.metadata.n_codebooks), hop = Number(state.model.metadata.hop_length);
  const isolated = { rand_mask_intensity: 1, prefix_s: 0, suffix_s: 0, periodic_prompt: 0, dropout: 0, ncc: 0,
    upper_codebook_mask: K, onset_mask_width: 0, beat_mask_ms: 0, time_stretch_factor: 1 };
  try {
    const mask = await maskOf({});
    const stretch = Math.round(mask.dims[2] / Math.max(1, Math.ceil(state.audio.samples.length / hop)));
    let onsets = [], beats = [];
    if (Number(values.onset_mask_width) > 0) {
      const runs = keptRuns(await maskOf({ ...isolated, onset_mask_width: 1 }));
      onsets = runs.flatMap(([a, b]) => Array.from({ length: (b - a + 1) >> 1 }, (_, i) => (a + 1 + 2 * i) * stretch));
    }
    if (hasInput("beat_mask_ms") && Number(values.beat_mask_ms) > 0) {
      const runs = keptRuns(await maskOf({ ...isolated, beat_mask_ms: (500 * hop) / SAMPLE_RATE }));
      beats = runs.flatMap(([a, b]) => Array.from({ length: b - a + 1 }, (_, i) => (a + i) * stretch));
    }
    if (serial !== state.previews) return; // a newer preview is on its way
    state.preview = { mask, onsets, beats, values, ms, serial };
    const kept = drawPreview($("mask-preview"), mask, onsets, beats, SAMPLE_RATE / hop);
    $("preview-status").textContent = `${Math.round(100 * kept)} % of the tokens kept, ${onsets.length} onsets, ` +
      `${beats.length} beats (previewed in ${Math.round(ms)} ms)`;
    document.body.dataset.preview = "shown";
  } catch (e) {
    if (e.stage === "cancelled" || serial !== state.previews) return;
    $("preview-status").textContent = `no preview: ${e.message ?? firstLine(e)}`;
    document.body.dataset.preview = "error";
  }
}

/** Codebooks over time in seconds: kept and generated tokens, onsets (dashed) and beats; returns
 * the fraction kept. */
function drawPreview(canvas, mask, onsets, beats, frameRate) {
  const [, K, T] = mask.dims;
  const left = 28, rowH = 10, plotW = 760, top = 6, axisH = 30, legendH = 20;
  canvas.width = left + plotW + 12;
  canvas.height = top + K * rowH + axisH + legendH;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const x = (frame) => left + (frame / T) * plotW;
  let keptCount = 0;
  for (let k = 0; k < K; k++) {
    const y = top + (K - 1 - k) * rowH; // codebook 0 at the bottom
    for (let t = 0; t < T;) {
      const value = mask.data[k * T + t];
      let end = t + 1;
      while (end < T && mask.data[k * T + end] === value) end++;
      if (value === 0n) keptCount += end - t;
      ctx.fillStyle = value === 0n ? KEPT : GENERATED;
      ctx.fillRect(x(t), y, x(end) - x(t), rowH);
      t = end;
    }
  }
  const bottom = top + K * rowH;
  const lines = (frames, colour, dash) => {
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.5;
    ctx.setLineDash(dash);
    for (const f of frames) {
      ctx.beginPath();
      ctx.moveTo(Math.round(x(f)) + 0.5, top);
      ctx.lineTo(Math.round(x(f)) + 0.5, bottom);
      ctx.stroke();
    }
    ctx.setLineDash([]);
  };
  lines(onsets, ONSET, [4, 3]);
  lines(beats, BEAT, []);
  // axes: codebooks on the left, seconds below
  ctx.fillStyle = "#222";
  ctx.font = "10px sans-serif";
  ctx.textAlign = "right";
  for (let k = 0; k < K; k += K > 8 ? 2 : 1) ctx.fillText(String(k), left - 4, top + (K - k) * rowH - 1);
  ctx.textAlign = "center";
  const seconds = T / frameRate;
  const step = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120].find((s) => seconds / s <= 12) ?? 300;
  for (let s = 0; s <= seconds + 1e-9; s += step) {
    const px = x(s * frameRate);
    ctx.fillRect(px, bottom, 1, 4);
    ctx.fillText(`${Number(s.toFixed(1))}`, px, bottom + 14);
  }
  ctx.fillText("time (s)", left + plotW / 2, bottom + 26);
  // legend
  const kept = keptCount / (K * T);
  const items = [[KEPT, `kept from the input (${Math.round(100 * kept)} %)`], [GENERATED, "generated"],
    ...(onsets.length ? [[ONSET, "note onset (dashed)"]] : []), ...(beats.length ? [[BEAT, "beat"]] : [])];
  ctx.textAlign = "left";
  let lx = left;
  const ly = bottom + axisH + 4;
  for (const [colour, label] of items) {
    ctx.fillStyle = colour;
    ctx.fillRect(lx, ly, 12, 10);
    ctx.fillStyle = "#222";
    ctx.fillText(label, lx + 16, ly + 9);
    lx += 24 + ctx.measureText(label).width;
  }
  return kept;
}

// ---------------------------------------------------------------------------------- the picture

// A viridis-like ramp from dark blue through green to yellow.
function colour(t) {
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2), f = x - i;
  return stops[i].map((v, k) => Math.round(v + f * (stops[i + 1][k] - v)));
}

/** Input codes, mask (1 = generate) and output codes of the first row, codebooks x frames, as
 * `vampnet-onnx vamp --plot` draws them (codebook 0 at the bottom). */
function drawCodes(canvas, codes, mask, codesOut, note) {
  const [, K, T] = codes.dims;
  const cell = Math.max(1, Math.min(12, Math.floor(800 / T))); // about 800 px wide
  const rowH = 6, labelH = 18;
  canvas.width = T * cell;
  canvas.height = 3 * (labelH + K * rowH);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  let max = 1;
  for (let i = 0; i < K * T; i++) max = Math.max(max, Number(codes.data[i]), Number(codesOut.data[i]));
  const panels = [["input codes", codes, max], ["mask (dark = generate)", mask, -1], ["output codes", codesOut, max]];
  panels.forEach(([title, tensor, scale], p) => {
    const top = p * (labelH + K * rowH);
    ctx.fillStyle = "#222";
    ctx.font = "12px sans-serif";
    ctx.fillText(title + note, 2, top + 13);
    const image = ctx.createImageData(T * cell, K * rowH);
    for (let k = 0; k < K; k++) {
      for (let t = 0; t < T; t++) {
        const v = Number(tensor.data[k * T + t]);
        const rgb = scale < 0 ? (v ? [40, 40, 40] : [235, 235, 235]) : colour(v / scale);
        for (let y = 0; y < rowH; y++) {
          for (let x = 0; x < cell; x++) {
            const o = (((K - 1 - k) * rowH + y) * T * cell + t * cell + x) * 4;
            image.data.set([...rgb, 255], o);
          }
        }
      }
    }
    ctx.putImageData(image, 0, top + labelH);
  });
}

// ---------------------------------------------------------------------------------- start

// For tests and the curious: what the page fed the model and what it got back.
window.vampnet = {
  get prepared() { return state.audio?.samples ?? null; },
  get result() { return state.result; },
  get outputUrls() { return state.outputUrls; },
  get eta() { return state.eta; },
  get preview() { return state.preview; },
  get loadMs() { return state.loadMs; },
  get runtime() { return state.model && { backend: state.model.backend, threads: state.model.threads, isolated: state.model.isolated }; },
};

setState("starting");
listCached().catch(() => {}); // Cache Storage exists only in a secure context (https or localhost)
fetch(DEMO_MODEL, { method: "HEAD" }).then((response) => {
  const size = Number(response.headers.get("Content-Length") ?? 0);
  if (response.ok) loadModel({ label: "the demo model (artifacts/demo/vampnet-tiny.onnx)", demo: true, model: DEMO_MODEL, data: null, size });
  else {
    $("model-status").textContent = "no model loaded: open one (`vampnet-onnx demo` builds the demo model)";
    setState("ready");
  }
}).catch(() => setState("ready"));
