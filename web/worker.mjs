// The model runs here, off the page's thread: the page stays responsive, and cancelling a run is
// terminating this worker (onnxruntime-web has no way to stop a run half-way).
//
// Messages in:  {type: "load", model: ArrayBuffer | URL, data?: {name, blob: the .data file},
//                backend: "auto" (WebGPU when the browser has an adapter) | "wasm",
//                threads?: at most this many (default: every core)}
//               {type: "run", audio: Float32Array, rows, values: {input name: number}}
// Messages out: {type: "loaded", inputs, outputs, metadata, backend: "webgpu" | "wasm", threads, isolated,
//                ms: {runtime: importing onnxruntime-web and reading the model, data: reading the .data
//                file, session: creating the session}}
//               {type: "result", outputs, ms}
//               {type: "error", message, memory: true when the browser ran out of memory}
let ort = null; // onnxruntime-web, imported on the first load (which build depends on the backend)
let session = null;
let metadata = {};

// Threads need SharedArrayBuffer, which browsers give only to a cross-origin isolated page (served
// with COOP/COEP: docs/browser.md); elsewhere onnxruntime-web runs on one thread.
const isolated = self.crossOriginIsolated === true;
const cores = Math.max(1, navigator.hardwareConcurrency || 1);

/** "webgpu" when asked for and the browser gives an adapter, else "wasm". */
async function pickBackend(wanted) {
  if (wanted === "wasm" || !navigator.gpu) return "wasm";
  try {
    return (await navigator.gpu.requestAdapter()) ? "webgpu" : "wasm";
  } catch {
    return "wasm";
  }
}

// onnxruntime-web does not expose the model's metadata_props, so they are read from the
// protobuf: ModelProto field 14 (repeated StringStringEntryProto {key = 1, value = 2}).
export function readMetadata(bytes) {
  let pos = 0;
  const varint = (end) => {
    let value = 0, scale = 1;
    for (;;) {
      if (pos >= end) throw new Error("truncated protobuf");
      const b = bytes[pos++];
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
      scale *= 128;
    }
  };
  const skip = (wire, end) => {
    if (wire === 0) varint(end);
    else if (wire === 1) pos += 8;
    else if (wire === 2) { const length = varint(end); pos += length; }
    else if (wire === 5) pos += 4;
    else throw new Error(`not an ONNX model (protobuf wire type ${wire})`);
  };
  const text = (start, end) => new TextDecoder().decode(bytes.subarray(start, end));
  const props = {};
  while (pos < bytes.length) {
    const tag = varint(bytes.length);
    if (tag >>> 3 === 14 && (tag & 7) === 2) {
      const length = varint(bytes.length);
      const end = pos + length;
      let key = "", value = "";
      while (pos < end) {
        const t = varint(end);
        if ((t & 7) !== 2) { skip(t & 7, end); continue; }
        const len = varint(end);
        if (t >>> 3 === 1) key = text(pos, pos + len);
        else if (t >>> 3 === 2) value = text(pos, pos + len);
        pos += len;
      }
      props[key] = value;
    } else {
      skip(tag & 7, bytes.length);
    }
  }
  return props;
}

// Allocation failures show up as RangeErrors (an ArrayBuffer or the wasm memory could not grow),
// as onnxruntime's "Failed to allocate"/bad_alloc, as an Emscripten abort saying OOM, or, for
// sizes beyond wasm32's 32-bit ones (a weight file over 2 GiB), as onnxruntime's integer overflow.
const isMemoryError = (e) =>
  e instanceof RangeError ||
  /alloc|out of memory|\bOOM\b|memory access out of bounds|Aborted\(\)|Integer overflow/i.test(String(e?.message ?? e));

function fail(stage, e) {
  const message = String(e?.message ?? e).split("\n").find((s) => s.trim()) ?? String(e);
  postMessage({ type: "error", stage, message, memory: isMemoryError(e) });
}

async function bytesOf(source) {
  if (source instanceof ArrayBuffer) return new Uint8Array(source);
  const response = await fetch(source);
  if (!response.ok) throw new Error(`cannot fetch ${source}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

/** A Blob's bytes in one buffer, streamed: Chromium refuses a Blob's arrayBuffer() beyond 2 GiB
 * (NotReadableError). Where an ArrayBuffer that large cannot be had, a WebAssembly.Memory's buffer
 * holds them (as onnxruntime-web does for a file it fetches). Reading the Blob here takes half the
 * time onnxruntime-web takes to fetch it from an object URL (docs/browser.md, "Loading faster"). */
async function readBlob(blob) {
  let buffer;
  try {
    buffer = new ArrayBuffer(blob.size);
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    const pages = Math.ceil(blob.size / 65536);
    buffer = new WebAssembly.Memory({ initial: pages, maximum: pages }).buffer;
  }
  const bytes = new Uint8Array(buffer, 0, blob.size);
  const reader = blob.stream().getReader();
  for (let offset = 0; ;) {
    const { done, value } = await reader.read();
    if (done) break;
    bytes.set(value, offset);
    offset += value.length;
  }
  return bytes;
}

async function load({ model, data, backend: wanted = "auto", threads: most = null }) {
  const threads = isolated ? Math.min(cores, Math.max(1, most ?? cores)) : 1;
  const backend = await pickBackend(wanted);
  // the WebGPU build holds the wasm backend too (the fallback for the ops WebGPU lacks), but its
  // larger asyncify wasm is fetched only when there is a GPU to use
  const started = performance.now();
  ort = await import(backend === "webgpu" ? "./vendor/ort.webgpu.bundle.min.mjs" : "./vendor/ort.wasm.bundle.min.mjs");
  ort.env.wasm.numThreads = threads;
  const bytes = await bytesOf(model);
  metadata = readMetadata(bytes);
  const options = { executionProviders: backend === "webgpu" ? ["webgpu", "wasm"] : ["wasm"] };
  const reading = performance.now();
  if (data) options.externalData = [{ path: data.name, data: await readBlob(data.blob) }];
  const creating = performance.now();
  session = await ort.InferenceSession.create(bytes, options);
  // where a load's time goes (benchmarks/browser.py)
  const ms = { runtime: reading - started, data: creating - reading, session: performance.now() - creating };
  postMessage({ type: "loaded", inputs: session.inputMetadata, outputs: session.outputNames, metadata,
    backend, threads, isolated, ms });
}

// Every input is fed (the model stores no defaults): the values given, the mask empty.
function feeds(audio, rows, values) {
  const nCodebooks = Number(metadata.n_codebooks ?? 14);
  const batch = new Float32Array(rows * audio.length);
  for (let r = 0; r < rows; r++) batch.set(audio, r * audio.length);
  const out = {};
  for (const input of session.inputMetadata) {
    if (input.name === "audio") out.audio = new ort.Tensor("float32", batch, [rows, audio.length]);
    else if (input.name === "mask") out.mask = new ort.Tensor("int64", new BigInt64Array(0), [1, nCodebooks, 0]);
    else if (!(input.name in values)) throw new Error(`no value for the model's input "${input.name}"`);
    else if (input.type === "int64") out[input.name] = new ort.Tensor("int64", BigInt64Array.of(BigInt(values[input.name])), [1]);
    else out[input.name] = new ort.Tensor("float32", Float32Array.of(values[input.name]), [1]);
  }
  return out;
}

async function run({ audio, rows, values }) {
  const started = performance.now();
  const results = await session.run(feeds(audio, rows, values));
  const outputs = {};
  for (const [name, tensor] of Object.entries(results)) outputs[name] = { type: tensor.type, dims: tensor.dims, data: tensor.data };
  postMessage({ type: "result", outputs, ms: performance.now() - started });
}

onmessage = ({ data: message }) => {
  const job = message.type === "load" ? load(message) : run(message);
  job.catch((e) => fail(message.type, e));
};
