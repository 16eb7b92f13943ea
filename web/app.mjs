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
  ["prefix_s", "prefix (s)"], ["suffix_s", "suffix (s)"], ["sampling_steps", "sampling steps"],
  ["temperature", "temperature"], ["top_p", "top-p"],
];
const MAX_VARIATIONS = 16;

const $ = (id) => document.getElementById(id);
const state = { worker: null, source: null, model: null, audio: null, result: null, outputUrls: [] };

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
const firstLine = (e) => String(e?.message ?? e).split("\n").find((s) => s.trim()) ?? String(e);

// ---------------------------------------------------------------------------------- the model

function startWorker() {
  state.worker?.terminate();
  state.worker = new Worker(new URL("./worker.mjs", import.meta.url), { type: "module" });
  state.worker.onerror = (event) => {
    event.preventDefault();
    showError(`the model's worker failed: ${event.message || "it could not start"}`);
    setBusy(false);
  };
  return state.worker;
}

// One request to the worker; resolves with its reply, rejects with its error.
function ask(message, transfer = []) {
  return new Promise((resolve, reject) => {
    state.worker.onmessage = ({ data }) => (data.type === "error" ? reject(data) : resolve(data));
    state.worker.postMessage(message, transfer);
  });
}

function memoryText(size) {
  return `the model (${gb(size)}) does not fit in the browser's memory: WebAssembly memory holds at most ` +
    `4 GiB and the model's weights must all be in it (see the README on model sizes)`;
}

/** source: {label, demo, model: File | URL, data: File | null, size: bytes (for a URL)}. */
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
  const message = { type: "load" };
  const transfer = [];
  try {
    if (source.model instanceof File) {
      message.model = await source.model.arrayBuffer();
      transfer.push(message.model);
    } else {
      message.model = source.model;
    }
    // The weights go by URL: onnxruntime-web streams a large file into memory, where reading it
    // into one ArrayBuffer here would fail beyond 2 GiB (Chromium's limit for reading a file).
    if (source.data) message.data = { name: source.data.name, url: URL.createObjectURL(source.data) };
  } catch (e) {
    $("model-status").textContent = "no model loaded";
    return showError(e instanceof RangeError || /memory/i.test(firstLine(e))
      ? `cannot load ${source.label}: ${memoryText(size)} (${firstLine(e)})`
      : `cannot read ${source.label}: ${firstLine(e)}`);
  }
  startWorker();
  let loaded;
  try {
    loaded = await ask(message, transfer);
  } catch (e) {
    $("model-status").textContent = "no model loaded";
    return showError(e.memory
      ? `cannot load ${source.label}: ${memoryText(size)} (${e.message})`
      : `cannot load the model ${source.label}: ${e.message}`);
  } finally {
    if (message.data) URL.revokeObjectURL(message.data.url);
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
  $("model-status").textContent = `${source.label}: ${gb(size)}, ${loaded.inputs.length} inputs, ` +
    `${loaded.metadata.n_codebooks ?? "?"} codebooks, ${loaded.metadata.sample_rate ?? "?"} Hz`;
  $("notice").hidden = !source.demo;
  $("notice").textContent = source.demo
    ? "This is the demo model: VampNet's architecture with tiny shapes and RANDOM weights, so its output is " +
      "noise-like, not music. Open a real model (built with `vampnet-onnx build`) for music."
    : "";
  buildControls();
  setState("ready");
  updateRunButton();
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

$("model-file").addEventListener("change", (event) => {
  const files = [...event.target.files];
  const model = files.find((f) => !f.name.endsWith(".data"));
  const data = files.find((f) => f.name.endsWith(".data")) ?? null;
  if (!model) return showError("choose the .onnx file (and its .data file with it, when there is one)");
  loadModel({ label: model.name, demo: false, model, data });
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
  for (const input of $("controls").querySelectorAll("input")) {
    const name = input.id.slice("input-".length);
    const text = input.value.trim();
    const meta = state.model.inputs.find((i) => i.name === name);
    const isInt = name === "variations" || meta?.type === "int64";
    if (isInt ? !/^-?\d+$/.test(text) : !Number.isFinite(Number(text)) || text === "") {
      throw new Error(`${name}: "${input.value}" is not ${isInt ? "an integer" : "a number"}`);
    }
    values[name] = isInt ? text : Number(text); // integers as text: int64 seeds exceed 2^53
  }
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
  state.timer = setInterval(() => {
    $("run-status").textContent = `running ... ${((performance.now() - started) / 1000).toFixed(1)} s`;
  }, 100);
  try {
    request.values.sample_rate = String(state.audio.rate); // int64 inputs travel as text
    const { outputs, ms } = await ask({ type: "run", audio: state.audio.samples, ...request });
    state.result = { outputs, values: request.values, rows: request.rows, ms };
    $("run-status").textContent = `done in ${(ms / 1000).toFixed(1)} s`;
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
  drawCodes($("codes"), outputs.codes, outputs.mask_out, outputs.codes_out, rows > 1 ? " (variation 1)" : "");
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
};

setState("starting");
fetch(DEMO_MODEL, { method: "HEAD" }).then((response) => {
  const size = Number(response.headers.get("Content-Length") ?? 0);
  if (response.ok) loadModel({ label: "the demo model (artifacts/demo/vampnet-tiny.onnx)", demo: true, model: DEMO_MODEL, data: null, size });
  else {
    $("model-status").textContent = "no model loaded: open one (`vampnet-onnx demo` builds the demo model)";
    setState("ready");
  }
}).catch(() => setState("ready"));
